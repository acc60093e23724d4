"""Routing is per call: threads serving different tasks from one model never see each other's routing.

Two threads share one model (a web server's workers): one predicts task `sent` on one-task batches, the
other a batch whose interleaved rows mix `topic`, `sent` and `ner` (per-row routing, and on the CPU the
grouped-rows reorder of the methods with `groups_rows`). Each thread's answers must be bitwise the
answers of the same call made alone, every time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

from test_adapter_matrix import batch, build


ROUTED_METHODS = ["bottleneck", "madx", "pals", "hyperformer", "hyperformer++", "ca_mtl", "prefix_tuning", "lora"]
ROUNDS = 50
MIXED_ROWS = ["topic", "sent", "topic", "ner"]


@pytest.fixture
def one_intra_op_thread():
    """One intra-op thread per call: two calls then compute the same reductions in the same order as one call
    alone (and the two threads do not oversubscribe the test machine's cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _calls(model: Any, inputs: dict, method: str) -> dict[str, Callable[[], dict[str, torch.Tensor]]]:
    """The two threads' calls, each returning its logits by task."""
    language = {"language": "pt"} if method == "madx" else {}

    def single() -> dict[str, torch.Tensor]:
        return {"sent": model(**inputs, task="sent").logits}

    def mixed() -> dict[str, torch.Tensor]:
        return dict(model(**inputs, task=MIXED_ROWS, **language).task_logits)

    return {"single": single, "mixed": mixed}


def _race(calls: dict[str, Callable[[], dict[str, torch.Tensor]]], expected: dict[str, dict[str, torch.Tensor]],
          scopes: dict[str, Callable[[], Any]] | None = None) -> list[str]:
    """Run each call ROUNDS times, one thread per call, all starting together; the calls whose logits differ
    from `expected` (a worker's exception is raised here)."""
    start = threading.Barrier(len(calls))
    wrong: list[str] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            start.wait()
            with torch.no_grad(), (scopes[name]() if scopes else contextlib.nullcontext()):
                for round_ in range(ROUNDS):
                    got = calls[name]()
                    if got.keys() != expected[name].keys() or not all(
                            torch.equal(got[t], expected[name][t]) for t in got):
                        wrong.append(f"{name} round {round_}")
        except BaseException as error:  # raised by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return wrong


@pytest.mark.parametrize("method", ROUTED_METHODS)
def test_two_threads_predicting_different_tasks_get_single_threaded_answers(method: str, one_intra_op_thread) -> None:
    model, tok = build(method, "bert")
    inputs = batch(tok)
    calls = _calls(model, inputs, method)
    with torch.no_grad():
        expected = {name: call() for name, call in calls.items()}
    assert not torch.equal(expected["single"]["sent"], expected["mixed"]["sent"][:1]), "the two calls must differ"
    wrong = _race(calls, expected)
    assert not wrong, f"{method}: answers differ from the single-threaded ones in {len(wrong)} calls: {wrong[:5]}"


def test_task_scope_is_each_threads_own_default(one_intra_op_thread) -> None:
    """`task_scope` sets the default task of calls that name none for its thread only; `set_task`'s model-wide
    default holds outside it."""
    model, tok = build("bottleneck", "bert")
    inputs = batch(tok)
    model.set_task("ner")
    names = ("sent", "topic")
    with torch.no_grad():
        expected = {name: {"logits": model(**inputs, task=name).logits} for name in names}
    calls = {name: (lambda: {"logits": model(**inputs).logits}) for name in names}
    scopes = {name: (lambda name=name: model.task_scope(name)) for name in names}
    wrong = _race(calls, expected, scopes)
    assert not wrong, wrong[:5]
    assert model.active_task == "ner"
    with model.task_scope("sent"):
        assert model.active_task == "sent" and model.predict(["john smith"], max_length=32)[0]["task"] == "sent"
    assert model.active_task == "ner"
