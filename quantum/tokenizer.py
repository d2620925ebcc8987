"""The quantum-native tokenizer: one token per gate name, keyword, digit, bit and symbol.

A word-level vocabulary (no BPE merges), so a token is always a unit of the circuit: a gate
(``h``, ``x``, ``z``, ``ctrl``, ``Oracle``...), a register or keyword (``qubit``, ``for``...), a
single digit (numbers and bitstrings are read one digit per token, so a model trained on small
n sees every token it needs for large n), or one punctuation character. Pre-tokenization splits
whitespace, then isolates every digit, every identifier ``[A-Za-z_]+`` and every other
character, so the same tokenizer reads the ``compact`` and ``answer`` renderings (already one
token per word) and all three QASM renderings. Unknown identifiers map to ``<unk>``.

The result is a :class:`transformers.PreTrainedTokenizerFast`; ``save_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` round-trip it without any download.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["PRE_TOKEN_PATTERN", "SPECIAL_TOKENS", "VOCAB", "build_tokenizer", "count_tokens"]

# After whitespace splitting: each digit, each identifier, each other character is one token.
PRE_TOKEN_PATTERN = r"[0-9]|[A-Za-z_]+|[^A-Za-z_0-9]"
_COUNT_RE = re.compile(r"[0-9]|[A-Za-z_]+|[^\sA-Za-z_0-9]")

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<sep>")
_DIGITS = tuple("0123456789")
_COMPACT = ("qubits", "h", "repeat", "oracle", "flip", "diffuse", "end", "measure")
_STYLES = ("x_mcz_x", "mcp_flag", "phase_oracle", "diagonal")
_ANSWER = ("marked", "p_marked", "p_rest", "e")
_QASM = (
    "OPENQASM",
    "include",
    "stdgates",
    "inc",
    "gate",
    "Oracle",
    "Diffuser",
    "qubit",
    "bit",
    "measure",
    "for",
    "int",
    "in",
    "ctrl",
    "negctrl",
    "inv",
    "pow",
    "pi",
    "x",
    "z",
    "p",
    "u",
    "cx",
    "cz",
    "ccx",
    "ccz",
    "mcx",
    "mcmt",
    "mcphase",
    "cp",
    "cu1",
    "rz",
    "ry",
    "sx",
    "t",
    "tdg",
    "s",
    "sdg",
    "q",
    "c",
    "f",
    "flag",
    "i",
    "_gate_q_",
    "Q",
    "ccz_o",
    "mcx_o",
    "_Phase_Oracle",
    "diagonal",
    "unitary",
    "uc",
    "ucrz",
    "_",
)
# Gates Qiskit's exporter synthesises and names itself (a suffix digit is its own token).
_SYNTHESISED = ("z", "cz", "ccz", "mcz", "x", "cx", "ccx", "mcx", "mcmt", "mcphase", "p", "cp")
_QISKIT_NAMES = tuple(g + "_o" for g in _SYNTHESISED) + (
    "_gate_p_",
    "crz",
    "crx",
    "cry",
    "rccx",
    "rcccx",
    "mcx_vchain",
    "mcx_gray",
    "gphase",
    "id",
)
_SYMBOLS = tuple(";,.{}[]()@=+-*/:\"'<>!&|~^")
# Added later, at the end so earlier ids stay put: the exporter's numbered copies (``mcx_0`` reads
# as ``mcx_`` ``0``) of every gate it may synthesise.
_NUMBERED = tuple(
    g + "_" for g in (*_SYNTHESISED, "h", "rz", "ry", "Oracle", "Diffuser", "unitary", "ucrz")
)
# Added later, at the end: the keywords of llm_sim's ``marked_phase`` answer.
_PHASE_ANSWER = ("phase", "p_success")
VOCAB: tuple[str, ...] = tuple(
    dict.fromkeys(
        SPECIAL_TOKENS
        + _DIGITS
        + _COMPACT
        + _STYLES
        + _ANSWER
        + _QASM
        + _QISKIT_NAMES
        + _SYMBOLS
        + _NUMBERED
        + _PHASE_ANSWER
    )
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The quantum-native tokenizer over :data:`VOCAB` (ids in that order; ``<pad>`` is 0).

    >>> tok = build_tokenizer()
    >>> tok.tokenize("qubits 1 2 flip 0 1")
    ['qubits', '1', '2', 'flip', '0', '1']
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
        ]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        sep_token="<sep>",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def count_tokens(text: str) -> int:
    """Number of tokens :func:`build_tokenizer` gives ``text`` (no special tokens), ~10x faster.

    The vocabulary is word-level, so every pre-token is exactly one token (``<unk>`` included)
    and the count is the number of pre-tokens: a regex count, checked against the tokenizer in
    the tests. Dataset generation uses it for its per-record token counts.
    """
    if "\n" not in text:
        return len(_COUNT_RE.findall(text))
    # QASM: no token spans a line and most lines repeat (``  x q3;``), so count per distinct line.
    return sum(map(_line_tokens, text.split("\n")))


@functools.lru_cache(maxsize=1 << 16)
def _line_tokens(line: str) -> int:
    return len(_COUNT_RE.findall(line))
