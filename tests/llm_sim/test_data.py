"""Task formats, answer-only labels, position ids built from the task structure, batches."""

from __future__ import annotations

import random

import pytest

from llm_sim.data import Batches, TaskFormat, answer_text, collate, encode_example, prompt_text
from llm_sim.metrics import score
from llm_sim.parse import parse_answer
from llm_sim.positions import PositionScheme, position_ids, prompt_layout
from qhybrid.errors import QHybridError
from quantum import GroverProblem, build_tokenizer

TOK = build_tokenizer()


def tokens(example) -> list[str]:
    return TOK.convert_ids_to_tokens(example.input_ids)


@pytest.mark.parametrize("answer", ["marked_p", "marked_phase", "closed"])
def test_compact_answers_parse_back_to_the_truth(answer):
    p = GroverProblem(5, ["01101", "10010"])
    text = answer_text(p, TaskFormat(answer=answer))
    if answer == "marked_p":
        assert text == " marked 0 1 1 0 1 marked 1 0 0 1 0 p_marked 0 . 4 8 0 7"
    s = score(parse_answer(text), p)
    assert s["set_acc"] == 1.0 and s["p_marked_err"] < 5e-5 and s["tvd"] < 1e-3
    e = encode_example(p, TOK, TaskFormat(answer=answer))
    assert TOK.unk_token_id not in e.input_ids


@pytest.mark.parametrize("answer", ["dict", "anchor"])
def test_qasm3_answers_parse_back_to_the_truth(answer):
    p = GroverProblem(3, ["011"], 1)
    task = TaskFormat(fmt="qasm3", answer=answer, positions=PositionScheme("sequential"))
    s = score(parse_answer(answer_text(p, task)), p)
    assert s["set_acc"] == 1.0 and s["tvd"] < 1e-3
    assert prompt_text(p, "qasm3").startswith("OPENQASM 3.0;")


def test_dict_answer_refuses_large_n():
    task = TaskFormat(fmt="qasm3", answer="dict", positions=PositionScheme("sequential"))
    with pytest.raises(QHybridError, match="n_qubits=8"):
        answer_text(GroverProblem(8, ["0" * 8]), task)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmt": "bits"}, "fmt='bits'"),
        ({"answer": "cot"}, "answer='cot'"),
        ({"digits": 0}, "digits=0"),
        ({"fmt": "qasm3"}, "coupled positions"),
        ({"answer": "dict", "positions": PositionScheme("sequential")}, "compact vocabulary"),
    ],
)
def test_task_format_rejects_what_cannot_work(kwargs, match):
    with pytest.raises(QHybridError, match=match):
        TaskFormat(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "alibi"}, "kind='alibi'"), ({"gap": -1}, "gap=-1"), ({"stride": 0}, "stride=0")],
)
def test_position_scheme_rejects_bad_values(kwargs, match):
    with pytest.raises(QHybridError, match=match):
        PositionScheme(**kwargs)


def test_labels_cover_only_the_answer():
    p = GroverProblem(4, ["0110"])
    e = encode_example(p, TOK, TaskFormat())
    n_prompt = sum(1 for x in e.labels if x == -100)
    assert tokens(e)[n_prompt - 1] == "measure" and tokens(e)[n_prompt] == "marked"
    answer_ids = e.labels[n_prompt:]
    assert answer_ids[-1] == TOK.eos_token_id
    assert TOK.decode(answer_ids, skip_special_tokens=True) == answer_text(p, TaskFormat()).strip()
    b = collate(
        [e, encode_example(GroverProblem(3, ["101"]), TOK, TaskFormat())],
        TOK.pad_token_id,
        PositionScheme(),
    )
    assert b["input_ids"].shape == b["labels"].shape == b["position_ids"].shape
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()


@pytest.mark.parametrize("fmt", ["compact", "compact_scaled"])
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_coupled_ids_mirror_the_prompt_token_each_answer_token_copies(seed, fmt):
    """Answer input j carries the id of the prompt token that answer token j + 1 mirrors."""
    p = GroverProblem(7, ["0110101", "1110000", "0000001"], oracle_style="diagonal")
    e = encode_example(p, TOK, TaskFormat(fmt=fmt))
    toks = tokens(e)
    layout = prompt_layout(toks[: toks.index("measure") + 1])
    rng = random.Random(seed) if seed is not None else None
    ids = position_ids(layout, len(toks), PositionScheme(gap=40, stride=3), rng)
    where = {i: j for j, i in enumerate(ids[: layout.length])}  # prompt id -> prompt index
    answer = toks[layout.length :]
    mirror = {"marked": "flip", "0": "0", "1": "1"}
    for j in range(len(answer) - 1):
        slot = ids[layout.length + j]
        if j + 1 < layout.copy_len:  # the prompt token at this id is what answer j + 1 copies
            assert toks[where[slot]] == mirror[answer[j + 1]]
        else:  # p_marked, the number and <eos> continue after 'measure', on no prompt id
            assert slot > ids[layout.length - 1]
    # the header keeps 0..h-1, the register's low bits (compact_scaled, n >= 7) the ids after it;
    # the flip section starts after the gap; every other prompt id strictly increases
    h, low = layout.first_flip, layout.low_bits
    assert ids[:h] == list(range(h))
    start = layout.register + 1 if layout.register is not None else layout.length
    assert ids[start : start + low] == list(range(h, h + low))
    assert low == (1 if fmt == "compact_scaled" else 0)  # n = 7: ceil(7/2) - 3 window bits
    rest = ids[h:start] + ids[start + low : layout.length]
    assert all(b > a for a, b in zip(rest, rest[1:], strict=False))
    if rng is None:  # evaluation: the middle of the training gaps, fixed strides
        assert ids[layout.first_flip] == h + low + 40 // 2
        assert ids == position_ids(layout, len(toks), PositionScheme(gap=40, stride=3))


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_scaled_register_and_number_keep_unit_steps(seed):
    """In compact_scaled prompts the register (``repeat`` .. ``measure``) and the answer's number
    have consecutive ids under any gap and strides, so the window sits at fixed relative
    distances from every digit of the number; the flip section keeps its random strides."""
    rng = random.Random(seed) if seed is not None else None
    for p in (GroverProblem(5, ["01101", "10010"], 3), GroverProblem(20, ["0" * 20], 804)):
        toks = tokens(encode_example(p, TOK, TaskFormat(fmt="compact_scaled")))
        layout = prompt_layout(toks[: toks.index("measure") + 1])
        assert toks[layout.register] == "repeat" and layout.register == layout.tail + 1
        ids = position_ids(layout, len(toks), PositionScheme(gap=40, stride=9), rng)
        after_low = layout.register + 1 + layout.low_bits
        number = [ids[layout.register]] + ids[after_low : layout.length]
        number += ids[layout.length + layout.copy_len - 1 :]
        assert number == list(range(number[0], number[0] + len(number)))
        # the low bits sit right after the header, the same ids at every gap and stride
        h = layout.first_flip
        assert ids[layout.register + 1 : after_low] == list(range(h, h + layout.low_bits))
        assert layout.low_bits == max(0, (p.n_qubits + 1) // 2 - 3)
        window = toks[toks.index("|") : layout.length]  # | F point I measure
        assert len(window) == 5
    assert prompt_layout(tokens(encode_example(p, TOK, TaskFormat(fmt="compact")))).register is None


def test_copy_answers_mirror_the_flip_section_token_for_token():
    for p in (GroverProblem(2, ["01"]), GroverProblem(9, ["0" * 9, "1" * 9], 3)):
        toks = tokens(encode_example(p, TOK, TaskFormat()))
        layout = prompt_layout(toks[: toks.index("measure") + 1])
        flips = toks[layout.first_flip : layout.tail]
        copy = toks[layout.length : layout.length + layout.copy_len]
        assert [("flip" if t == "marked" else t) for t in copy] == flips


def test_sequential_and_nope_ids():
    assert position_ids(None, 5, PositionScheme("sequential")) == [0, 1, 2, 3, 4]
    assert position_ids(None, 4, PositionScheme("nope")) == [0, 0, 0, 0]
    with pytest.raises(QHybridError, match="compact prompt"):
        prompt_layout(["<bos>", "OPENQASM"])


def test_batches_redraw_gaps_per_epoch_and_repeat_for_the_same_epoch():
    problems = [GroverProblem(4, [format(i, "04b")]) for i in range(1, 9)]
    ex = [encode_example(p, TOK, TaskFormat()) for p in problems]
    b = Batches(ex, 4, TOK.pad_token_id, PositionScheme(), seed=7)
    first = [x["position_ids"].tolist() for x in b]
    again = [x["position_ids"].tolist() for x in b]
    b.set_epoch(1)
    second = [x["position_ids"].tolist() for x in b]
    assert first == again and first != second
    assert len(b) == 2 and sum(x["input_ids"].shape[0] for x in b) == 8
    with pytest.raises(QHybridError, match="no training examples"):
        Batches([], 4, TOK.pad_token_id, PositionScheme())


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
def test_packed_batches_give_the_unpacked_loss_and_gradients(arch):
    """Packing a batch into fewer rows (block-diagonal masks) changes no number of the step."""
    import torch

    from llm_sim.model import ModelConfig, build_model
    from llm_sim.training import lm_loss

    task = TaskFormat(fmt="compact_scaled")
    problems = [
        GroverProblem(n, [format(i, f"0{n}b") for i in range(t)], k)
        for n, t, k in [
            (2, 1, 0),
            (3, 2, 5),
            (4, 3, 1),
            (5, 1, 7),
            (6, 6, 2),
            (6, 1, 31),
            (3, 1, 0),
        ]
    ]
    examples = [encode_example(p, TOK, task) for p in problems]
    plain = collate(examples, TOK.pad_token_id, task.positions, random.Random(3))
    packed = collate(examples, TOK.pad_token_id, task.positions, random.Random(3), pack=True)
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]
    assert (packed["input_ids"] != TOK.pad_token_id).sum() == plain["attention_mask"].sum()
    assert sorted(packed["labels"][packed["labels"] != -100].tolist()) == sorted(
        plain["labels"][plain["labels"] != -100].tolist()
    )
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=2), TOK)
    grads = []
    for batch in (plain, packed):
        loss, extras = lm_loss(model, batch)
        loss.backward()
        grads.append((float(loss), extras, [p.grad.clone() for p in model.parameters()]))
        model.zero_grad()
    (la, ea, ga), (lb, eb, gb) = grads
    assert la == pytest.approx(lb, rel=1e-6) and ea.keys() == eb.keys()
    for key in ea:
        assert ea[key] == pytest.approx(eb[key], rel=1e-5)
    assert max(float((a - b).abs().max()) for a, b in zip(ga, gb, strict=True)) < 1e-5


def test_phase_answer_is_the_rotation_and_only_p_success_is_scored():
    """phase = frac((2k+1) asin(sqrt(t/N)) / pi), truncated; P = sin^2(pi phase); the parser reads P."""
    import math

    from llm_sim.data import phase_text

    for n, t, k in [(5, 2, 3), (6, 1, 40), (3, 3, 7), (20, 1, 804), (60, 6, 2**29)]:
        p = GroverProblem(n, [format(i, f"0{n}b") for i in range(t)], k)
        phase = float(phase_text(p))
        theta = math.asin(math.sqrt(t / 2**n))
        turns = (2 * k + 1) * theta / math.pi
        assert 0 <= turns - math.floor(turns) - phase < 1e-3
        success = math.sin(math.pi * phase) ** 2
        assert abs(success - math.sin((2 * k + 1) * theta) ** 2) < 2 * math.pi * 1e-3
    assert phase_text(GroverProblem(2, ["01"], 1)) == "0.500"  # theta = pi / 6: 3 theta = pi / 2
    p = GroverProblem(5, ["01101", "10010"])
    right = parse_answer("marked 0 1 1 0 1 marked 1 0 0 1 0 phase 0 . 5 6 3 p_success 0 . 9 6 1 3")
    wrong_phase = parse_answer(
        "marked 0 1 1 0 1 marked 1 0 0 1 0 phase 0 . 1 p_success 0 . 9 6 1 3"
    )
    assert score(right, p) == score(wrong_phase, p)
    assert right["01101"] == pytest.approx(0.9613 / 2)
    assert parse_answer("marked 0 1 phase 0 . 1 p_success 1 . 5").reason == "probability_above_one"
