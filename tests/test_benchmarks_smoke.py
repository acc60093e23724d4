"""Smoke run of `benchmarks/adapters_speed.py` on a tiny BERT: every configuration builds and steps, the
memory probe and the SST-2-style quality loop run, and the report assembles. No timing is asserted.
AdapterHub's half needs its own venv (transformers 4.57) and is left out here.

Every test here (and in test_quality_benchmark.py) checks that it wrote nothing into the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import adapters_speed as bench
from benchmarks import attention_ab, configs, runner, speed_report, stats
from benchmarks.adapterhub_runner import PROTOCOL
from tests.helpers import tiny_bert_config, tiny_tokenizer


REPO_ROOT = Path(__file__).resolve().parents[1]


def _checkout_paths() -> set[Path]:
    """Every file and folder under the checkout, but git's own and the caches of Python, pytest and ruff."""
    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
    found = set()
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found.update(Path(folder, name).relative_to(REPO_ROOT) for name in dirs + files)
    return found


@pytest.fixture
def checkout_untouched():
    """Fails the test when it left a new file or folder in the checkout: benchmarks write under tmp_path in tests."""
    before = _checkout_paths()
    yield
    new = sorted(str(p) for p in _checkout_paths() - before)
    assert not new, f"the test wrote into the checkout: {new[:5]}"


pytestmark = pytest.mark.usefixtures("checkout_untouched")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = tiny_tokenizer(max_length=128)
    BertModel(tiny_bert_config(len(tokenizer), max_position_embeddings=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_adapters_speed_smoke(tiny_model: Path, tmp_path: Path, monkeypatch, capsys):
    data = tmp_path / "data" / "glue_sst2"
    data.mkdir(parents=True)
    rows = "".join(f"the film was {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(24))
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    out = tmp_path / "results" / "speed"
    common = ["--model", str(tiny_model), "--batch", "4", "--seq", "16", "--threads", "1", "--output", str(out)]
    monkeypatch.setattr(sys, "argv", ["adapters_speed.py", *common, "--rounds", "1", "--no-adapterhub", "--local-in", "main",
                                      "--phases", "timing,quality", "--data-dir", str(tmp_path / "data"),
                                      "--quality-examples", "16", "--quality-steps", "2", "--quality-seeds", "1",
                                      "--quality-batch", "4"])
    bench.main()

    # the memory probe's code path, in this process (the benchmark runs it in a fresh one)
    local = [configs.FLOOR] + [n for g in configs.GROUPS for n in g if n.startswith(("hf_mtl/bottleneck/pfeiffer", "peft/lora"))]
    monkeypatch.setattr(sys, "argv", ["adapters_speed.py", *common, "--memory-probe", json.dumps(local)])
    capsys.readouterr()
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    answers = [json.loads(line[len(PROTOCOL):]) for line in lines if line.startswith(PROTOCOL)]
    assert answers[-1] == {"done": True}
    memory = {a["config"]: a["mib"] for a in answers[:-1]}
    gflop = {a["config"]: a["gflop"] for a in answers[:-1]}
    assert set(local) <= set(memory) and all(v > 0 for v in gflop.values())
    out.with_name("speed_memory.json").write_text(json.dumps({"peak_rss_delta_mib": memory, "gflop": gflop}))
    speed_report.assemble(out)

    result = json.loads(out.with_suffix(".json").read_text())
    names = {r["config"] for r in result["rows"]}
    expected = {n for g in configs.GROUPS for n in g if not n.startswith("adapterhub/") and "/mixed" not in n.split("/", 1)[1]}
    assert expected <= names
    mixed = {r["method"] for r in result["rows"] if r["library"] == "hf_mtl" and r["mixed_ratio"] is not None}
    assert mixed == configs.PER_ROW
    assert result["quality"]["summary"].keys() == {"0.1", "0.1 (torch masks)", "0.0"}
    assert result["goal_checks"] and out.with_suffix(".png").exists() and out.with_suffix(".md").exists()
    pfeiffer = next(r for r in result["rows"] if r["config"] == "hf_mtl/bottleneck/pfeiffer")
    assert pfeiffer["peak_mib"] is not None and pfeiffer["trainable_per_task"] > 0
    # counted, not timed: a Pfeiffer adapter sits after layer 0's feed-forward block, so the backward skips layer 0's
    # attention, which the floor's backward (down to the embeddings) runs; its own matmuls are far smaller
    floor = next(r for r in result["rows"] if r["config"] == configs.FLOOR)
    assert floor["flops_floor"] == 1.0 and 0.5 < pfeiffer["flops_floor"] < 1.0
    assert "| FLOPs x floor |" in out.with_suffix(".md").read_text()


def test_adapters_speed_runner_processes_restart(tiny_model: Path, tmp_path: Path, monkeypatch):
    """The default placement: hf_mtl's and PEFT's configurations in runner processes of their own (this script's
    --serve), started anew between rounds; the rounds, parameters and report come back as with --local-in main."""
    out = tmp_path / "speed"
    monkeypatch.setattr(sys, "argv", ["adapters_speed.py", "--model", str(tiny_model), "--batch", "4", "--seq", "16",
                                      "--threads", "1", "--output", str(out), "--rounds", "3", "--restart-every", "1",
                                      "--no-adapterhub", "--only", "pfeiffer", "lora", "--skip", "mixed", "nodrop",
                                      "--phases", "timing"])
    starts = []
    original = runner.Runner._start
    monkeypatch.setattr(runner.Runner, "_start", lambda self: (starts.append(self.command[-1]), original(self))[1])
    bench.main()

    timing = json.loads(out.with_name("speed_timing.json").read_text())
    assert timing["local_in"] == "runner" and len(timing["per_round"]["times"]) == 3
    assert len(starts) == 2 * 3  # hf_mtl's and PEFT's runners, started at first and before rounds 2 and 3
    assert timing["params"]["hf_mtl/bottleneck/pfeiffer"]["trainable_per_task"] > 0
    assert timing["params"]["peft/lora"]["trainable_per_task"] == timing["params"]["hf_mtl/lora"]["trainable_per_task"]
    result = json.loads(out.with_suffix(".json").read_text())
    assert {r["config"] for r in result["rows"]} == {configs.FLOOR, "hf_mtl/bottleneck/pfeiffer", "hf_mtl/lora", "peft/lora"}
    assert "every process started anew every 1 rounds" in out.with_suffix(".md").read_text()


def test_goal_verdicts_use_the_bootstrap_interval():
    """A goal is met or missed only when the whole 90% interval of the paired median is on one side of it."""
    tight = [{"a": 1.00 + 0.001 * i, "b": 1.0} for i in range(10)]
    wide = [{"a": v, "b": 1.0} for v in (0.90, 1.10, 0.95, 1.08, 1.0, 0.92, 1.12, 1.02, 0.97, 1.06)]
    low, high = stats.paired_ci(tight, "a", "b")
    assert 1.0 <= low <= stats.paired(tight, "a", "b") <= high <= 1.01
    assert stats.verdict(1.005, (low, high), 1.05) == "yes"
    assert stats.verdict(1.005, (low, high), 1.00) == "NO"
    ci = stats.paired_ci(wide, "a", "b")
    assert ci[0] < 1.0 < ci[1]
    assert stats.verdict(stats.paired(wide, "a", "b"), ci, 1.0).startswith("within noise")
    assert stats.paired_ci(tight[:2], "a", "b") is None  # too few rounds for an interval


def test_attention_ab_smoke(tmp_path: Path, monkeypatch, capsys):
    """benchmarks/attention_ab.py on tiny shapes: both modes run, the table prints, the JSON is written."""
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["attention_ab.py", "--batch", "2", "--queries", "8", "--keys", "8", "11",
                                      "--rounds", "2", "--threads", "1", "--output", str(out)])
    attention_ab.main()
    result = json.loads(out.read_text())
    assert [r["keys"] for r in result["rows"]] == [8, 11]
    assert all(len(t) == 2 for t in result["times_s"].values()) and len(result["times_s"]) == 4
    assert "| 11 |" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["script", "module"])
def test_speed_script_runs_both_ways(form: str, tmp_path: Path):
    """`python benchmarks/adapters_speed.py` and `python -m benchmarks.adapters_speed` both start (from the
    repository, without PYTHONPATH): the script form puts the repository on sys.path itself. A few seconds each
    (torch and transformers import)."""
    command = ["benchmarks/adapters_speed.py"] if form == "script" else ["-m", "benchmarks.adapters_speed"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, *command, "--help"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--local-in" in done.stdout


def test_generation_speed_quick_run(tmp_path: Path):
    """`benchmarks/generation_speed.py --quick`: every configuration generates and trains on a tiny Llama, hf_mtl's
    mixed batch generates PEFT's tokens, the memory probe measures every configuration, and the tables, JSON and
    plot are written with finite numbers (no timing asserted)."""
    from benchmarks import generation_speed

    results = generation_speed.main(["--quick", "--out", str(tmp_path)])
    assert set(results["runs"]) == {"greedy", "beam 2"}
    assert all(run["same_tokens_as_peft"] for run in results["runs"].values())
    assert all(set(run["peak_mib"]) == set(generation_speed.CONFIGS) for run in results["runs"].values())
    train = results["train"]
    assert set(train["seconds"]) == set(train["peak_mib"]) == set(generation_speed.TRAIN_CONFIGS)
    assert set(train["ratios"]) == set(generation_speed.TRAIN_REFERENCES) and len(train["rounds"]) == 2
    assert generation_speed.finite(results)
    table = (tmp_path / "table.md").read_text()
    assert table.count("| greedy |") == len(generation_speed.CONFIGS) == table.count("| beam 2 |")
    train_rows = [line for line in table.splitlines() if line.startswith(("| hf_mtl/", "| peft/"))]
    assert [row.split(" | ")[0][2:] for row in train_rows] == list(generation_speed.TRAIN_CONFIGS)
    # seconds/step, tokens/s and peak MiB filled in on every row
    assert all(float(cell) >= 0 for row in train_rows for cell in row.split(" | ")[1:4])
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == 8 and (tmp_path / "plot.png").stat().st_size


def test_generation_quality_quick_run(shared_data: Path, tmp_path: Path):
    """`benchmarks/generation_quality.py --quick`: every run of the t2t5 suite trains (or prompts) a tiny Llama on
    slices of the real data and is scored on all five tasks; the table has one row per run, the numbers are finite,
    and the shared run's training rows follow the temperature proportions (no quality or timing asserted)."""
    from benchmarks import generation_quality as gq

    report = gq.main(["--quick", "--data-dir", str(shared_data), "--work", str(tmp_path / "work"),
                      "--out", str(tmp_path / "out")])
    assert [r["run"] for r in report["runs"]] == [r.name for r in gq.RUNS]
    assert all(r["complete"] and set(r["tasks"]) == set(gq.TASKS) for r in report["runs"])
    assert gq.finite(report)
    params = {r["run"]: r["params_per_task"] for r in report["runs"]}
    assert params["zero_shot"] == 0 and params["mtl_shared_lora"] * len(gq.TASKS) == params["mtl_lora"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert all(f"| {r.name} |" in table for r in gq.RUNS) and (tmp_path / "out" / "plot.png").stat().st_size
    shared = [json.loads(line) for line in (tmp_path / "work" / "data" / "t2t" / "train.jsonl").read_text().splitlines()]
    assert len(shared) == gq.QUICK.steps * gq.QUICK.batch


def test_generation_quality_shared_rows_follow_temperature():
    """The shared adapter's rows are drawn per task in proportion to |D_t|^(1/T)."""
    from benchmarks.generation_quality import shared_rows

    rendered = {"big": [{"prompt": f"b{i}", "target": "x"} for i in range(400)],
                "small": [{"prompt": f"s{i}", "target": "y"} for i in range(100)]}
    rows = shared_rows(rendered, 300, temperature=2.0)
    assert len(rows) == 300 and sum(r["target"] == "x" for r in rows) == 200  # 20 : 10


def test_lora_peft_train_ab_quick_run():
    """`benchmarks/lora_peft_train_ab.py --quick`: both steps run on a tiny Llama and give a finite paired ratio."""
    import math

    from benchmarks import lora_peft_train_ab

    result = lora_peft_train_ab.main(["--quick", "--rounds", "3"])
    assert len(result["rounds"]) == 3 and math.isfinite(result["ratio"]) and result["ci90"] is not None
