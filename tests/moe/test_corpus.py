"""The standard-library corpus (domains split by ast / tokenize) and per-domain routing entropy."""

from __future__ import annotations

import math

import pytest
import torch

from moe.corpus import _strip
from moe.subject import SubjectConfig, SubjectData, make_task, routing_entropy
from moe.tiny import tiny_moe

SOURCE = '''"""Module doc."""
import os  # why os


def f(x):
    """Add one."""
    # a full-line comment
    return x + 1
'''


def test_strip_separates_code_docstrings_and_comments() -> None:
    code, docs, comments = _strip(SOURCE)
    assert code == "import os\ndef f(x):\n    return x + 1"
    assert docs == "Module doc.\n\nAdd one."
    assert comments == "why os\na full-line comment"


def test_routing_entropy_matches_router_logits() -> None:
    model = tiny_moe("mixtral", vocab=256)
    g = torch.Generator().manual_seed(0)
    test = torch.randint(0, 256, (8, 10), generator=g)
    data = SubjectData(test, test, torch.tensor([0] * 4 + [1] * 4), ("a", "b"))
    out = routing_entropy(model, data)
    for d, name in enumerate(("a", "b")):
        ids = test[data.test_domain == d]
        logits = model(input_ids=ids, output_router_logits=True).router_logits
        ents = []
        for lg in logits:
            top = lg.softmax(-1).topk(2, dim=-1).indices
            counts = torch.bincount(top.flatten(), minlength=8).double()
            p = counts / counts.sum()
            ents.append(float(-(p * p.clamp_min(1e-30).log()).sum()) / math.log(8))
        assert out[name] == pytest.approx(sum(ents) / len(ents), abs=1e-9)
    assert 0 < out["overlap"] <= 1


@pytest.mark.slow
def test_stdlib_task_windows_come_from_their_domain_split() -> None:
    from moe.corpus import DOMAINS, domain_texts

    cfg = SubjectConfig(task="stdlib", seq_len=32, train_sequences=64, test_sequences=16)
    data = make_task(cfg, seed=1)
    assert data.train.shape == (64, 32) and data.test.shape == (16, 32) and cfg.vocab == 256
    texts = domain_texts()
    assert all(
        len(tr) > 3 * len(te) > 0 for tr, te in texts.values()
    )  # about one module in five held out
    for row, d in zip(data.test, data.test_domain, strict=True):
        window = bytes(row.tolist())
        assert window in texts[DOMAINS[d]][1].encode("utf-8")
