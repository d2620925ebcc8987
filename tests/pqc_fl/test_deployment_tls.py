"""Flower's deployment engine over TLS on 127.0.0.1: SuperLink, two SuperNodes, `flwr run`.

Slow (about a minute): run with --runslow. Certificates come from pqc_fl.tls; the ServerApp wraps
FedMedian in the verifier and loads the server-signed registry.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pqc_fl.flower_app import flower_project_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=log.parent,
        start_new_session=True,  # its own process group: stopped with everything it started
    )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _wait_for(path: Path, text: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def tls_superlink(tmp_path: Path) -> Iterator[tuple[Path, int, dict[str, str]]]:
    from pqc_fl.keys import provision_keys
    from pqc_fl.task import digits, partition
    from pqc_fl.tls import make_local_certificates

    make_local_certificates(tmp_path / "certs")
    sizes = [len(p) for p in partition(digits(0)[1], 2, seed=0)]
    provision_keys(tmp_path / "keys", 2, max_examples=sizes)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(tmp_path / "flwr"),
    }
    port = _free_port()
    c = tmp_path / "certs"
    procs = [
        _start(
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile",
                str(c / "ca.pem"),
                "--ssl-certfile",
                str(c / "server.pem"),
                "--ssl-keyfile",
                str(c / "server.key"),
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            tmp_path / "superlink.log",
            env,
        )
    ]
    try:
        assert _wait_for(tmp_path / "superlink.log", "Uvicorn running on https://", 60)
        for i in range(2):
            procs.append(
                _start(
                    [
                        str(BIN / "flower-supernode"),
                        "--root-certificates",
                        str(c / "ca.pem"),
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--node-config",
                        f"partition-id={i} num-partitions=2",
                        "--port",
                        str(_free_port()),
                    ],
                    tmp_path / f"supernode{i}.log",
                    env,
                )
            )
        for i in range(2):
            assert _wait_for(tmp_path / f"supernode{i}.log", "SuperNode ID", 60)
        yield tmp_path, port, env
    finally:
        _stop(procs)


def test_signed_federation_over_tls_on_localhost(
    tls_superlink: tuple[Path, int, dict[str, str]],
) -> None:
    tmp, port, env = tls_superlink
    (tmp / "flwr").mkdir(exist_ok=True)
    (tmp / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "local-tls"\n\n[superlink.local-tls]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{tmp / "certs" / "ca.pem"}"\n'
    )
    app = tmp / "app"
    app.mkdir()
    shutil.copy(flower_project_file(), app / "pyproject.toml")
    overrides = (
        f'num-clients=2 rounds=2 local-steps=5 strategy="fedmedian" '
        f'key-dir="{tmp / "keys"}" out="{tmp / "summary.json"}"'
    )
    proc = subprocess.run(
        [str(BIN / "flwr"), "run", str(app), "local-tls", "--stream", "--run-config", overrides],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _wait_for(tmp / "summary.json", "rounds", 30)
    summary = json.loads((tmp / "summary.json").read_text())
    assert summary["config"]["strategy"] == "fedmedian" and summary["rejections"] == []
    assert [(r["accepted"], r["rejected"]) for r in summary["rounds"]] == [(2, 0), (2, 0)]
    # a SuperNode that trusts another CA cannot even connect
    from pqc_fl.tls import make_local_certificates

    other = make_local_certificates(tmp / "other")
    bad = _start(
        [
            str(BIN / "flower-supernode"),
            "--root-certificates",
            str(other["ca"]),
            "--superlink",
            f"127.0.0.1:{port}",
            "--node-config",
            "partition-id=0 num-partitions=2",
            "--port",
            str(_free_port()),
        ],
        tmp / "bad-supernode.log",
        env,
    )
    try:
        assert _wait_for(tmp / "bad-supernode.log", "CERTIFICATE_VERIFY_FAILED", 90)
        assert "SuperNode ID" not in (tmp / "bad-supernode.log").read_text(errors="replace")
    finally:
        _stop([bad])
