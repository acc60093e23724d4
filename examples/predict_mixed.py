"""Predict rows of different tasks in one call, and every task for each row.

    python examples/train_two_tasks.py         # first: writes the store outputs/two_tasks
    python examples/predict_mixed.py

Methods that route per row (bottleneck, MAD-X, PALs, Hyperformer, CA-MTL) run a batch whose rows belong to
different tasks in one forward pass; the others split it per task. Either way each row gets what it
would get alone.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from hf_mtl import MultiTaskModel


def main(argv: Sequence[str] | None = None) -> list[dict]:
    cli = parse_args(argv)
    model = MultiTaskModel.from_pretrained(cli.store)
    rows = [
        ("what a lovely film", "sentiment"),
        ("Mary flew from Paris to Berlin", "ner"),
        ("the plot was boring", "sentiment"),
    ]
    # one task per row
    predictions = model.predict([text for text, _ in rows], task=[task for _, task in rows])
    for (text, _), prediction in zip(rows, predictions):
        print(json.dumps({"text": text, **_short(prediction)}))
    # every task of the store for one input (the tasks share the backbone's pass)
    print(json.dumps({task: _short(p) for task, p in model.predict(["John lives in London"], task="all")[0].items()}))
    return predictions


def _short(prediction: dict) -> dict:
    """The prediction without its per-label score lists."""
    return {k: v for k, v in prediction.items() if k != "scores"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="outputs/two_tasks", help="a store with the tasks sentiment and ner")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
