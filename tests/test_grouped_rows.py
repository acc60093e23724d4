"""Mixed batches on the CPU: methods with `groups_rows` get each task's rows as one range (the model orders
interleaved rows by task around the backbone) and run every range through plain matmuls; the per-row gather
path (GPUs, and these methods with `groups_rows` off) must give the same logits and gradients."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_mixed_equals_single
from hf_mtl.adapters.routing import contiguous_segments
from test_adapter_matrix import batch, build


GROUPING = ["bottleneck", "madx", "pals", "hyperformer", "hyperformer++"]
INTERLEAVED = ["sent", "ner", "topic", "sent"]


def test_contiguous_segments() -> None:
    assert contiguous_segments([0, 0, 1, 2, 2]) == [slice(0, 2), slice(2, 3), slice(3, 5)]
    assert contiguous_segments([0]) == [slice(0, 1)]
    assert contiguous_segments([0, 1, 0]) is None
    assert contiguous_segments([0, 1, 1, 2, 1]) is None


def _run(model, inputs, rows):
    model.zero_grad(set_to_none=True)
    out = model(**inputs, task=rows)
    loss = sum(logits.float().square().mean() for logits in out.task_logits.values())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.adapter.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("method", GROUPING)
def test_grouped_ranges_equal_per_row_gathers(method: str) -> None:
    model, tok = build(method, "bert")
    assert type(model.adapter).groups_rows
    model.train()  # dropout is 0 in these tiny models: train mode only so gradients flow as in training
    inputs = batch(tok)
    routing = model.routing(INTERLEAVED, len(INTERLEAVED), torch.device("cpu"))
    assert model._task_order(routing) is not None  # interleaved rows are grouped around the backbone
    grouped, grouped_grads = _run(model, inputs, INTERLEAVED)

    model.adapter.groups_rows = False  # the per-row gathers, as on a GPU
    assert model._task_order(routing) is None
    gathered, gathered_grads = _run(model, inputs, INTERLEAVED)

    assert grouped.task_rows.keys() == gathered.task_rows.keys()
    for name in grouped.task_logits:
        torch.testing.assert_close(grouped.task_rows[name], gathered.task_rows[name])
        torch.testing.assert_close(grouped.task_logits[name], gathered.task_logits[name], rtol=1e-5, atol=1e-5)
    assert grouped_grads.keys() == gathered_grads.keys() and grouped_grads
    for name, grad in grouped_grads.items():
        torch.testing.assert_close(grad, gathered_grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["pals", "hyperformer"])
def test_rows_already_grouped_are_not_moved(method: str) -> None:
    model, tok = build(method, "bert")
    rows = ["sent", "sent", "topic", "ner"]
    routing = model.routing(rows, len(rows), torch.device("cpu"))
    assert model._task_order(routing) is None  # nothing to reorder: the ranges are used in place
    assert_mixed_equals_single(model, batch(tok), rows)
