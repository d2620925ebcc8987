"""Hostile configs: every pqc_fl command's and stage's values are refused from their declarations,
before anything is written, with one error line that names the key (issue 21)."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import pytest

from pqc_fl.commands import BenchConfig, FLRunConfig, KeysConfig
from pqc_fl.config import DIGITS_TRAIN, MODEL_PARAMS, FLConfig, LocalTrainConfig
from pqc_fl.schemes import SchemeError, get_scheme
from pqc_fl.stage import StageConfig
from qhybrid.cli import main
from qhybrid.config import resolve_config
from qhybrid.errors import ConfigError, QHybridError

CONFIGS = (FLRunConfig, BenchConfig, StageConfig)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


# the issue's own examples, through the command line: exit 2, one error line, no run folder
@pytest.mark.parametrize(
    ("command", "override", "match"),
    [
        ("run", "num_clients=10000", "'num_clients' = 10000 must be <= 1437"),
        ("run", "local.batch_size=0", "'local.batch_size' = 0 must be >= 1"),
        ("run", "attacker=-1", "'attacker' = -1 must be >= 0"),
        ("run", "local.lr=inf", "'local.lr' = inf is not a finite float"),
        ("run", "local.lr=nan", "'local.lr' is NaN"),
        ("run", "rounds=1180591620717411303424", "'rounds' = 1180591620717411303424 must be <="),
        ("run", 'scheme="dilithium9"', "unknown signature scheme 'dilithium9'"),
        (
            "run",
            "rounds=100000",
            "this run is estimated at .* above max_cpu_s=3600; .* --set max_cpu_s=",
        ),
        ("run", 'model="mlp-10m"', "estimated to hold .* GB|estimated at"),
        ("bench", "clients=[0]", r"'clients\[0\]' = 0 must be >= 1"),
        ("bench", "workers=[0]", r"'workers\[0\]' = 0 must be >= 1"),
        ("bench", "budget_s=0.0", "'budget_s' = 0.0 must be > 0"),
        ("bench", 'parts=["nope"]', r"'parts\[0\]' = 'nope' is not one of"),
        ("bench", "parts=[]", "'parts' = .* must be at least 1 items"),
        ("bench", 'parts=["rounds", "rounds"]', "must be all different"),
        ("bench", "budget_s=60.0", "this benchmark is estimated at .* --set max_cpu_s="),
    ],
)
def test_issue_examples_exit_2_with_one_line_and_no_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, override: str, match: str
) -> None:
    extra = ["--set", "num_clients=500"] if "mlp-10m" in override else []
    rc, err = _cli(
        capsys, "fl", command, "--out", str(tmp_path / "runs"), "--set", override, *extra
    )
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert pytest.importorskip("re").search(match, lines[0]), lines[0]
    assert not (tmp_path / "runs").exists()


def test_get_scheme_refuses_what_is_not_a_name() -> None:
    for bad in (None, 5, b"ml-dsa-44", ["ml-dsa-44"]):
        with pytest.raises(SchemeError, match="must be a string"):
            get_scheme(bad)  # type: ignore[arg-type]
    with pytest.raises(SchemeError, match="backend=5 must be a string"):
        get_scheme("ml-dsa-44", 5)  # type: ignore[arg-type]
    assert get_scheme("MLDSA44").name == "ml-dsa-44"


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """Every config key of ``cls`` (dotted for nested configs) with its annotation."""
    out = []
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append((prefix + f.name, tp))
    return out


def _base(tp: Any) -> Any:
    while get_origin(tp) is Annotated or get_origin(tp) in (typing.Union, type(int | None)):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def _hostile(tp: Any) -> list[str]:
    """TOML spellings of values an attacker would try for a field of type ``tp``."""
    base = _base(tp)
    common = ['"x" ', "{a = 1}", "true"]
    if base is int:
        return [*common, "-1", "1180591620717411303424", "1.5", '"3"', "nan"]
    if base is float:
        return [*common, "nan", "inf", "-inf", "-1.0", "0.0"]
    if base is bool:
        return ['"yes"', "1", "[]"]
    if get_origin(base) is Literal:
        return ['"nope"', '""', "5", "[]"]
    if get_origin(base) is tuple:
        item = _base(get_args(base)[0])
        bad = '"nope"' if item is str or get_origin(item) is Literal else "0"
        return ["[" + bad + "]", '"x"', "5", "[[1]]"]
    return ['""', "5", "[]", '"' + "x" * 10_000 + '"']


# values a field may legitimately take although they look hostile
ALLOWED = {
    ("max_cpu_s", "true"),
    ("compare_unsigned", "1"),
}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_refuses_hostile_values(cls: type) -> None:
    """A fuzzer over the declarations: each key of each config gets wrong types, 0, -1, 2^70,
    NaN, +-inf, empty and huge strings, unknown names and bad lists; new keys are covered too."""
    tried = 0
    for key, tp in _leaves(cls):
        for raw in _hostile(tp):
            if (key.rsplit(".", 1)[-1], raw) in ALLOWED:
                continue
            tried += 1
            try:
                resolve_config(cls, overrides=[f"{key}={raw}"])
            except ConfigError as err:
                assert "\n" not in str(err) and len(str(err)) < 1000
            else:
                # accepted: it must be a value the field really allows
                value = resolve_config(cls, overrides=[f"{key}={raw}"])
                pytest.fail(f"{cls.__name__}: {key}={raw[:40]} accepted ({value!r:.200})")
    assert tried >= 4 * len(_leaves(cls))


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_the_defaults_pass_and_the_python_api_checks_as_toml_does(cls: type) -> None:
    cfg = cls()
    assert resolve_config(cls) == cfg
    numeric = [(k, tp) for k, tp in _leaves(cls) if "." not in k and _base(tp) in (int, float)]
    for key, _ in numeric:
        with pytest.raises(ConfigError):
            cls(**{key: -1})
        with pytest.raises(ConfigError):
            cls(**{key: math.nan})


def test_lists_are_normalised_and_scheme_aliases_canonical() -> None:
    lists: dict[str, Any] = {"parts": ["bandwidth"], "schemes": ["MLDSA44"], "clients": [3]}
    cfg = BenchConfig(**lists)  # lists from a JSON or TOML source become tuples
    assert cfg.parts == ("bandwidth",) and cfg.schemes == ("ml-dsa-44",) and cfg.clients == (3,)
    with pytest.raises(ConfigError, match="names one scheme twice"):
        BenchConfig(schemes=("ml-dsa-44", "mldsa44"))
    assert FLConfig(scheme="FN-DSA-512").scheme == "falcon-512"


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="'attacker' = 3 is not a client index < num_clients=3"):
        FLConfig(attack="relabel", attacker=3)
    assert FLConfig(attacker=3).attacker == 3  # no attack: the index is unused
    with pytest.raises(ConfigError, match="num_byzantine"):
        FLConfig(num_clients=2, num_byzantine=2)
    with pytest.raises(ConfigError, match="needs sign=true"):
        FLConfig(attack="relabel", sign=False)
    with pytest.raises(ConfigError, match="needs engine='inprocess'"):
        FLConfig(byzantine="double_submission", num_byzantine=1, engine="flower")
    with pytest.raises(ConfigError, match="give the key folder"):
        KeysConfig(max_examples=5)
    with pytest.raises(ConfigError, match="--max-examples N"):
        KeysConfig(dir="k")


def test_work_caps_count_the_unsigned_baseline_and_can_be_raised() -> None:
    steps10 = LocalTrainConfig(steps=10)
    with pytest.raises(ConfigError, match="this run is estimated at"):
        FLConfig(num_clients=1000, rounds=300, local=steps10)
    assert FLConfig(num_clients=1000, rounds=300, local=steps10, max_cpu_s=1e5).rounds == 300
    assert FLConfig(num_clients=100, rounds=100, max_cpu_s=400.0).runs == 1
    with pytest.raises(ConfigError, match="2 run"):
        FLRunConfig(num_clients=100, rounds=100, max_cpu_s=400.0)
    plain = FLRunConfig(num_clients=100, rounds=100, max_cpu_s=400.0, compare_unsigned=False)
    assert plain.runs == 1
    with pytest.raises(ConfigError, match="GB at once .* --set max_memory_gb="):
        FLConfig(model="mlp-10m", num_clients=100, rounds=1, local=steps10)


def test_declared_sizes_match_the_task() -> None:
    from pqc_fl.task import build_model, digits, num_parameters

    assert len(digits(0)[1]) == DIGITS_TRAIN
    for name, params in MODEL_PARAMS.items():
        assert num_parameters(build_model(name)) == params


def test_reproduce_refuses_a_bad_fl_value_before_any_stage_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for override in ("fl.budget_s=0.0", 'fl.cost_models=["mlp","mlp"]', 'fl.byz_attack="none"'):
        rc, err = _cli(capsys, "reproduce", "--out", str(tmp_path), "--set", override)
        assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert not list(tmp_path.iterdir())


def test_keys_command_takes_flags_or_set_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "k"
    assert main(["fl", "keys", "--dir", str(d), "--clients", "2", "--max-examples", "50"]) == 0
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    rc, err = _cli(capsys, "fl", "keys", "--set", f'dir="{d}"', "--set", "max_examples=9")
    assert rc == 2 and "already exists" in err and "never overwritten" in err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    for argv in (
        ["--dir", str(tmp_path / "a"), "--clients", "0", "--max-examples", "5"],
        ["--dir", str(tmp_path / "a"), "--max-examples", "0"],
        ["--dir", str(tmp_path / "a"), "--max-examples", "5", "--scheme", "nope"],
        ["--dir", str(tmp_path / "a")],
        ["--max-examples", "5"],
    ):
        rc, err = _cli(capsys, "fl", "keys", *argv)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    rc, err = _cli(capsys, "fl", "keys", "--dir", str(tmp_path / "file"), "--max-examples", "5")
    assert rc == 2 and "is a file" in err


@pytest.mark.parametrize(
    "failure", [QHybridError("the Flower simulation failed"), KeyboardInterrupt()]
)
def test_a_run_that_fails_before_its_results_leaves_no_run_folder(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
) -> None:
    import pqc_fl.commands as commands

    made: list[Path] = []

    def fail(cfg: FLConfig, key_dir: Path, out: Path) -> dict[str, Any]:
        made.append(key_dir.parent)
        (key_dir.parent / "partial.json").write_text("{}")  # something the run had written
        raise failure

    monkeypatch.setattr(commands, "run_experiment", fail)
    rc, err = _cli(capsys, "fl", "run", "--out", str(tmp_path / "runs"), "--set", "rounds=1")
    assert rc == (2 if isinstance(failure, QHybridError) else 130) and err.startswith("error: ")
    assert made and not made[0].exists() and list((tmp_path / "runs").iterdir()) == []


def test_flower_and_ray_errors_become_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pqc_fl.flower_app as flower_app

    def crash(*_: object, **__: object) -> dict[str, Any]:
        raise RuntimeError("Ray worker died")

    monkeypatch.setattr(flower_app, "run_flower_simulation", crash)
    argv = ["fl", "run", "--out", str(tmp_path), "--set", 'engine="flower"', "--set", "rounds=1"]
    rc, err = _cli(capsys, *argv)
    assert rc == 2 and err.strip().splitlines() == [
        "error: the Flower simulation failed (RuntimeError: Ray worker died); rerun with -v for "
        'Flower\'s log, or use --set engine="inprocess"'
    ]
    assert list(tmp_path.iterdir()) == []
