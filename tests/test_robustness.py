"""Every subcommand against bad input: exit 2, one ``error:`` line, no traceback, nothing written.

A table of (command line, part of the expected message). Each row runs ``qhybrid`` in-process in
an empty folder holding a few hostile files; afterwards the folder holds exactly those files (no run
folder, no half-written dataset), so the corrected command is never refused. A row that hangs fails
after 60 s. Add a row with every new option.
"""

from __future__ import annotations

import signal

import pytest

from qhybrid import cli

N30 = "0" * 29 + "1"

ROWS: list[tuple[str, str]] = [
    # reproduce and the core
    ("reproduce --preset nope", "unknown preset 'nope'"),
    ("reproduce --set stages=['nope']", "unknown stage(s) ['nope']"),
    ("reproduce --set core.steps=0", "'core.steps' = 0 must be >= 1"),
    ("reproduce --set core.lr=-1e-3", "'core.lr' = -0.001 must be > 0"),
    ("reproduce --set core.test_fraction=1.5", "'core.test_fraction' = 1.5 must be < 1"),
    ("reproduce --set core.lr=nan", "'core.lr' is NaN"),
    ("reproduce --set core.steps=[1,", "is not a TOML value"),
    ("reproduce --set core.steps='many'", "'core.steps' must be an int"),
    ("reproduce --set nosuchkey=1", "unknown reproduce key(s) ['nosuchkey']"),
    ("reproduce --set quantum.ood_n_max=99", "'quantum.ood_n_max' = 99 must be <= 60"),
    ("reproduce --set llm.steps=-3", "'llm.steps' = -3 must be >= 1"),
    ("reproduce --set llm.num_experts=1", "'llm.num_experts' = 1 must be >= 2"),
    ("reproduce --config latin.toml", "is not UTF-8 text"),
    ("reproduce --config binary.toml", "is not UTF-8 text"),
    ("reproduce --config broken.toml", "is not valid TOML"),
    ("reproduce --config missing.toml", "does not exist (nor is it a preset)"),
    ("reproduce --config adir", "is a folder or device"),
    ("reproduce --out afile", "is a file; pass a folder"),
    ("reproduce --set novalue", "is not of the form key=value"),
    # grover
    ("grover generate --set seed=-3", "seed=-3 must be an int >= 0"),
    ("grover generate --set train.count=0", "train does not cover the (n, t) pairs"),
    ("grover generate --set train.count=-1", "count=-1 must be >= 0"),
    ("grover generate --set renderings=['nope']", "unknown rendering 'nope'"),
    ("grover generate --set oracle_styles=[]", "unknown or none"),
    ("grover generate --set train.n_min=0", "1 <= n_min <= n_max <= 60"),
    ("grover generate --set train.n_max=100", "1 <= n_min <= n_max <= 60"),
    ("grover generate --set shard_size=0", "must be >= 1"),
    ("grover generate --set noise_depolarizing=2.0", "must be in [0, 0.1]"),
    ("grover generate --set train.off_optimal=1.5", "off_optimal=1.5 is a share"),
    ("grover generate --set unknown=1", "unknown config key 'unknown'"),
    ("grover generate --dataset-dir afile", "is a file; pass a new folder"),
    ("grover generate --out afile", "is a file; pass a folder"),
    ("grover simulate --n 0 --marked 0", "n_qubits=0 is outside 1..60"),
    ("grover simulate --n -1 --marked 1", "n_qubits=-1 is outside 1..60"),
    ("grover simulate --n 3 --marked 0101", "has 4 bits but n_qubits=3"),
    ("grover simulate --n 3 --marked 2x1", "is not binary"),
    ("grover simulate --n 3 --marked 011,011", "appear more than once"),
    ("grover simulate --n 3 --marked 011 --iterations -1", "iterations=-1 is negative"),
    (
        "grover simulate --n 3 --marked 011 --iterations 10000000000000 --backend statevector",
        "amplitude updates exceed",
    ),
    (f"grover simulate --n 30 --marked {N30} --backend statevector", "amplitude updates exceed"),
    (f"grover simulate --n 30 --marked {N30} --backend aer", "too large for the aer backend"),
    ("grover simulate --n 3 --marked 011 --backend nope", "unknown backend 'nope'"),
    ("grover simulate --n 3 --marked 011 --shots -5", "shots=-5 must be a positive int"),
    ("grover simulate --n 3 --marked 011 --shots 0", "shots=0 must be a positive int"),
    ("grover simulate --n 3 --marked 011 --noise 2.0", "p1=2.0 is not a probability"),
    ("grover simulate --n 3 --marked 011 --noise nan", "p1=nan is not a probability"),
    ("grover simulate --n 3 --marked 011 --top 0", "--top 0 must be >= 1"),
    ("grover simulate --n 3 --marked 011 --style nope", "unknown oracle_style 'nope'"),
    ("grover simulate --n 3 --marked 011 --backend statevector --device cuda", "no CUDA device"),
    ("grover render --n 3 --marked 011 --format nope", "unknown rendering format 'nope'"),
    (
        "grover render --n 3 --marked 011 --iterations 1000000000 --format qasm3",
        "use fmt='qasm3_loop'",
    ),
    ("grover render --n 61 --marked 1", "n_qubits=61 is outside 1..60"),
    # llm
    ("llm train --set seeds=[]", "seeds=[] must be a non-empty list"),
    ("llm train --set steps=0", "steps=0 must be >= 1"),
    ("llm train --set batch_size=-1", "batch_size=-1 must be >= 1"),
    ("llm train --set lr=nan", "'lr' is NaN"),
    ("llm train --set model.hidden_size=0", "'model.hidden_size' = 0 must be >= 1"),
    ("llm train --set model.num_kv_heads=3", "must be divisible by num_kv_heads=3"),
    ("llm train --set dataset=missing", "has no data/train/shard-*.jsonl records"),
    ("llm train --set dataset=afile", "has no data/train/shard-*.jsonl records"),
    ("llm train --set task.answer='nope'", "answer='nope' is not an answer format"),
    ("llm train --resume missing", "is not a 'qhybrid llm train' run folder"),
    ("llm eval", "has no finished model-seed*/ folder"),
    ("llm eval --set run=afile", "has no finished model-seed*/ folder"),
    ("llm eval --set max_per_split=-1", "out of range"),
    ("llm finetune", "is not a local model folder"),
    ("llm finetune --set base=adir", "is not a local model folder"),
    ("llm export-anchor --set split='nope'", "split='nope' has no problems"),
    ("llm export-anchor --set input='nope'", "input='nope'"),
    # newton
    ("newton compare --set epochs=0", "'epochs' = 0 must be >= 1"),
    ("newton compare --set lr=nan", "is NaN"),
    ("newton solve --set n=0", "'n' = 0 must be >= 1"),
    ("newton solve --set kappa=0.5", "'kappa' = 0.5 must be >= 1"),
    ("newton hhl-loop --set clock_qubits=0", "'clock_qubits' = 0 must be >= 1"),
    ("newton noise --set epsilons=[-1.0]", "-1.0"),
    ("newton crossover --set unknown=1", "unknown config key 'unknown'"),
    ("reproduce --set newton.hidden=0", "'newton.hidden' = 0 must be >= 1"),
    # fl
    ("fl keys --clients 0 --dir keys --max-examples 100", "'clients' = 0 must be >= 1"),
    ("fl keys --clients -1 --dir keys --max-examples 100", "'clients' = -1 must be >= 1"),
    ("fl keys --dir keys --max-examples 0", "'max_examples' = 0 must be >= 1"),
    ("fl keys --dir keys --max-examples -5", "'max_examples' = -5 must be >= 1"),
    ("fl keys --dir keys --max-examples 10 --scheme nope", "unknown signature scheme 'nope'"),
    ("fl keys --dir afile --max-examples 100", "key folder afile is a file"),
    ("fl run --set rounds=0", "'rounds' = 0 must be >= 1"),
    ("fl run --set num_clients=-2", "'num_clients' = -2 must be >= 1"),
    ("fl run --set scheme='nope'", "unknown signature scheme 'nope'"),
    ("fl bench --set unknown=1", "unknown config key 'unknown'"),
    ("reproduce --set fl.fl_rounds=0", "'fl.fl_rounds' = 0 must be >= 1"),
    ("reproduce --set fl.budget_s=-1.0", "'fl.budget_s' = -1.0 must be > 0"),
    ("reproduce --set fl.cost_clients=[2,0]", "'fl.cost_clients[1]' = 0 must be >= 1"),
    ("reproduce --set fl.schemes=['nope']", "'fl.schemes[0]': unknown signature scheme 'nope'"),
    ("reproduce --set fl.byz_attack='x'", "'fl.byz_attack' = 'x' is not one of"),
    # moe
    ("moe train --set steps=0", "'steps' = 0 must be >= 1"),
    ("moe train --set top_k=9", "top_k=9 must be <= experts=8"),
    ("moe train --set experts=1", "'experts' = 1 must be >= 2"),
    ("moe compress --set model_dir=missing", "is not a Hugging Face model folder"),
    ("moe compress --set model_dir=afile", "is not a Hugging Face model folder"),
    ("moe compress --set model_dir=adir", "is not a Hugging Face model folder"),
    ("moe compress --set avg_bits=1.0", "cannot be met with widths 2, 3, 4, 8"),
    ("moe compress --set avg_bits=9.0", "'avg_bits' = 9.0 must be <= 8"),
    ("moe compress --set drop_criterion='x'", "'drop_criterion' = 'x' is not one of"),
    ("moe compress --set keep_ratio=0", "'keep_ratio' = 0.0 must be > 0"),
    ("moe compress --set merge_to=-1", "'merge_to' = -1 must be >= 0"),
    ("moe compress --set storage='disk'", "'storage' = 'disk' is not one of"),
    ("reproduce --set moe.keep_ratio=0", "'moe.keep_ratio' = 0.0 must be > 0"),
    ("reproduce --set moe.avg_bits=9.0", "'moe.avg_bits' = 9.0 must be <= 8"),
]


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no ``except Exception`` can swallow it."""


def _alarm(signum, frame):
    raise _Hang("the command did not finish within 60 s")


@pytest.mark.parametrize(("line", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_error_line(line, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "latin.toml").write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    (tmp_path / "broken.toml").write_text("name = \n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        code = cli.main(line.split())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(errors) == 1 and message in errors[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_the_table_is_big_enough_and_covers_every_part():
    assert len(ROWS) >= 100
    commands = {line.split()[0] for line, _ in ROWS}
    assert {"reproduce", "grover", "llm", "newton", "fl", "moe"} <= commands
