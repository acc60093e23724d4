"""Real-data quality benchmark: multi-task adapters vs single-task full fine-tuning on the `en5` suite.

Question: does one frozen all-MiniLM-L6-v2 with small per-task modules, trained on five tasks at once,
score as well as fine-tuning the whole model once per task — with how many parameters, time, memory?

Suite `en5` (the tasks of `training_args/shared_en5.json`), read from a directory in the layout of
../shared/data (or, when there is none, the same tasks from the Hub by name):

| task | data | kind | metric |
| --- | --- | --- | --- |
| sst2 | GLUE SST-2 | sentence classification | accuracy |
| stsb | STS-B en (stsb_multi_mt) | pair regression | Pearson r |
| rte | GLUE RTE | pair classification | accuracy |
| upos | UD English-EWT | token classification (17 UPOS tags) | token accuracy |
| ner | WikiANN en | token classification (IOB2) | entity F1 (seqeval) |

Runs (every run gives each task the same budget of optimizer steps: a single-task run trains
`steps_per_task` steps on its task, a multi-task run `steps_per_task × 5` steps over all tasks):

- `st_full`: single-task full fine-tuning, one model per task (the baseline);
- `st_<adapter>`: a single-task adapter per task on the frozen backbone;
- `mtl_<method>_<sampling>`: one multi-task run per adapter method (`none` = full shared fine-tuning)
  and sampling strategy (`proportional`: p ∝ |D|; `temperature`: p ∝ |D|^(1/2)).

Every unit (a multi-task run, or one task of a single-task run) is one recipe, written to
`training_args/benchmarks/` by `--write-recipes` and runnable alone with `hf-mtl train <recipe>`; the
benchmark runs each unit in its own process (so peak memory is per run), writes its result under
`<output>/units/` as soon as it finishes, and rewrites the JSON, the markdown table and the plot after
every unit: a partial run still yields a table, and a rerun skips the units already done.

    python benchmarks/quality.py [--quick] [--data-dir DIR] [--model PATH_OR_ID] [--output DIR] [--jobs N] [--bf16]

Outputs in `--output`: `quality.json` (every number), `quality.md` (the table), `quality.png` (average
score vs trainable parameters per task).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/quality.py`: import the package from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import DATA, MODEL, RESULTS, ROOT
from benchmarks.report import pyplot


TASK_ORDER = ("sst2", "stsb", "rte", "upos", "ner")
# The task's primary metric (the key after `eval_<task>_`) and how the table names it.
PRIMARY_METRIC = {"sst2": "accuracy", "stsb": "pearson", "rte": "accuracy", "upos": "accuracy", "ner": "entity_f1"}
# Label sets given explicitly: inferring them from a small train slice could miss a rare tag of the dev set.
UPOS_TAGS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
             "SCONJ", "SYM", "VERB", "X"]
WIKIANN_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
METRIC_LABEL = {"sst2": "acc", "stsb": "Pearson", "rte": "acc", "upos": "acc", "ner": "entity F1"}


# ------------------------------------------------------------------------------------------------
# the suite


def local_tasks(data_dir: str) -> list[dict[str, Any]]:
    """The en5 tasks over a directory laid out as ../shared/data (same definitions as shared_en5.json)."""
    d = data_dir.rstrip("/")
    return [
        {"name": "sst2", "kind": "classification", "train_file": f"{d}/glue_sst2/train.tsv",
         "validation_file": f"{d}/glue_sst2/dev.tsv", "text_column": "sentence", "label_column": "label",
         "extra": {"quoting": "none"}},
        {"name": "stsb", "kind": "regression", "train_file": f"{d}/stsb_multi_mt/stsb-en-train.csv",
         "validation_file": f"{d}/stsb_multi_mt/stsb-en-dev.csv", "text_column": "sentence1",
         "text_pair_column": "sentence2", "label_column": "score",
         "extra": {"column_names": ["sentence1", "sentence2", "score"]}},
        {"name": "rte", "kind": "classification", "train_file": f"{d}/glue_rte/train.parquet",
         "validation_file": f"{d}/glue_rte/validation.parquet", "text_column": "sentence1",
         "text_pair_column": "sentence2", "label_column": "label"},
        {"name": "upos", "kind": "token_classification", "train_file": f"{d}/ud_english_ewt/en_ewt-ud-train.conllu",
         "validation_file": f"{d}/ud_english_ewt/en_ewt-ud-dev.conllu", "label_column": "upos",
         "labels": UPOS_TAGS},
        {"name": "ner", "kind": "token_classification", "train_file": f"{d}/wikiann/en/train.txt",
         "validation_file": f"{d}/wikiann/en/dev.txt", "label_column": "tags", "labels": WIKIANN_TAGS,
         "metrics": ["seqeval", "accuracy"]},
    ]


def hub_tasks() -> list[dict[str, Any]]:
    """The same tasks from the Hub by name (training_args/glue_hub.json, ud_ner_hub.json), for users elsewhere."""
    return [
        {"name": "sst2", "kind": "classification", "dataset_name": "nyu-mll/glue", "dataset_config": "sst2",
         "text_column": "sentence", "label_column": "label"},
        {"name": "stsb", "kind": "regression", "dataset_name": "PhilipMay/stsb_multi_mt", "dataset_config": "en",
         "validation_split": "dev", "text_column": "sentence1", "text_pair_column": "sentence2",
         "label_column": "similarity_score"},
        {"name": "rte", "kind": "classification", "dataset_name": "nyu-mll/glue", "dataset_config": "rte",
         "text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "label"},
        {"name": "upos", "kind": "token_classification", "dataset_name": "universal-dependencies/universal_dependencies",
         "dataset_config": "en_ewt", "text_column": "tokens", "label_column": "upos", "labels": UPOS_TAGS},
        {"name": "ner", "kind": "token_classification", "dataset_name": "unimelb-nlp/wikiann", "dataset_config": "en",
         "text_column": "tokens", "label_column": "ner_tags", "labels": WIKIANN_TAGS,
         "metrics": ["seqeval", "accuracy"]},
    ]


@dataclass
class Scale:
    """How much data and compute: train/dev slices per task (first N rows; None = the whole split)."""

    train_samples: dict[str, int]
    eval_samples: dict[str, int | None]
    steps_per_task: int
    batch_size: int
    max_seq_length: int
    eval_batch_size: int = 64


# Train slices are deliberately unequal (SST-2 and WikiANN are the big real datasets, RTE the small
# one) so that proportional and temperature sampling differ; dev sets are cut where noted.
FULL = Scale(
    train_samples={"sst2": 8000, "stsb": 2000, "rte": 1000, "upos": 2000, "ner": 4000},
    eval_samples={t: None for t in TASK_ORDER},  # the whole dev sets
    steps_per_task=30, batch_size=16, max_seq_length=128,
)
# --dev-cuts (the CPU tables in the README): scoring WikiANN's 10,000 dev sentences costs about as much CPU
# as a 100-step multi-task run, so these three are cut to their first rows
DEV_CUTS = {"stsb": 500, "upos": 500, "ner": 500}
QUICK = Scale(
    train_samples={t: 32 for t in TASK_ORDER},
    eval_samples={t: 16 for t in TASK_ORDER},
    steps_per_task=2, batch_size=4, max_seq_length=32, eval_batch_size=16,
)


@dataclass
class RunSpec:
    """One row of the table."""

    name: str
    multi_task: bool
    adapter_method: str
    freeze_backbone: bool
    learning_rate: float
    adapter_config: dict[str, Any] = field(default_factory=dict)
    sampling_strategy: str = "temperature"
    description: str = ""


ADAPTER_LR = 1e-3
# method -> (adapter_config, learning rate). Adapter options are each method's defaults unless noted.
MTL_METHODS: dict[str, tuple[dict[str, Any], float]] = {
    "lora": ({"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}, ADAPTER_LR),
    "bottleneck": ({"variant": "pfeiffer", "reduction_factor": 16}, ADAPTER_LR),
    "pals": ({}, ADAPTER_LR),
    "hyperformer": ({}, ADAPTER_LR),
    "ca_mtl": ({}, ADAPTER_LR),
    "prefix_tuning": ({"num_virtual_tokens": 20}, 5e-3),
    "none": ({}, 1e-4),  # full shared fine-tuning
}
FULL_FT_LR = 1e-4


def run_specs(quick: bool = False) -> list[RunSpec]:
    """All runs, in the order they are scheduled (most informative first, so a cut run still answers)."""
    single = [
        RunSpec("st_full", False, "none", False, FULL_FT_LR, description="single-task full fine-tuning (baseline)"),
        RunSpec("st_lora", False, "lora", True, ADAPTER_LR, dict(MTL_METHODS["lora"][0]),
                description="single-task LoRA adapter"),
    ]
    multi = []
    for sampling in ("temperature", "proportional"):
        for method in ("lora", "bottleneck", "none", "pals", "hyperformer", "prefix_tuning", "ca_mtl"):
            config, lr = MTL_METHODS[method]
            multi.append(RunSpec(f"mtl_{method}_{sampling}", True, method, method != "none", lr, dict(config),
                                 sampling, f"multi-task {method} ({sampling} sampling)"))
    if quick:  # a smoke test of every regime, not of every method
        keep = {"st_full", "st_lora", "mtl_lora_temperature", "mtl_bottleneck_proportional", "mtl_none_temperature"}
        return [r for r in [*single, *multi] if r.name in keep]
    # st_full, three multi-task runs, st_lora, the other methods, then the proportional runs (lora and
    # none first): a run cut short by time still answers the main question
    order = ["mtl_lora_temperature", "mtl_none_temperature", "mtl_bottleneck_temperature", "st_lora",
             "mtl_pals_temperature", "mtl_hyperformer_temperature", "mtl_prefix_tuning_temperature",
             "mtl_ca_mtl_temperature", "mtl_lora_proportional", "mtl_none_proportional"]
    by_name = {r.name: r for r in [*single, *multi]}
    rest = [r for r in multi if r.name not in order]
    return [single[0], *(by_name[n] for n in order), *rest]


# ------------------------------------------------------------------------------------------------
# recipes


def recipe_for(run: RunSpec, tasks: list[dict[str, Any]], scale: Scale, model: str, output_dir: str,
               seed: int = 42, bf16: bool = False, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """The MultiTaskTrainingArguments JSON of one unit (a multi-task run, or one task of a single-task run),
    with `override` (--override) merged in."""
    unit_tasks = []
    for task in tasks:
        task = copy.deepcopy(task)
        task["max_train_samples"] = scale.train_samples[task["name"]]
        if scale.eval_samples.get(task["name"]):
            task["max_eval_samples"] = scale.eval_samples[task["name"]]
        unit_tasks.append(task)
    steps = scale.steps_per_task * len(unit_tasks)
    recipe = {
        "output_dir": output_dir,
        "overwrite_output_dir": True,
        "model_name_or_path": model,
        "adapter_method": run.adapter_method,
        "adapter_config": run.adapter_config or None,
        "freeze_backbone": run.freeze_backbone,
        "sampling_strategy": run.sampling_strategy,
        "sampling_temperature": 2.0,
        "max_seq_length": scale.max_seq_length,
        "per_device_train_batch_size": scale.batch_size,
        "per_device_eval_batch_size": scale.eval_batch_size,
        "learning_rate": run.learning_rate,
        "max_steps": steps,
        "warmup_steps": 0.06,
        "weight_decay": 0.01,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": max(1, steps // 10),
        "seed": seed,
        "data_seed": seed,
        "report_to": "none",
        "disable_tqdm": True,
        "bf16": bf16,
        "tasks": unit_tasks,
    }
    if recipe["adapter_config"] is None:
        del recipe["adapter_config"]
    return apply_override(recipe, override)


def apply_override(recipe: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """`recipe` with `override` merged in (see --override); unknown task names are an error."""
    if not override:
        return recipe
    recipe = copy.deepcopy(recipe)
    for key, value in override.items():
        if key == "tasks":
            by_name = {t["name"]: t for t in recipe["tasks"]}
            for name, fields in value.items():
                if name not in TASK_ORDER:
                    raise SystemExit(f"--override: unknown task {name!r}; tasks: {list(TASK_ORDER)}")
                if name in by_name:  # a single-task unit holds one task only
                    by_name[name].update(fields)
        elif isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


def units_for(run: RunSpec, tasks: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(unit name, its tasks): one unit for a multi-task run, one per task for a single-task run."""
    if run.multi_task:
        return [(run.name, tasks)]
    return [(f"{run.name}__{t['name']}", [t]) for t in tasks]


# ------------------------------------------------------------------------------------------------
# one unit, in its own process


def run_unit(recipe_path: Path, result_path: Path, threads: int) -> dict[str, Any]:
    """Train + evaluate one recipe; write wall time, peak memory, metrics and parameter counts."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from hf_mtl.run import load_recipe, run_training

    args = load_recipe(recipe_path)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = run_training(args)
    wall = time.perf_counter() - start
    result = {
        "recipe": str(recipe_path),
        "wall_s": wall,
        "train_runtime_s": out["train"].get("train_runtime"),
        # CPU seconds of this process: on a shared machine wall time grows with the others' load, this does not
        "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "train": out["train"],
        "eval": out.get("eval", {}),
        "trainable_parameters": out["trainable_parameters"],
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(result_path)
    return result


# ------------------------------------------------------------------------------------------------
# aggregation: JSON, markdown table, plot


def _per_task_params(unit: dict[str, Any], task: str) -> dict[str, float]:
    """Trainable parameters that serve `task`: its own + the shared ones divided among the unit's tasks."""
    params = unit["trainable_parameters"]
    n_tasks = len(params["tasks"])
    own = params["tasks"][task]["total"]
    shared = params["shared"]["total"]
    return {"own": own, "shared": shared, "per_task": own + shared / n_tasks, "total": own + shared}


def aggregate(runs: list[RunSpec], unit_dir: Path, scale: Scale, meta: dict[str, Any]) -> dict[str, Any]:
    """Collect every finished unit into one record per run (runs with missing tasks are marked partial)."""
    rows = []
    for run in runs:
        tasks_done: dict[str, Any] = {}
        units = [f"{run.name}"] if run.multi_task else [f"{run.name}__{t}" for t in TASK_ORDER]
        results = {u: json.loads((unit_dir / f"{u}.json").read_text()) for u in units if (unit_dir / f"{u}.json").exists()}
        if not results:
            continue
        wall = sum(r["wall_s"] for r in results.values())
        cpu = sum(r["cpu_s"] for r in results.values())
        peak = max(r["peak_rss_mb"] for r in results.values())
        peak_gpu = [r["peak_gpu_mb"] for r in results.values() if r.get("peak_gpu_mb") is not None]
        params, backbone, total_trainable = [], None, 0
        for result in results.values():
            backbone = result["trainable_parameters"]["backbone_parameters"]
            p = result["trainable_parameters"]
            total_trainable += p["shared"]["total"] + sum(t["total"] for t in p["tasks"].values())
            for task in p["tasks"]:
                key = f"eval_{task}_{PRIMARY_METRIC[task]}"
                score = result["eval"].get(key)
                tasks_done[task] = {"score": score, "metrics": {k: v for k, v in result["eval"].items()
                                                                 if k.startswith(f"eval_{task}_")}}
                params.append(_per_task_params(result, task)["per_task"])
        scores = [tasks_done[t]["score"] for t in TASK_ORDER if t in tasks_done]
        complete = all(t in tasks_done for t in TASK_ORDER)
        per_task = sum(params) / len(params)
        rows.append({
            "run": run.name, "description": run.description, "multi_task": run.multi_task,
            "adapter_method": run.adapter_method, "sampling": run.sampling_strategy if run.multi_task else None,
            "learning_rate": run.learning_rate, "adapter_config": run.adapter_config,
            "complete": complete, "tasks": tasks_done,
            "average": sum(scores) / len(scores) if complete else None,
            "trainable_per_task": per_task, "trainable_per_task_pct": 100 * per_task / backbone,
            "trainable_total": total_trainable, "backbone_parameters": backbone,
            "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "peak_gpu_mb": max(peak_gpu) if peak_gpu else None,
            "device": next(iter(results.values()))["device"],
        })
    return {"meta": meta, "scale": asdict(scale), "runs": rows}


def _fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def markdown_table(report: dict[str, Any]) -> str:
    scale = report["scale"]
    head = ["run"] + [f"{t} {METRIC_LABEL[t]}" for t in TASK_ORDER] + [
        "average", "trainable / task", "% of backbone", "CPU time", "wall time", "peak RSS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["runs"]:
        cells = [row["run"]]
        for task in TASK_ORDER:
            score = row["tasks"].get(task, {}).get("score")
            cells.append("–" if score is None else f"{100 * score:.1f}")
        cells.append("–" if row["average"] is None else f"**{100 * row['average']:.1f}**")
        cells += [_fmt_params(row["trainable_per_task"]), f"{row['trainable_per_task_pct']:.2f}%",
                  f"{row['cpu_s'] / 60:.1f} min", f"{row['wall_s'] / 60:.1f} min", f"{row['peak_rss_mb'] / 1024:.2f} GiB"]
        lines.append("| " + " | ".join(cells) + " |")
    cut = ", ".join(f"{t} first {n}" for t, n in scale["eval_samples"].items() if n)
    notes = [
        "",
        f"Scores ×100 on the dev sets ({'cut to: ' + cut + '; otherwise full' if cut else 'full'}). "
        f"Train slices (first rows): {', '.join(f'{t} {n}' for t, n in scale['train_samples'].items())}. "
        f"{scale['steps_per_task']} optimizer steps per task, batch {scale['batch_size']}, max length "
        f"{scale['max_seq_length']}. `trainable / task`: the task's own weights (head + adapter) plus the shared "
        f"trainable weights divided by the number of tasks that share them; % of the backbone's "
        f"{_fmt_params(report['runs'][0]['backbone_parameters']) if report['runs'] else ''} weights. "
        f"CPU and wall time: all of a run's processes added up (load, train, evaluate); wall time depends on the "
        f"machine's other load, CPU time much less; peak RSS: the largest process.",
    ]
    return "\n".join(lines + notes) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for row in report["runs"]:
        if row["average"] is None:
            continue
        marker = "o" if row["multi_task"] else "s"
        color = "tab:red" if row["run"] == "st_full" else ("tab:blue" if row["multi_task"] else "tab:green")
        ax.scatter(row["trainable_per_task_pct"], 100 * row["average"], marker=marker, color=color)
        ax.annotate(row["run"].replace("mtl_", "").replace("_temperature", " T").replace("_proportional", " P"),
                    (row["trainable_per_task_pct"], 100 * row["average"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters per task (% of the backbone, log scale)")
    ax.set_ylabel("average dev score (×100)")
    ax.set_title("en5 on all-MiniLM-L6-v2: squares single-task, circles multi-task (T temperature, P proportional)",
                 fontsize=8)
    ax.axvline(3.0, color="grey", linestyle=":", linewidth=1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "quality.json").write_text(json.dumps(report, indent=1, default=float))
    (output / "quality.md").write_text(markdown_table(report))
    if any(r["average"] is not None for r in report["runs"]):
        plot(report, output / "quality.png")


# ------------------------------------------------------------------------------------------------
# driver


def check_finite(report: dict[str, Any]) -> None:
    for row in report["runs"]:
        for task, value in row["tasks"].items():
            if value["score"] is None or not math.isfinite(value["score"]):
                raise ValueError(f"run {row['run']}: task {task} has no finite score ({value['score']!r})")


def _claimed(claim: Path) -> bool:
    """True while the process named in a unit's claim file is alive."""
    try:
        os.kill(int(claim.read_text()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def default_store_dir(output: Path) -> Path:
    """Where the units save their trained stores without `--store-dir` (full fine-tuning saves the whole backbone):
    for an output folder in the checkout (the committed results), under its git-ignored `outputs/`; for one
    elsewhere (a temporary folder), inside it (`<output>/stores`), so such a run writes nothing into the checkout."""
    if output.resolve().is_relative_to(ROOT):
        return ROOT / "outputs" / f"{output.name}_stores"
    return output / "stores"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny slices, 2 steps per task, 5 runs, in-process: a CI smoke test")
    parser.add_argument("--data-dir", default=None, help="a folder laid out as ../shared/data (default: it, when it exists; else the Hub)")
    parser.add_argument("--model", default=MODEL, help="backbone folder or Hub id")
    parser.add_argument("--output", default=None, help="output folder (default benchmarks/results/quality[_quick])")
    parser.add_argument("--runs", nargs="*", default=None, help="only these runs (names as in the table)")
    parser.add_argument("--jobs", type=int, default=1, help="units run at once, each in its own process (0: one after another in this process; "
                             "then CPU time and peak memory are this process's running totals)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per unit process (0: torch's default)")
    parser.add_argument("--steps-per-task", type=int, default=None, help="override the scale's optimizer steps per task")
    parser.add_argument("--dev-cuts", action="store_true",
                        help=f"score {', '.join(f'{t} on its first {n}' for t, n in DEV_CUTS.items())} dev rows instead of "
                             "the whole dev sets (the README's CPU tables; WikiANN's 10,000 dev sentences alone cost about as "
                             "much CPU as a 100-step multi-task run); use another --output")
    parser.add_argument("--full-dev", action="store_true", help="the whole dev sets (the default; kept for older commands)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sampling", default=None,
                        help="sampling strategy of every multi-task run (default: as its name says); use another --output")
    parser.add_argument("--adapter-lr", type=float, default=None,
                        help="learning rate of every frozen-backbone run (default: each method's, see MTL_METHODS); "
                             "use another --output, the run names do not change")
    parser.add_argument("--override", type=json.loads, default=None, metavar="JSON",
                        help="merged into every unit's recipe (dicts merge key by key; `tasks` as {name: {field: value}} "
                             "changes those tasks), e.g. '{\"adapter_config\": {\"reduction_factor\": 4}}' or "
                             "'{\"tasks\": {\"rte\": {\"loss_weight\": 2}}}'; use another --output, the run names do not change")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (through Accelerate) when a GPU is present")
    parser.add_argument("--write-recipes", default=None, metavar="DIR", help="only write every unit's recipe into DIR")
    parser.add_argument("--store-dir", default=None, help="where each unit saves its trained store (default: outputs/<output name>_stores for an "
                             "output folder in the checkout, else <output>/stores)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the JSON, table and plot from finished units")
    parser.add_argument("--unit", nargs=2, metavar=("RECIPE", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.unit:
        run_unit(Path(args.unit[0]), Path(args.unit[1]), args.threads)
        return {}

    scale = copy.deepcopy(QUICK if args.quick else FULL)
    if args.steps_per_task:
        scale.steps_per_task = args.steps_per_task
    if args.dev_cuts and args.full_dev:
        parser.error("--dev-cuts and --full-dev contradict each other: give one")
    if args.dev_cuts and not args.quick:
        scale.eval_samples = {t: DEV_CUTS.get(t) for t in TASK_ORDER}
    data_dir = args.data_dir or (str(DATA) if DATA.is_dir() else None)
    if args.data_dir and not Path(args.data_dir).is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    tasks = local_tasks(data_dir) if data_dir else hub_tasks()
    import torch

    bf16 = bool(args.bf16 and torch.cuda.is_available())
    runs = run_specs(args.quick)
    if args.runs:
        unknown = sorted(set(args.runs) - {r.name for r in runs})
        if unknown:
            parser.error(f"unknown run(s) {unknown}; runs: {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in args.runs]
    for run in runs:
        if args.adapter_lr is not None and run.freeze_backbone:
            run.learning_rate = args.adapter_lr
        if args.sampling and run.multi_task:
            run.sampling_strategy = args.sampling

    if args.write_recipes:
        out = Path(args.write_recipes)
        out.mkdir(parents=True, exist_ok=True)
        for run in runs:
            for unit, unit_tasks in units_for(run, tasks):
                recipe = recipe_for(run, unit_tasks, scale, args.model, f"outputs/quality/{unit}", args.seed, False,
                                    args.override)
                (out / f"{unit}.json").write_text(json.dumps(recipe, indent=2) + "\n")
        print(f"wrote {sum(len(units_for(r, tasks)) for r in runs)} recipes to {out}")
        return {}

    output = Path(args.output or RESULTS / ("quality_quick" if args.quick else "quality"))
    unit_dir, recipe_dir = output / "units", output / "recipes"
    store_dir = Path(args.store_dir) if args.store_dir else default_store_dir(output)
    for d in (unit_dir, recipe_dir, store_dir):
        d.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "data": data_dir or "Hugging Face Hub", "quick": args.quick, "seed": args.seed,
            "override": args.override, "adapter_lr": args.adapter_lr, "sampling": args.sampling,
            "bf16": bf16, "threads_per_unit": args.threads, "jobs": args.jobs, "python": sys.version.split()[0],
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    saved = output / "quality.json"
    defining = (args.steps_per_task, args.dev_cuts, args.full_dev, args.adapter_lr, args.override, args.sampling)
    if args.report_only and saved.exists() and not any(defining):  # rebuild with the settings the units ran with
        previous = json.loads(saved.read_text())
        meta = {k: v for k, v in previous.get("meta", meta).items() if k != "updated"}
        if previous.get("scale"):
            scale = Scale(**previous["scale"])

    pending = []
    for run in [] if args.report_only else runs:
        for unit, unit_tasks in units_for(run, tasks):
            result = unit_dir / f"{unit}.json"
            if result.exists() or _claimed(unit_dir / f"{unit}.claim"):
                continue
            recipe_path = recipe_dir / f"{unit}.json"
            recipe = recipe_for(run, unit_tasks, scale, args.model, str(store_dir / unit), args.seed, bf16, args.override)
            recipe_path.write_text(json.dumps(recipe, indent=2) + "\n")
            pending.append((unit, recipe_path, result))

    lock = threading.Lock()

    def refresh() -> dict[str, Any]:
        with lock:  # units finish in several threads
            report = aggregate(runs, unit_dir, scale, {**meta, "updated": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
            write_outputs(report, output)
        return report

    def one(item: tuple[str, Path, Path]) -> None:
        unit, recipe_path, result = item
        print(f"[quality] start {unit}", flush=True)
        if args.jobs == 0:
            run_unit(recipe_path, result, args.threads)
        else:
            log = output / "logs" / f"{unit}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as handle:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads),
                       "--unit", str(recipe_path), str(result)]
                # this checkout's hf_mtl, installed or not
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
                child = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
                claim = unit_dir / f"{unit}.claim"  # another driver started on the same output skips this unit
                claim.write_text(str(child.pid))
                code = child.wait()
                claim.unlink(missing_ok=True)
            if code:
                print(f"[quality] FAILED {unit} (exit {code}); see {log}", flush=True)
                return
        print(f"[quality] done {unit}", flush=True)
        refresh()

    if args.jobs <= 1:
        for item in pending:
            one(item)
    else:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(one, pending))
    report = refresh()
    print(markdown_table(report))
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
