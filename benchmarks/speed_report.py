"""The report of `adapters_speed.py`: per-configuration rows, goal checks, the Markdown table and the plot.

`assemble(prefix)` reads the parts the phases wrote (`<prefix>_timing.json`, `_memory.json`, `_quality.json`) and
writes `<prefix>.json`, `.md` and `.png`; it runs at the end of every run, and alone with `--phases report`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.configs import (
    COUNTERPARTS,
    DEFAULT_FLOOR_GOAL,
    FLOOR,
    FLOOR_GOALS,
    HF_METHODS,
    MIXED_GOAL,
    REFERENCE_METHODS,
    split_name,
)
from benchmarks.report import fmt, pyplot
from benchmarks.stats import paired, paired_ci, verdict


def quality_variant(run: dict[str, Any]) -> str:
    """"0.1", "0.1 (torch masks)" or "0.0": the backbone dropout, and whose masks it drew."""
    torch_masks = run["backbone_dropout"] > 0 and not run.get("fast_dropout", True)
    return f"{run['backbone_dropout']}" + (" (torch masks)" if torch_masks else "")


def summarize_quality(runs: list[dict[str, Any]], setup: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    summary = {}
    for variant in dict.fromkeys(quality_variant(r) for r in runs):
        accs = [r["dev_accuracy"] for r in runs if quality_variant(r) == variant]
        secs = [r["train_seconds"] for r in runs if quality_variant(r) == variant]
        if accs:
            summary[variant] = {"dev_accuracy_mean": statistics.mean(accs), "dev_accuracy_min": min(accs),
                               "dev_accuracy_max": max(accs), "train_seconds_median": statistics.median(secs),
                               "seeds": len(accs)}
    return {"setup": setup, "runs": runs, "summary": summary, "partial": partial}



def summarize(measured: dict, params: dict[str, dict], memory: dict[str, float],
              gflop: dict[str, float] | None = None) -> list[dict[str, Any]]:
    gflop = gflop or {}
    times, ratios = measured["times"], measured["ratios"]
    names = [n for n in dict.fromkeys(n for r in times for n in r) if not n.startswith("_")]
    rows = []
    for name in names:
        library, method, mixed, nodrop = split_name(name)
        if mixed:
            continue
        floor_ref = "hf_mtl/floor@nodrop" if nodrop else FLOOR
        own_floor = "adapterhub/floor" if library == "adapterhub" else floor_ref
        row = {
            "config": name, "method": method, "library": library, "backbone_dropout": 0.0 if nodrop else 0.1,
            "floor_ref": floor_ref,
            "step_s": statistics.median(r[name] for r in times if name in r),
            "ratio_floor": paired(ratios, name, floor_ref) if name != floor_ref else 1.0,
            "ratio_own_floor": paired(ratios, name, own_floor) if name != own_floor else 1.0,
            "ratio_full_ft": paired(ratios, name, "hf_mtl/full_ft"),
            "peak_mib": memory.get(name),
            "gflop": gflop.get(name),
            "flops_floor": gflop[name] / gflop[floor_ref] if name in gflop and floor_ref in gflop else None,
            "trainable_per_task": params.get(name, {}).get("trainable_per_task"),
            "shared_trainable": params.get(name, {}).get("shared_trainable", 0),
            "mixed_ratio": paired(times, name.removesuffix("@nodrop") + "/mixed", name) if not nodrop else None,
            "mixed_peak_mib": memory.get(name + "/mixed"),
            "vs_with_dropout": paired(times, name, name.removesuffix("@nodrop")) if nodrop else None,
        }
        if library == "hf_mtl" and not nodrop and method in COUNTERPARTS:
            row["vs_counterparts"] = {c: paired(times, name, c) for c in COUNTERPARTS[method] if c in names}
        rows.append(row)
    return rows


def goal_checks(rows: list[dict[str, Any]], measured: dict | None = None) -> list[dict[str, Any]]:
    """Each goal of the issues, with a bootstrap 90% interval of the paired median when `measured` is given."""
    checks = []
    for row in rows:
        if row["library"] != "hf_mtl" or row["method"] in REFERENCE_METHODS:
            continue
        tag = f"hf_mtl/{row['method']}" + (" (backbone_dropout=0)" if row["backbone_dropout"] == 0.0 else "")
        goal = FLOOR_GOALS.get(HF_METHODS[row["method"]][0], DEFAULT_FLOOR_GOAL)
        if row["ratio_floor"] is not None:
            checks.append(_check(f"{tag} / floor", row["ratio_floor"], goal, measured, "ratios", row["config"],
                                 row["floor_ref"]))
        if row["backbone_dropout"] == 0.1:
            for c, v in (row.get("vs_counterparts") or {}).items():
                if v is not None:
                    checks.append(_check(f"{tag} / {c}", v, 1.0, measured, "times", row["config"], c))
            if row["mixed_ratio"] is not None:
                checks.append(_check(f"{tag}: 4-task batch / 1-task batch", row["mixed_ratio"], MIXED_GOAL, measured,
                                     "times", row["config"] + "/mixed", row["config"]))
    return checks


def _check(name: str, value: float, goal: float, measured: dict | None, kind: str, a: str, b: str) -> dict[str, Any]:
    ci = paired_ci(measured[kind], a, b) if measured else None
    return {"check": name, "value": value, "goal": f"<= {goal:.2f}", "met": value <= goal, "ci90": ci,
            "verdict": verdict(value, ci, goal)}



def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    gpu = a.get("device", "cpu") != "cpu"
    memory = ("GPU allocator peak (torch.cuda.max_memory_allocated) of a configuration's first training step above "
              "what was allocated before it (AdamW's state, activations, gradients), in a probe process"
              if gpu else
              "RSS high-water mark (/proc VmHWM) of a configuration's first training step above the RSS "
              "before it (AdamW's state, activations, gradients), in a probe process with the malloc mmap threshold fixed "
              "and one tiny warm-up step for the process")
    lines = [f"all-MiniLM-L6-v2, batch {a['batch']} x {a['seq']} tokens, "
             + (f"{result.get('device')}, " if gpu else f"{a['threads']} threads, ")
             + f"{result['rounds_done']} interleaved rounds x {a['steps']} step(s); step = forward + backward + AdamW step. "
             + ("Each library's configurations ran in a process of their own (hf_mtl's and PEFT's in runner processes of this "
                "venv, AdapterHub's in its venv), one process computing at a time"
                + (f", every process started anew every {a['restart_every']} rounds. " if a.get("restart_every") else ". ")
                if result.get("local_in", "main") == "runner" else
                "hf_mtl's and PEFT's configurations ran in the main process (which holds all their models), AdapterHub's "
                "in its runner process. ")
             + "Ratios are paired medians over rounds (each configuration against the floor steps around its group). "
             + ("hf_mtl's models (the floor and full FT included) draw the backbone's dropout masks the fast way on the CPU "
                "(`fast_dropout`, the default; `floor_torch_dropout` is the floor with torch's masks); PEFT's and "
                "AdapterHub's use torch's. " if not gpu else "")
             + ("Every timing process kept freed memory for the next step (malloc thresholds of MultiTaskTrainer on the "
                "CPU, `--malloc keep`). " if not gpu and a.get("malloc") == "keep" else "")
             + f"Peak memory: {memory}. Load average over the timed rounds: "
             f"{result.get('loadavg_rounds', '-')} on {result['machine']['cpus']} CPUs.", "",
             "FLOPs x floor: the matmul and attention work of one step (forward + backward) over the floor's, counted by "
             "torch.utils.flop_counter in the probe process: deterministic, it is what the arithmetic alone would cost "
             "(elementwise work such as dropout is not counted).", "",
             "| method | library | backbone dropout | step time (s) | x floor | FLOPs x floor | x own library's floor | x full FT | "
             f"peak memory (MiB {'GPU' if gpu else 'RSS'}) | trainable params per task (+ shared) | mixed 4-task / 1-task |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        params = fmt(row["trainable_per_task"]) + (f" (+ {row['shared_trainable']:,})" if row.get("shared_trainable") else "")
        lines.append(f"| {row['method']} | {row['library']} | {row['backbone_dropout']} | {fmt(row['step_s'], 3)} | "
                     f"{fmt(row['ratio_floor'], 3)} | {fmt(row.get('flops_floor'), 3)} | {fmt(row['ratio_own_floor'], 3)} | "
                     f"{fmt(row['ratio_full_ft'], 3)} | "
                     f"{fmt(row['peak_mib'], 0)} | {params} | {fmt(row['mixed_ratio'], 3)} |")
    if result.get("peft_prefix_tuning", "runs") != "runs":
        lines.append(f"| prefix_tuning | peft | 0.1 | {result['peft_prefix_tuning']} | | | | | | | |")
    lines += ["", "Goal checks: the paired median, its bootstrap 90% interval over rounds, and the verdict: `yes` / `NO` "
                  "when the whole interval is on one side of the goal, `within noise` when the interval straddles it.", "",
              "| goal check | value | 90% interval | goal | met |", "|---|---|---|---|---|"]
    for check in result["goal_checks"]:
        ci = check.get("ci90")
        interval = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
        met = check.get("verdict") or ("yes" if check["met"] else "NO")
        lines.append(f"| {check['check']} | {check['value']:.3f} | {interval} | {check['goal']} | {met} |")
    q = result.get("quality")
    if isinstance(q, dict):
        s = q["setup"]
        lines += ["", f"Backbone dropout, quality: {s.get('method')} on {s.get('train_examples', 0):,} SST-2 training examples, "
                      f"{s.get('steps')} steps of {s.get('batch')}, lr {s.get('lr')}, {s.get('threads')} thread(s); dev accuracy on "
                      f"{s.get('dev_examples')}" + (" (interrupted: the seeds that finished)" if q.get("partial") else "") + ".", "",
                  "| backbone dropout | seeds | dev accuracy (mean) | min | max | train time (s, median; shared machine) |",
                  "|---|---|---|---|---|---|"]
        for d, v in q["summary"].items():
            lines.append(f"| {d} | {v['seeds']} | {v['dev_accuracy_mean']:.4f} | {v['dev_accuracy_min']:.4f} | "
                         f"{v['dev_accuracy_max']:.4f} | {v['train_seconds_median']:.1f} |")
    elif q:
        lines += ["", f"Backbone dropout, quality: {q}"]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = pyplot()
    methods = [r["method"] for r in rows if r["library"] == "hf_mtl" and r["backbone_dropout"] == 0.1 and r["method"] != "floor"]
    methods += [m for m in dict.fromkeys(r["method"] for r in rows) if m not in methods and m != "floor"]
    series = [("hf_mtl", 0.1, "hf_mtl"), ("hf_mtl", 0.0, "hf_mtl, backbone_dropout=0 (x its floor)"),
              ("peft", 0.1, "PEFT"), ("adapterhub", 0.1, "AdapterHub (x hf_mtl floor)")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, len(methods) * 0.9), 4.5))
    for i, (library, dropout, label) in enumerate(series):
        xs, ys = [], []
        for j, method in enumerate(methods):
            row = next((r for r in rows if r["library"] == library and r["method"] == method and r["backbone_dropout"] == dropout), None)
            if row and row["ratio_floor"] is not None:
                xs.append(j + (i - (len(series) - 1) / 2) * width)
                ys.append(row["ratio_floor"])
        ax.bar(xs, ys, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(DEFAULT_FLOOR_GOAL, color="red", linestyle="--", linewidth=0.8, label="goal 1.05x floor")
    ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right")
    ax.set_ylabel("train step time / floor (paired median)")
    ax.set_ylim(0.8, max(1.3, max((r["ratio_floor"] or 0) for r in rows) + 0.05))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def assemble(prefix: Path) -> None:
    """Assemble the parts that exist into `<prefix>.json`, `.md` and `.png`."""
    parts = {p: prefix.with_name(f"{prefix.name}_{p}.json") for p in ("timing", "memory", "quality")}
    if not parts["timing"].exists():
        print(f"no {parts['timing']} yet: nothing to report")
        return
    result = json.loads(parts["timing"].read_text())
    memory_part = json.loads(parts["memory"].read_text()) if parts["memory"].exists() else {}
    memory, gflop = memory_part.get("peak_rss_delta_mib", {}), memory_part.get("gflop", {})
    result["quality"] = json.loads(parts["quality"].read_text()) if parts["quality"].exists() else None
    if isinstance(result["quality"], dict) and result["quality"].get("partial"):  # an interrupted quality phase
        a = result["args"]  # a quality part written before `setup` was saved with it: the defaults it ran with
        setup = result["quality"].get("setup") or {"method": "bottleneck/pfeiffer", "train_examples": a["quality_examples"],
                                                   "steps": a["quality_steps"], "batch": a["quality_batch"], "lr": a["quality_lr"]}
        result["quality"] = summarize_quality(result["quality"]["runs"], setup, partial=True)
    measured = result["per_round"]
    result["rounds_done"] = len(measured["times"])
    loads = [r["_loadavg"] for r in measured["times"] if "_loadavg" in r]
    result["loadavg_rounds"] = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
    result["rows"] = summarize(measured, result["params"], memory, gflop)
    result["goal_checks"] = goal_checks(result["rows"], measured)
    prefix.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print("\n" + table)
    prefix.with_suffix(".md").write_text(table + "\n")
    a = result["args"]
    where = result.get("device") if a.get("device", "cpu") != "cpu" else f"{a['threads']} threads"
    plot(result["rows"], prefix.with_suffix(".png"),
         f"Train step / floor, all-MiniLM-L6-v2, {a['batch']}x{a['seq']}, {where}, {result['rounds_done']} rounds")
    print(f"\nwrote {prefix.with_suffix('.json')}, {prefix.with_suffix('.md')}, {prefix.with_suffix('.png')}")


