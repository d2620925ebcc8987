"""Task formats, answer-only labels, splits."""

from __future__ import annotations

import pytest

from llm_sim.data import (
    Problem,
    SplitSpec,
    TaskFormat,
    answer_text,
    char_tokenizer,
    collate,
    encode_example,
    k_regime,
    make_splits,
    prompt_text,
)
from llm_sim.evaluate import parse_bits_prompt
from llm_sim.metrics import score
from llm_sim.parse import parse_answer
from qhybrid.errors import QHybridError


def test_bits_prompt_reads_back_and_answer_is_exact():
    p = Problem(5, ("01101", "10010"))
    assert prompt_text(p, "bits") == "G k=3 o=xccxc,cxxcx >"
    assert parse_bits_prompt(prompt_text(p, "bits")) == Problem(5, ("01101", "10010"), 3)
    assert answer_text(p) == " marked=01101,10010 p_each=0.48066 rest_each=0.0012894"
    s = score(parse_answer(answer_text(p)), p)
    assert s["set_acc"] == 1.0 and s["tvd"] < 1e-4 and s["p_marked_err"] < 1e-5


@pytest.mark.parametrize("answer", ["closed", "dict", "cot"])
def test_every_answer_format_parses_to_the_truth(answer):
    p = Problem(3, ("011",), 1)
    pred = parse_answer(answer_text(p, answer))
    s = score(pred, p)
    assert pred.ok and s["set_acc"] == 1.0 and s["tvd"] < 1e-3


def test_dict_answer_refuses_large_n():
    with pytest.raises(QHybridError, match="n_qubits=8"):
        answer_text(Problem(8, ("0" * 8,)), "dict")


def test_labels_cover_only_the_answer():
    tok = char_tokenizer()
    p = Problem(4, ("0110",))
    e = encode_example(p, tok, TaskFormat(fmt="bits"))
    n_prompt = 1 + len(prompt_text(p, "bits"))
    assert all(x == -100 for x in e["labels"][:n_prompt])
    answer_ids = e["labels"][n_prompt:]
    assert tok.decode(answer_ids, skip_special_tokens=True) == answer_text(p)
    assert answer_ids[-1] == tok.eos_token_id
    b = collate(
        [e, encode_example(Problem(3, ("101",)), tok, TaskFormat(fmt="bits"))], tok.pad_token_id
    )
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()


def test_splits_are_disjoint_and_cover_the_regimes():
    spec = SplitSpec(train_size=500, test_size=40, seed=3)
    splits = make_splits(spec)
    train_sets = {(p.n_qubits, p.marked) for p in splits["train"]}
    for name in ("test_id", "test_ood_k", "test_ood_t", "test_ood_n"):
        assert splits[name], name
        assert not train_sets & {(p.n_qubits, p.marked) for p in splits[name]}
    assert {k_regime(p) for p in splits["test_id"]} == {"optimal"}
    assert "optimal" not in {k_regime(p) for p in splits["test_ood_k"]}
    assert {p.n_qubits for p in splits["test_ood_n"]} == set(spec.ood_n)
    assert min(len(p.marked) for p in splits["test_ood_t"]) >= 4
    assert make_splits(spec) == splits  # seeded


def test_task_format_rejects_unknown():
    with pytest.raises(QHybridError, match="fmt='qasm'"):
        TaskFormat(fmt="qasm")


def test_compact_format_uses_the_quantum_vocabulary():
    from quantum import build_tokenizer

    tok = build_tokenizer()
    p = Problem(5, ("01101", "10010"))
    e = encode_example(p, tok, TaskFormat(fmt="compact"))
    assert tok.unk_token_id not in e["input_ids"]
    n_prompt = sum(1 for x in e["labels"] if x == -100)
    text = tok.decode(e["input_ids"][n_prompt:], skip_special_tokens=True)
    s = score(parse_answer(text), p)
    assert s["set_acc"] == 1.0 and s["tvd"] < 1e-4
    # n=20 is written with the same digit tokens as n<=6: no unknown token
    big = encode_example(Problem(20, ("0" * 19 + "1",)), tok, TaskFormat(fmt="compact"))
    assert tok.unk_token_id not in big["input_ids"]
