"""The quantum-native tokenizer: exact token boundaries, no <unk>, save/load with AutoTokenizer."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from quantum import GroverProblem, build_tokenizer, render


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_is_a_fast_tokenizer_with_special_tokens(tok):
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.pad_token_id == 0 and tok.unk_token == "<unk>"
    assert tok.eos_token == "<eos>" and tok.bos_token == "<bos>" and tok.sep_token == "<sep>"


@pytest.mark.parametrize("style", ["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"])
@pytest.mark.parametrize(
    "fmt", ["compact", "answer", "answer_anchor", "qasm3_loop", "qasm3_oracle", "qasm3"]
)
def test_renderings_have_no_unknown_tokens(tok, fmt, style):
    p = GroverProblem(4, ["0101", "1110"], oracle_style=style)
    ids = tok(render(p, fmt))["input_ids"]
    assert tok.unk_token_id not in ids


def test_compact_and_answer_are_one_token_per_word_and_decode_exactly(tok):
    for n in (3, 12, 20):
        p = GroverProblem(n, ["1" * n, "0" * n])
        for fmt in ("compact", "answer"):
            text = render(p, fmt)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(text.split())
            assert tok.decode(ids) == text


def test_qasm_is_split_into_units(tok):
    assert tok.tokenize("ctrl(12) @ z q[3];") == [
        "ctrl",
        "(",
        "1",
        "2",
        ")",
        "@",
        "z",
        "q",
        "[",
        "3",
        "]",
        ";",
    ]


def test_save_and_load_with_auto_tokenizer(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = render(GroverProblem(6, ["010101"]), "compact")
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.pad_token_id == tok.pad_token_id and len(loaded) == len(tok)


def test_fast_token_count_equals_the_tokenizer(tok):
    from quantum.tokenizer import count_tokens

    for style in ("x_mcz_x", "mcp_flag", "phase_oracle"):
        p = GroverProblem(5, ["01011", "00000"], oracle_style=style)
        for fmt in ("compact", "answer", "qasm3_loop", "qasm3", "qasm3_oracle"):
            text = render(p, fmt) + " weird§tokens\t"
            assert count_tokens(text) == len(tok(text, add_special_tokens=False)["input_ids"])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    data=st.data(),
    k=st.integers(0, 2),
    style=st.sampled_from(["x_mcz_x", "mcp_flag", "phase_oracle", "diagonal"]),
    fmt=st.sampled_from(
        ["qasm3", "qasm3_loop", "qasm3_oracle", "compact", "answer", "answer_anchor"]
    ),
)
def test_no_rendering_of_any_style_has_an_unknown_token(n, data, k, style, fmt):
    states = [format(i, f"0{n}b") for i in range(2**n)]
    t = data.draw(st.integers(1, max(1, 2**n - 1)))
    marked = data.draw(st.lists(st.sampled_from(states), min_size=t, max_size=t, unique=True))
    text = render(GroverProblem(n, marked, k, style), fmt)
    tok = _tokenizer()
    ids = tok(text)["input_ids"]
    unknown = [w for w, i in zip(tok.tokenize(text), ids, strict=True) if i == tok.unk_token_id]
    assert unknown == [], (style, fmt, unknown)


@functools.cache
def _tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()  # hypothesis tests cannot take function-scoped fixtures
