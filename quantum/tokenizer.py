"""The quantum-native tokenizer: one token per gate name, keyword, digit, bit and symbol; no <unk>.

A word-level vocabulary (no BPE merges), so a token is always a unit of the circuit: a gate
(``h``, ``x``, ``z``, ``ctrl``, ``Oracle``, ``mcx_vchain``...), a register or keyword (``qubit``,
``for``...), a single digit (numbers and bitstrings are read one digit per token, so a model
trained on small n sees every token it needs for large n), or one punctuation character.

Pre-tokenization: split at whitespace; map each byte to a printable stand-in (GPT-2's byte-level
alphabet: printable ASCII maps to itself); then an identifier (a maximal run of ``[A-Za-z_]``, digits
split off) that is in the vocabulary is one token, and everything else is one token per character,
which for non-ASCII text means one per UTF-8 byte. Every letter and every byte stand-in is in the
vocabulary, so no text yields ``<unk>``: an identifier the vocabulary lacks (``my_gate``) is read
letter by letter, a symbol it lacks (``§``) byte by byte. The same tokenizer reads the ``compact``
and ``answer`` renderings (already one token per word) and any OpenQASM 3 text.

Token ids never move: :data:`VOCAB` only grows at its end (``_FALLBACK`` is the last block). The
result is a :class:`transformers.PreTrainedTokenizerFast`; ``save_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` round-trip it without any download.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BYTE_CHARS",
    "PRE_TOKEN_PATTERN",
    "SPECIAL_TOKENS",
    "VOCAB",
    "build_tokenizer",
    "count_tokens",
]

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


def _byte_chars() -> tuple[str, ...]:
    """The printable stand-in of each byte 0..255, as ``tokenizers``' ByteLevel writes it (GPT-2's
    ``bytes_to_unicode``): printable ASCII and most of Latin-1 map to themselves, the rest to
    U+0100 onwards, in byte order."""
    kept = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    out, shifted = [], 0
    for b in range(256):
        out.append(chr(b) if b in kept else chr(0x100 + shifted))
        shifted += b not in kept
    return tuple(out)


BYTE_CHARS = _byte_chars()
# Added for issue 20, at the end so every earlier id stays put: names Qiskit's exporter and the
# OpenQASM 3 standard library write that were missing (their numbered copies too), keywords, then
# every byte stand-in, so any letter, symbol or byte of any text has a token (no <unk>).
_MORE_NAMES = (
    "mcx_recursive", "mcx_vchain_", "mcx_recursive_", "mcx_gray_", "rcccx_dg", "rccx_dg", "rcccx_",
    "rccx_", "c3sx", "c3x", "c4x", "sxdg", "cs", "csdg", "cu", "cy", "ch", "rx", "y", "swap",
    "cswap", "iswap", "dcx", "ecr", "rxx", "ryy", "rzz", "rzx", "xx_minus_yy", "xx_plus_yy",
    "phase", "cphase", "CX", "U", "gphase", "mcu", "mcrx", "mcry", "mcrz", "mcp", "mcz", "ccz_",
    "qreg", "creg", "reset", "barrier", "delay", "const", "float", "angle", "bool", "uint",
    "input", "output", "if", "else", "while", "def", "return", "box", "let", "true", "false",
    "tau", "euler", "sin", "cos", "sqrt", "exp", "anc", "meas", "ancilla", "q_", "c_", "csx",
    "_Phase_Oracle_", "Q_", "mcmt_", "_gate_p_",
)  # fmt: skip
_FALLBACK = _MORE_NAMES + BYTE_CHARS
# Added later, at the end: the keywords of llm_sim's ``marked_phase`` answer (``phase`` is
# already a word above, the OpenQASM gate).
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
        + _FALLBACK
        + _PHASE_ANSWER
    )
)
# Identifiers read as one token: the vocabulary's words of two or more letters/underscores. A
# word matches only as a whole run of [A-Za-z_] (digits split off, as ``mcx_`` ``0``); anything
# else is one token per character (per byte stand-in after the byte-level mapping).
_WORDS = sorted((w for w in VOCAB if len(w) > 1 and re.fullmatch(r"[A-Za-z_]+", w)), key=len)
_WORD_PATTERN = "(?<![A-Za-z_])(?:" + "|".join(reversed(_WORDS)) + ")(?![A-Za-z_])"
PRE_TOKEN_PATTERN = _WORD_PATTERN + "|."
# count_tokens on the text before the byte mapping: a word is 1 token, a character its UTF-8 bytes;
# whitespace is what the tokenizer's WhitespaceSplit drops (Rust's char::is_whitespace).
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_COUNT_RE = re.compile(_WORD_PATTERN + f"|[^{_SPACE}]")


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
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
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

    The vocabulary is word-level and covers every pre-token, so the count is the number of
    pre-tokens: a vocabulary word is one, any other character one per UTF-8 byte (a regex count,
    checked against the tokenizer in the tests). Dataset generation uses it for its per-record
    token counts. Special-token strings written in the text (``<eos>``) are counted as characters.
    """
    if "\n" not in text:
        return _line_tokens(text) if len(text) < 256 else _count(text)
    # QASM: no token spans a line and most lines repeat (``  x q3;``), so count per distinct line.
    return sum(map(_line_tokens, text.split("\n")))


def _count(text: str) -> int:
    if text.isascii():
        return len(_COUNT_RE.findall(text))
    return sum(1 if len(m) > 1 else len(m.encode("utf-8")) for m in _COUNT_RE.findall(text))


@functools.lru_cache(maxsize=1 << 16)
def _line_tokens(line: str) -> int:
    return _count(line)
