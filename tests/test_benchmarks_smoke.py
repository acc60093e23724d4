"""Smoke run of `benchmarks/adapters_speed.py` on a tiny BERT: every configuration builds and steps, the
memory probe and the SST-2-style quality loop run, and the report assembles. No timing is asserted.
AdapterHub's half needs its own venv (transformers 4.57) and is left out here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_bert_config, tiny_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    path = REPO_ROOT / "benchmarks" / "adapters_speed.py"
    spec = importlib.util.spec_from_file_location("adapters_speed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = tiny_tokenizer(max_length=128)
    BertModel(tiny_bert_config(len(tokenizer), max_position_embeddings=128)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_adapters_speed_smoke(tiny_model: Path, tmp_path: Path, monkeypatch, capsys):
    bench = _load_benchmark()
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
    local = [bench.FLOOR] + [n for g in bench.GROUPS for n in g if n.startswith(("hf_mtl/bottleneck/pfeiffer", "peft/lora"))]
    monkeypatch.setattr(sys, "argv", ["adapters_speed.py", *common, "--memory-probe", json.dumps(local)])
    capsys.readouterr()
    bench.main()
    answers = [json.loads(l[len(bench.PROTOCOL):]) for l in capsys.readouterr().out.splitlines() if l.startswith(bench.PROTOCOL)]
    assert answers[-1] == {"done": True}
    memory = {a["config"]: a["mib"] for a in answers[:-1]}
    gflop = {a["config"]: a["gflop"] for a in answers[:-1]}
    assert set(local) <= set(memory) and all(v > 0 for v in gflop.values())
    out.with_name("speed_memory.json").write_text(json.dumps({"peak_rss_delta_mib": memory, "gflop": gflop}))
    bench.report(out)

    result = json.loads(out.with_suffix(".json").read_text())
    configs = {r["config"] for r in result["rows"]}
    expected = {n for g in bench.GROUPS for n in g if not n.startswith("adapterhub/") and "/mixed" not in n.split("/", 1)[1]}
    assert expected <= configs
    mixed = {r["method"] for r in result["rows"] if r["library"] == "hf_mtl" and r["mixed_ratio"] is not None}
    assert mixed == bench.PER_ROW
    assert result["quality"]["summary"].keys() == {"0.1", "0.1 (torch masks)", "0.0"}
    assert result["goal_checks"] and out.with_suffix(".png").exists() and out.with_suffix(".md").exists()
    pfeiffer = next(r for r in result["rows"] if r["config"] == "hf_mtl/bottleneck/pfeiffer")
    assert pfeiffer["peak_mib"] is not None and pfeiffer["trainable_per_task"] > 0
    # counted, not timed: a Pfeiffer adapter sits after layer 0's feed-forward block, so the backward skips layer 0's
    # attention, which the floor's backward (down to the embeddings) runs; its own matmuls are far smaller
    floor = next(r for r in result["rows"] if r["config"] == bench.FLOOR)
    assert floor["flops_floor"] == 1.0 and 0.5 < pfeiffer["flops_floor"] < 1.0
    assert "| FLOPs x floor |" in out.with_suffix(".md").read_text()


def test_adapters_speed_runner_processes_restart(tiny_model: Path, tmp_path: Path, monkeypatch):
    """The default placement: hf_mtl's and PEFT's configurations in runner processes of their own (this script's
    --serve), started anew between rounds; the rounds, parameters and report come back as with --local-in main."""
    bench = _load_benchmark()
    out = tmp_path / "speed"
    monkeypatch.setattr(sys, "argv", ["adapters_speed.py", "--model", str(tiny_model), "--batch", "4", "--seq", "16",
                                      "--threads", "1", "--output", str(out), "--rounds", "3", "--restart-every", "1",
                                      "--no-adapterhub", "--only", "pfeiffer", "lora", "--skip", "mixed", "nodrop",
                                      "--phases", "timing"])
    starts = []
    original = bench.Runner._start
    monkeypatch.setattr(bench.Runner, "_start", lambda self: (starts.append(self.command[-1]), original(self))[1])
    bench.main()

    timing = json.loads(out.with_name("speed_timing.json").read_text())
    assert timing["local_in"] == "runner" and len(timing["per_round"]["times"]) == 3
    assert len(starts) == 2 * 3  # hf_mtl's and PEFT's runners, started at first and before rounds 2 and 3
    assert timing["params"]["hf_mtl/bottleneck/pfeiffer"]["trainable_per_task"] > 0
    assert timing["params"]["peft/lora"]["trainable_per_task"] == timing["params"]["hf_mtl/lora"]["trainable_per_task"]
    result = json.loads(out.with_suffix(".json").read_text())
    assert {r["config"] for r in result["rows"]} == {bench.FLOOR, "hf_mtl/bottleneck/pfeiffer", "hf_mtl/lora", "peft/lora"}
    assert "every process started anew every 1 rounds" in out.with_suffix(".md").read_text()


def test_goal_verdicts_use_the_bootstrap_interval():
    """A goal is met or missed only when the whole 90% interval of the paired median is on one side of it."""
    bench = _load_benchmark()
    tight = [{"a": 1.00 + 0.001 * i, "b": 1.0} for i in range(10)]
    wide = [{"a": v, "b": 1.0} for v in (0.90, 1.10, 0.95, 1.08, 1.0, 0.92, 1.12, 1.02, 0.97, 1.06)]
    low, high = bench.paired_ci(tight, "a", "b")
    assert 1.0 <= low <= bench.paired(tight, "a", "b") <= high <= 1.01
    assert bench.verdict(1.005, (low, high), 1.05) == "yes"
    assert bench.verdict(1.005, (low, high), 1.00) == "NO"
    ci = bench.paired_ci(wide, "a", "b")
    assert ci[0] < 1.0 < ci[1]
    assert bench.verdict(bench.paired(wide, "a", "b"), ci, 1.0).startswith("within noise")
    assert bench.paired_ci(tight[:2], "a", "b") is None  # too few rounds for an interval


def test_attention_ab_smoke(tmp_path: Path, monkeypatch, capsys):
    """benchmarks/attention_ab.py on tiny shapes: both modes run, the table prints, the JSON is written."""
    spec = importlib.util.spec_from_file_location("attention_ab", REPO_ROOT / "benchmarks" / "attention_ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["attention_ab.py", "--batch", "2", "--queries", "8", "--keys", "8", "11",
                                      "--rounds", "2", "--threads", "1", "--output", str(out)])
    module.main()
    result = json.loads(out.read_text())
    assert [r["keys"] for r in result["rows"]] == [8, 11]
    assert all(len(t) == 2 for t in result["times_s"].values()) and len(result["times_s"]) == 4
    assert "| 11 |" in capsys.readouterr().out
