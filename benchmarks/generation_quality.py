"""Text-to-text multi-task quality on a real small LM: per-task adapters in one run vs separate single-task runs.

Question: on SmolLM2-135M-Instruct, does one multi-task run with an adapter per task match separate single-task
runs, at what cost, and which method is best per task type (classification as generation vs translation)?

Suite `t2t5` (from ../shared/data), every task text-to-text with the same prompt template in every run:

| task | data (train / eval) | target | metric |
| --- | --- | --- | --- |
| sst2 | GLUE SST-2 train / dev | `negative` or `positive` | accuracy |
| rte | GLUE RTE train / validation | `yes` (entailment) or `no` | accuracy |
| trec | TREC train / test (TREC has no dev set) | one of 6 coarse class words | accuracy |
| stsb | STS-B en train / dev | the score rounded to 0.2 (`3.4`), as Hyperformer writes it | Pearson, Spearman |
| en_de | stsb_multi_mt's row-parallel en and de `sentence1` | the German sentence | chrF, BLEU (sacrebleu) |

An output is read up to its first line break (a prompted base model runs on past its answer; trained adapters end
with EOS); a classification output counts when its first line is the class word; an STS-B output that does not
parse as a number counts as the training slice's mean score, and the number of such outputs is reported.

Runs (every trained run has the same budget: `--steps` optimizer steps of `--batch` rows, at most
`max_seq_length` tokens, the learning rate of its method in RUNS; so a multi-task run gives each task about a fifth
of the steps that a single-task run gives its one task, and the five single-task runs together cost five times one
multi-task run. Training rows are a seeded sample of each train split, eval rows the first rows of each eval split,
sizes in FULL):

- `zero_shot`, `four_shot`: the untrained model prompted with the same templates (4-shot: 4 fixed training
  examples, one per class where there are classes, before the query);
- `st_lora`: one LoRA per task, each trained alone (5 runs per seed: 5 x the multi-task run's compute);
- `mtl_lora`: one multi-task run, one LoRA per task, temperature sampling (T=2);
- `mtl_shared_lora`: one multi-task run, ONE LoRA for all tasks, the task told by its prompt (T5-style task
  prefixes); its training rows are drawn per task in the temperature-sampling proportions;
- `mtl_bottleneck`, `mtl_prefix_tuning`, `mtl_hyperformer++`: the other adapter families, per task, temperature;
- `mtl_full_ft`: full fine-tuning of the shared model on all tasks (temperature sampling).
The headline runs (`st_lora`, `mtl_lora`, `mtl_shared_lora`) run with 3 seeds (`--seeds`); the others with the first.

Every unit (a run, or one task of `st_lora`, for one seed) runs in its own process (peak memory is that
process's peak RSS), writes its result under `<work>/units/` as soon as it finishes, and the JSON, the markdown
table and the plot are rewritten after every unit: a cut run still yields a table, and a rerun skips done units.

    python benchmarks/generation_quality.py                # SmolLM2-135M-Instruct (offline copy), CPU, 2 threads
    python benchmarks/generation_quality.py --quick        # a tiny random Llama, a few rows and steps (CI smoke)

Outputs in `--out` (default benchmarks/results/generation_quality): results.json, table.md, plot.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/generation_quality.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import DATA, RESULTS, ROOT
from benchmarks.generation_speed import tiny_model
from benchmarks.report import fmt, pyplot, write_json


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASKS = ("sst2", "rte", "trec", "stsb", "en_de")
PRIMARY = {"sst2": "accuracy", "rte": "accuracy", "trec": "accuracy", "stsb": "pearson", "en_de": "chrf"}
SECONDARY = {"stsb": "spearmanr", "en_de": "bleu"}
TREC_WORDS = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human", "LOC": "location",
              "NUM": "number"}
# The task definitions (hf_mtl Task fields) of the suite; the data files are filled in by `prepare_data`.
SUITE: dict[str, dict[str, Any]] = {
    "sst2": {"prompt_template": "Review: {sentence}\nIs this review positive or negative? Answer:",
             "label_column": "label", "label_words": {"negative": "negative", "positive": "positive"},
             "metrics": ["accuracy"], "generation": {"max_new_tokens": 3}},
    "rte": {"prompt_template": "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise entail the hypothesis? "
                               "Answer yes or no:",
            "label_column": "label", "label_words": {"entailment": "yes", "not_entailment": "no"},
            "metrics": ["accuracy"], "generation": {"max_new_tokens": 3}},
    "trec": {"prompt_template": "Question: {question}\nDoes the question ask for an abbreviation, a description, an "
                                "entity, a human, a location or a number? Answer:",
             "label_column": "label", "label_words": {k: v for k, v in TREC_WORDS.items()},
             "metrics": ["accuracy"], "generation": {"max_new_tokens": 4}},
    "stsb": {"prompt_template": "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nHow similar are the two sentences, "
                                "from 0 to 5? Answer:",
             "target_column": "target", "metrics": ["pearson", "spearmanr"], "generation": {"max_new_tokens": 4}},
    "en_de": {"prompt_template": "Translate English to German.\nEnglish: {english}\nGerman:",
              "target_column": "target", "metrics": ["chrf", "bleu"], "generation": {"max_new_tokens": 48}},
}


@dataclass
class Scale:
    """How much data and compute: train rows sampled per task, eval rows (the first N) per task, steps per run."""

    train_rows: dict[str, int]
    eval_rows: dict[str, int]
    steps: int
    batch: int
    max_seq_length: int
    eval_batch: int = 32


FULL = Scale(train_rows={"sst2": 4000, "rte": 2490, "trec": 2000, "stsb": 2000, "en_de": 2000},
             eval_rows={"sst2": 100, "rte": 100, "trec": 100, "stsb": 100, "en_de": 50},
             steps=60, batch=8, max_seq_length=192)
QUICK = Scale(train_rows={t: 24 for t in TASKS}, eval_rows={t: 6 for t in TASKS}, steps=2, batch=4,
              max_seq_length=448, eval_batch=8)


@dataclass
class RunSpec:
    """One row of the table."""

    name: str
    method: str  # hf_mtl adapter_method; "prompt" = no training
    learning_rate: float = 0.0
    adapter_config: dict[str, Any] = field(default_factory=dict)
    single_task: bool = False
    shared: bool = False  # one adapter for every task (the prompt tells the task)
    shots: int = 0  # prompting runs: demonstrations before the query
    headline: bool = False  # run with every seed
    description: str = ""


LORA = {"r": 8, "lora_alpha": 16}
RUNS: list[RunSpec] = [
    RunSpec("zero_shot", "prompt", description="untrained model, zero-shot prompt"),
    RunSpec("four_shot", "prompt", shots=4, description="untrained model, 4 demonstrations"),
    RunSpec("st_lora", "lora", 2e-3, LORA, single_task=True, headline=True,
            description="one LoRA per task, each trained alone"),
    RunSpec("mtl_lora", "lora", 2e-3, LORA, headline=True, description="one run, one LoRA per task"),
    RunSpec("mtl_shared_lora", "lora", 2e-3, LORA, shared=True, headline=True,
            description="one run, one LoRA for all tasks (task prefixes)"),
    RunSpec("mtl_bottleneck", "bottleneck", 1e-3, {"variant": "pfeiffer", "reduction_factor": 16},
            description="one run, a Pfeiffer bottleneck per task"),
    RunSpec("mtl_prefix_tuning", "prefix_tuning", 5e-3, {"num_virtual_tokens": 20},
            description="one run, 20 prefix tokens per task"),
    RunSpec("mtl_hyperformer++", "hyperformer++", 1e-3, {}, description="one run, adapters from a shared hypernetwork"),
    RunSpec("mtl_full_ft", "none", 1e-4, {}, description="one run, the whole model fine-tuned, shared by all tasks"),
]
SHARED_TASK = "t2t"  # the shared run's one task: prompts rendered with each task's template


# ------------------------------------------------------------------------------------------------ data
def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_splits(data_dir: Path) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(train rows, eval rows) per task, in the columns the SUITE templates name, read from ../shared/data."""
    import csv

    import pandas as pd

    def sst2(name: str) -> list[dict[str, Any]]:
        with open(data_dir / "glue_sst2" / name, encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [{"sentence": r["sentence"].strip(), "label": ["negative", "positive"][int(r["label"])]}
                    for r in reader]

    def rte(name: str) -> list[dict[str, Any]]:
        frame = pd.read_parquet(data_dir / "glue_rte" / name)
        return [{"premise": a, "hypothesis": b, "label": ["entailment", "not_entailment"][int(y)]}
                for a, b, y in zip(frame.sentence1, frame.sentence2, frame.label)]

    def trec(name: str) -> list[dict[str, Any]]:
        lines = (data_dir / "trec" / name).read_text(encoding="iso-8859-1").splitlines()
        return [{"question": line.split(" ", 1)[1].strip(), "label": line.split(":", 1)[0]} for line in lines if line]

    def sts(lang: str, split: str) -> list[list[str]]:
        with open(data_dir / "stsb_multi_mt" / f"stsb-{lang}-{split}.csv", encoding="utf-8") as f:
            return list(csv.reader(f))

    def stsb(split: str) -> list[dict[str, Any]]:  # the score as text, rounded to 0.2 (Hyperformer's STS-B)
        return [{"sentence1": a, "sentence2": b, "target": f"{round(float(s) * 5) / 5:.1f}"} for a, b, s in sts("en", split)]

    def en_de(split: str) -> list[dict[str, Any]]:
        return [{"english": en[0], "target": de[0]} for en, de in zip(sts("en", split), sts("de", split))]

    return {"sst2": (sst2("train.tsv"), sst2("dev.tsv")),
            "rte": (rte("train.parquet"), rte("validation.parquet")),
            "trec": (trec("TREC.train.iso-8859-1"), trec("TREC.test.iso-8859-1")),
            "stsb": (stsb("train"), stsb("dev")),
            "en_de": (en_de("train"), en_de("dev"))}


def task_objects() -> dict[str, Any]:
    """The suite's hf_mtl Tasks (what scores every run's outputs, whatever the run trained)."""
    from hf_mtl import Task

    return {name: Task(name, kind="causal_lm", **spec) for name, spec in SUITE.items()}


def reference(task: Any, row: dict[str, Any]) -> str:
    """What an output is scored against: the label for label-word tasks, else the target text."""
    return str(row[task.label_column] if task.label_words else row[task.target_column])


def demonstrations(task: Any, train: list[dict[str, Any]], shots: int) -> str:
    """`shots` training rows as answered prompts, one per class in turn where the task has classes."""
    from hf_mtl.data.text2text import build_prompt, build_target

    chosen: list[dict[str, Any]] = []
    if task.label_words:
        classes = list(task.label_words)
        while len(chosen) < shots:
            wanted = classes[len(chosen) % len(classes)]
            chosen.append(next(r for r in train if r[task.label_column] == wanted and r not in chosen))
    else:
        chosen = train[:shots]
    return "".join(f"{build_prompt(task, r)} {build_target(task, r)}\n\n" for r in chosen)


def prepare_data(data_dir: Path, work: Path, scale: Scale) -> dict[str, Any]:
    """Write each task's train sample and eval cut as JSONL under `work/data`; returns what the runs need:
    file paths, the rendered prompts of the shared and few-shot runs, and STS-B's training mean."""
    from hf_mtl.data.text2text import build_prompt, build_target

    tasks = task_objects()
    out: dict[str, Any] = {"files": {}, "stsb_train_mean": None, "sizes": {}}
    rendered_train: dict[str, list[dict[str, str]]] = {}
    for name, (whole, dev) in read_splits(data_dir).items():
        train = random.Random(0).sample(whole, min(scale.train_rows[name], len(whole)))
        dev = dev[: scale.eval_rows[name]]
        task = tasks[name]
        shots = demonstrations(task, train + whole, 4)
        for row in dev:  # the shared run's and the few-shot run's prompts
            row["prompt"] = build_prompt(task, row)
            row["prompt_4shot"] = shots + row["prompt"]
        folder = work / "data" / name
        _write_jsonl(folder / "train.jsonl", train)
        _write_jsonl(folder / "eval.jsonl", dev)
        out["files"][name] = {"train": str(folder / "train.jsonl"), "eval": str(folder / "eval.jsonl")}
        out["sizes"][name] = {"train": len(train), "eval": len(dev)}
        rendered_train[name] = [{"prompt": build_prompt(task, r), "target": build_target(task, r)} for r in train]
        if name == "stsb":
            out["stsb_train_mean"] = statistics.fmean(float(r["target"]) for r in train)
    shared = shared_rows(rendered_train, scale.steps * scale.batch)
    _write_jsonl(work / "data" / SHARED_TASK / "train.jsonl", shared)
    out["files"][SHARED_TASK] = {"train": str(work / "data" / SHARED_TASK / "train.jsonl")}
    return out


def shared_rows(rendered: dict[str, list[dict[str, str]]], total: int, temperature: float = 2.0) -> list[dict[str, str]]:
    """`total` rows for the shared adapter, drawn per task in the temperature strategy's proportions
    (p_t ∝ |D_t|^(1/T), largest remainders), each task's rows in turn from its sample, shuffled (seeded)."""
    weights = {name: len(rows) ** (1 / temperature) for name, rows in rendered.items()}
    shares = {name: total * w / sum(weights.values()) for name, w in weights.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    # largest remainders: the counts add up to `total` exactly
    for name in sorted(shares, key=lambda n: counts[n] - shares[n])[: total - sum(counts.values())]:
        counts[name] += 1
    rows: list[dict[str, str]] = []
    for name, task_rows in rendered.items():
        rows += [task_rows[i % len(task_rows)] for i in range(counts[name])]
    random.Random(0).shuffle(rows)
    return rows


# ------------------------------------------------------------------------------------------------ units
def units(runs: list[RunSpec], seeds: list[int]) -> list[dict[str, Any]]:
    """Every unit to run, most informative first (a run cut by time still answers the headline question)."""
    out = []
    for seed_index, seed in enumerate(seeds):
        for run in runs:
            if seed_index and not run.headline:
                continue
            if run.method == "prompt" and seed_index:
                continue
            tasks = [[t] for t in TASKS] if run.single_task else [list(TASKS)]
            for group in tasks:
                suffix = f"__{group[0]}" if run.single_task else ""
                out.append({"name": f"{run.name}{suffix}__seed{seed}", "run": run.name, "seed": seed, "tasks": group})
    return out


def recipe(run: RunSpec, unit: dict[str, Any], data: dict[str, Any], scale: Scale, model: str,
           output_dir: str) -> dict[str, Any]:
    """The hf_mtl recipe of a trained unit (no validation files: the unit scores its own generations)."""
    if run.shared:
        tasks = [{"name": SHARED_TASK, "kind": "causal_lm", "train_file": data["files"][SHARED_TASK]["train"],
                  "prompt_template": "{prompt}", "target_column": "target"}]
    else:
        tasks = [{"name": t, "kind": "causal_lm", "train_file": data["files"][t]["train"], **SUITE[t]}
                 for t in unit["tasks"]]
    out = {
        "output_dir": output_dir, "overwrite_output_dir": True, "model_name_or_path": model,
        "adapter_method": run.method, "freeze_backbone": run.method != "none",
        "sampling_strategy": "temperature", "sampling_temperature": 2.0,
        "max_seq_length": scale.max_seq_length, "per_device_train_batch_size": scale.batch,
        "learning_rate": run.learning_rate, "max_steps": scale.steps, "warmup_steps": 0.06, "weight_decay": 0.0,
        "eval_strategy": "no", "save_strategy": "no", "logging_steps": max(1, scale.steps // 4),
        "seed": unit["seed"], "data_seed": unit["seed"], "report_to": "none", "disable_tqdm": True,
        "tasks": tasks,
    }
    if run.adapter_config:
        out["adapter_config"] = run.adapter_config
    return out


def run_unit(spec_path: Path, result_path: Path) -> dict[str, Any]:
    """Train (unless a prompting run) and score one unit; write its result JSON (atomically)."""
    import torch

    from hf_mtl import MultiTaskModel, Task
    from hf_mtl.run import load_recipe, run_training

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    run = next(r for r in RUNS if r.name == spec["unit"]["run"])
    start = time.perf_counter()
    train_metrics: dict[str, Any] = {}
    params: dict[str, Any] | None = None
    if run.method == "prompt":
        tasks = [Task(SHARED_TASK, kind="causal_lm", prompt_template="{prompt}", target_column="target")]
        model = MultiTaskModel.from_backbone(spec["model"], tasks, adapter_method="none")
    else:
        store = Path(spec["recipe"]["output_dir"])
        recipe_path = store.with_suffix(".recipe.json")
        recipe_path.parent.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(json.dumps(spec["recipe"], indent=1))
        out = run_training(load_recipe(recipe_path))
        train_metrics, params = out["train"], out["trainable_parameters"]
        model = MultiTaskModel.from_pretrained(str(store))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = score(model, run, spec)
    eval_s = time.perf_counter() - start
    if run.method != "prompt":
        shutil.rmtree(spec["recipe"]["output_dir"], ignore_errors=True)  # a full-FT store is 0.5 GB
    result = {"unit": spec["unit"], "train_s": train_s, "eval_s": eval_s, "scores": scores,
              "train_loss": train_metrics.get("train_loss"), "trainable_parameters": params,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              # CPU seconds of the unit's process: wall time grows with the machine's other load, this much less
              "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
              "device": f"cpu ({torch.get_num_threads()} threads)"}
    write_json(result_path.with_suffix(".tmp"), result).replace(result_path)
    return result


def score(model: Any, run: RunSpec, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Generate every eval row of the unit's tasks (greedy) and score the first lines of the outputs."""
    from hf_mtl.generation import generate
    from hf_mtl.generation_metrics import compute_generation_metrics, normalize_output

    tasks = task_objects()
    out = {}
    for name in spec["unit"]["tasks"]:
        start = time.perf_counter()
        task, rows = tasks[name], _read_jsonl(Path(spec["data"]["files"][name]["eval"]))
        if run.method == "prompt" or run.shared:
            column = "prompt_4shot" if run.shots else "prompt"
            inputs, adapter = [{"prompt": r[column]} for r in rows], SHARED_TASK
        else:
            inputs, adapter = [{k: r[k] for k in r if not k.startswith("prompt")} for r in rows], name
        texts = generate(model, inputs, task=adapter, batch_size=spec["eval_batch"], do_sample=False, num_beams=1,
                         max_new_tokens=task.generation["max_new_tokens"])
        outputs = [normalize_output(t) if task.label_words else (t.strip().splitlines() or [""])[0].strip()
                   for t in texts]
        metrics = compute_generation_metrics(task, outputs, [reference(task, r) for r in rows],
                                             score_fallback=spec["data"]["stsb_train_mean"])
        out[name] = {"metrics": metrics, "seconds": time.perf_counter() - start, "examples": [{"output": o, "reference": reference(task, r)}
                                                      for o, r in list(zip(outputs, rows))[:3]]}
    return out


def launch(unit: dict[str, Any], spec: dict[str, Any], work: Path, inline: bool) -> dict[str, Any]:
    """Run one unit in its own process (or in this one: `--inline`, the quick mode)."""
    spec_path = work / "units" / f"{unit['name']}.spec.json"
    result_path = work / "units" / f"{unit['name']}.json"
    write_json(spec_path, spec)
    if inline:
        return run_unit(spec_path, result_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--unit", str(spec_path),
                           "--result", str(result_path)], env=env, cwd=str(work), capture_output=True, text=True)
    (work / "units" / f"{unit['name']}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"unit {unit['name']} failed (rc {done.returncode}); its log: "
                           f"{work / 'units' / (unit['name'] + '.log')}\n{done.stderr[-3000:]}")
    return json.loads(result_path.read_text())


# ------------------------------------------------------------------------------------------------ report
def per_task_params(result: dict[str, Any], run: RunSpec, task: str) -> float | None:
    """Trainable parameters serving one task: its own, plus the shared ones divided among the run's tasks."""
    params = result["trainable_parameters"]
    if params is None:
        return 0.0
    shared = params["shared"]["total"]
    if run.shared:
        return (params["tasks"][SHARED_TASK]["total"] + shared) / len(TASKS)
    return params["tasks"][task]["total"] + shared / len(params["tasks"])


def aggregate(results: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """One record per run: per task the primary (and secondary) metric per seed, mean and spread; the average of
    the primary metrics; parameters per task; wall time (training + scoring, all units of one seed; the median over
    seeds); peak memory."""
    runs = []
    for run in RUNS:
        mine = [r for r in results if r["unit"]["run"] == run.name]
        if not mine:
            continue
        seeds = sorted({r["unit"]["seed"] for r in mine})
        tasks: dict[str, Any] = {}
        for task in TASKS:
            done = {r["unit"]["seed"]: r for r in mine if task in r["scores"]}
            if not done:
                continue
            primary = [done[s]["scores"][task]["metrics"][PRIMARY[task]] for s in sorted(done)]
            record = {"seeds": sorted(done), PRIMARY[task]: primary, "mean": statistics.fmean(primary),
                      "min": min(primary), "max": max(primary),
                      "params_per_task": per_task_params(next(iter(done.values())), run, task),
                      "examples": next(iter(done.values()))["scores"][task]["examples"]}
            if task in SECONDARY:
                values = [done[s]["scores"][task]["metrics"][SECONDARY[task]] for s in sorted(done)]
                record[SECONDARY[task]] = values
                record["secondary_mean"] = statistics.fmean(values)
            if task == "stsb":
                record["unparsed"] = [done[s]["scores"][task]["metrics"]["unparsed"] for s in sorted(done)]
            tasks[task] = record
        complete = len(tasks) == len(TASKS)
        by_seed = {s: [r for r in mine if r["unit"]["seed"] == s] for s in seeds}
        averages = []
        for s in seeds:
            values = [r["scores"][t]["metrics"][PRIMARY[t]] for r in by_seed[s] for t in r["scores"]]
            if len(values) == len(TASKS):
                averages.append(statistics.fmean(values))
        runs.append({
            "run": run.name, "description": run.description, "method": run.method, "seeds": seeds,
            "learning_rate": run.learning_rate or None, "complete": complete, "tasks": tasks,
            "average": statistics.fmean(averages) if averages else None, "average_per_seed": averages,
            "params_per_task": statistics.fmean(t["params_per_task"] for t in tasks.values()) if tasks else None,
            # medians over seeds: a seed whose units shared the machine with other jobs does not set the figure
            "wall_s_per_seed": statistics.median(sum(r["train_s"] + r["eval_s"] for r in units)
                                                 for units in by_seed.values()),
            "train_s_per_seed": statistics.median(sum(r["train_s"] for r in units) for units in by_seed.values()),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
        })
    return {**meta, "runs": runs}


def render_table(report: dict[str, Any]) -> str:
    scale = report["scale"]
    lines = [f"t2t5 on {report['model']}, {report['device']}: {scale['steps']} steps x {scale['batch']} rows per "
             f"trained run (max {scale['max_seq_length']} tokens), eval rows {scale['eval_rows']}; greedy decoding. "
             f"Cells: mean over seeds (min-max when several seeds).", "",
             "| run | seeds | SST-2 acc | RTE acc | TREC acc | STS-B Pearson / Spearman (unparsed) | en-de chrF / BLEU "
             "| average | params / task | wall s / seed | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        cells = []
        for task in TASKS:
            rec = run["tasks"].get(task)
            if rec is None:
                cells.append("-")
                continue
            cell = _spread(rec)
            if task in SECONDARY:
                cell += f" / {rec['secondary_mean'] * (100 if task == 'en_de' else 1):.{1 if task == 'en_de' else 3}f}"
            if task == "stsb":
                cell += f" ({'/'.join(str(int(u)) for u in rec['unparsed'])})"
            cells.append(cell)
        average = "-" if run["average"] is None else f"{run['average']:.3f}"
        lines.append(f"| {run['run']} | {len(run['seeds'])} | " + " | ".join(cells) +
                     f" | {average} | {_params(run['params_per_task'])} | {run['wall_s_per_seed']:.0f} | "
                     f"{run['peak_rss_mib']:.0f} |")
    lines.append("")
    lines.append("chrF and BLEU in points (0-100); the average is over SST-2, RTE, TREC accuracy, STS-B Pearson and "
                 "en-de chrF (0-1). Wall time: training + scoring of all of a seed's units (st_lora: its 5 runs), median over seeds.")
    return "\n".join(lines) + "\n"


def _spread(rec: dict[str, Any]) -> str:
    scale = 100 if "chrf" in rec else 1
    digits = 1 if scale == 100 else 3
    text = f"{rec['mean'] * scale:.{digits}f}"
    if len(rec["seeds"]) > 1:
        text += f" ({rec['min'] * scale:.{digits}f}-{rec['max'] * scale:.{digits}f})"
    return text


def _params(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else fmt(int(n))


def plot(report: dict[str, Any], path: Path) -> None:
    """Per task, each run's primary metric (bars, mean over seeds, min-max whiskers)."""
    plt = pyplot()
    runs = [r for r in report["runs"] if r["tasks"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        xs, ys, lo, hi = [], [], [], []
        for j, task in enumerate(TASKS):
            rec = run["tasks"].get(task)
            if rec is None:
                continue
            xs.append(j + i * width)
            ys.append(rec["mean"])
            lo.append(rec["mean"] - rec["min"])
            hi.append(rec["max"] - rec["mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], label=run["run"], capsize=2)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(TASKS))],
                  [f"{t}\n({PRIMARY[t]})" for t in TASKS])
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"t2t5 text-to-text quality, {report['model']}")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict[str, Any], out: Path) -> None:
    write_json(out / "results.json", report)
    (out / "table.md").write_text(render_table(report))
    plot(report, out / "plot.png")


def finite(report: dict[str, Any]) -> bool:
    """Every score, time and memory figure of the report is a finite number (what the smoke test checks)."""
    values = [v for run in report["runs"] for task, rec in run["tasks"].items() for v in rec[PRIMARY[task]]]
    values += [run[k] for run in report["runs"] for k in ("wall_s_per_seed", "peak_rss_mib")]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2, help="A causal LM (Hub id, folder, or the packaged SmolLM2 id).")
    parser.add_argument("--data-dir", default=str(DATA), help="The ../shared/data layout.")
    parser.add_argument("--out", default=str(RESULTS / "generation_quality"))
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "hf_mtl_bench" / "generation_quality"),
                        help="Data slices, unit results and logs (a rerun skips the units already there).")
    parser.add_argument("--seeds", default="42,43,44", help="Seeds of the headline runs (the others use the first).")
    parser.add_argument("--runs", default=",".join(r.name for r in RUNS), help="Runs to do (comma-separated).")
    parser.add_argument("--steps", type=int, help="Optimizer steps per trained run (default: the scale's).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="A tiny random Llama, few rows and steps, in-process.")
    parser.add_argument("--inline", action="store_true", help="Run the units in this process.")
    parser.add_argument("--unit", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.unit:
        return run_unit(Path(args.unit), Path(args.result))
    data_dir = Path(args.data_dir)
    if not (data_dir / "glue_sst2").is_dir():
        raise SystemExit(f"generation_quality: no ../shared/data layout at {data_dir} (needs glue_sst2, glue_rte, "
                         f"trec, stsb_multi_mt). Fix: pass --data-dir.")
    scale = QUICK if args.quick else FULL
    if args.steps:
        scale.steps = args.steps
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    from hf_mtl.modeling.backbone import resolve_model_path

    model = tiny_model(work) if args.quick else resolve_model_path(args.model)  # quick: a tiny random Llama
    data = prepare_data(data_dir, work, scale)
    wanted = args.runs.split(",")
    unknown = sorted(set(wanted) - {r.name for r in RUNS})
    if unknown:
        raise SystemExit(f"generation_quality: unknown run(s) {unknown}; runs: {[r.name for r in RUNS]}")
    runs = [r for r in RUNS if r.name in wanted]
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    meta = {"model": "tiny random Llama" if args.quick else args.model, "device": f"CPU, {args.threads} threads",
            "scale": {"steps": scale.steps, "batch": scale.batch, "max_seq_length": scale.max_seq_length,
                      "train_rows": data["sizes"], "eval_rows": {t: s["eval"] for t, s in data["sizes"].items()}},
            "seeds": seeds, "stsb_train_mean": data["stsb_train_mean"],
            "runs_spec": {r.name: {"method": r.method, "learning_rate": r.learning_rate,
                                   "adapter_config": r.adapter_config, "description": r.description} for r in runs}}
    results = []
    for unit in units(runs, seeds):
        path = work / "units" / f"{unit['name']}.json"
        if path.is_file() and not args.quick:
            results.append(json.loads(path.read_text()))
            continue
        run = next(r for r in runs if r.name == unit["run"])
        spec = {"unit": unit, "model": model, "threads": args.threads, "eval_batch": scale.eval_batch, "data": data,
                "recipe": None if run.method == "prompt" else
                recipe(run, unit, data, scale, model, str(work / "stores" / unit["name"]))}
        started = time.perf_counter()
        results.append(launch(unit, spec, work, inline=args.quick or args.inline))
        print(f"[generation_quality] {unit['name']}: {time.perf_counter() - started:.0f} s "
              f"{ {t: round(s['metrics'][PRIMARY[t]], 3) for t, s in results[-1]['scores'].items()} }", flush=True)
        write_outputs(aggregate(results, meta), out)
    report = aggregate(results, meta)
    write_outputs(report, out)
    print(render_table(report))
    return report


if __name__ == "__main__":
    main()
