"""Train two tasks at once on one frozen backbone, print the metrics and a prediction.

    python examples/train_two_tasks.py                     # all-MiniLM-L6-v2, about a minute on 2 cores
    python examples/train_two_tasks.py --model PATH --max-steps 2 --output-dir /tmp/two_tasks   # tiny (CI)

The code in `main` is the README's Python example: a bottleneck adapter and a head per task, trained
together; the store it saves (heads + adapters, no backbone, no checkpoints) is what
`examples/share_adapters.py` and `examples/predict_mixed.py` read. Run it from the repository root.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from transformers import set_seed

from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task, load_task_split


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    cli = parse_args(argv)
    set_seed(42)  # before the model is built: the same seed gives the same adapters, heads and run
    tasks = [
        Task("sentiment", kind="classification", train_file="examples/data/sentiment/train.csv",
             validation_file="examples/data/sentiment/validation.csv"),
        Task("ner", kind="token_classification", label_column="tags",
             train_file="examples/data/ner/train.txt", validation_file="examples/data/ner/validation.txt"),
    ]
    # a frozen backbone, one bottleneck adapter and one head per task
    model = MultiTaskModel.from_backbone(cli.model, tasks, adapter_method="bottleneck")
    args = MultiTaskTrainingArguments(output_dir=cli.output_dir, overwrite_output_dir=True, save_strategy="no",
                                      learning_rate=3e-3, num_train_epochs=3, max_steps=cli.max_steps,
                                      per_device_train_batch_size=16, max_seq_length=64)
    trainer = MultiTaskTrainer(
        model=model, args=args, tasks=tasks,
        train_dataset={t.name: load_task_split(t, "train") for t in tasks},  # any datasets.Dataset works
        eval_dataset={t.name: load_task_split(t, "validation") for t in tasks},
    )
    trainer.train()
    metrics = trainer.evaluate()
    print(metrics)  # eval_sentiment_accuracy, eval_ner_entity_f1, ..., eval_average
    trainer.save_model()  # heads + adapters only: the frozen backbone is not copied

    model = MultiTaskModel.from_pretrained(cli.output_dir, tasks=["ner"])
    print(model.predict(["Mary lives in London"], task="ner"))
    return metrics


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="backbone: Hub id or folder")
    parser.add_argument("--output-dir", default="outputs/two_tasks", help="where the store is saved")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: 3 epochs)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
