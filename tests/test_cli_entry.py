"""The package's top-level API and the CLI's entry points: lazy imports, one table of subcommands however
`hf-mtl` is started, one-line errors, Ctrl-C during training, store arguments that look like paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hf_mtl
from hf_mtl import cli
from hf_mtl.cli import main


REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["train", "eval", "predict", "push", "pull", "export"]


def run_python(code: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------------ top-level API
def test_top_level_api_like_peft_and_trl():
    from hf_mtl import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, Task, load_task_split
    from hf_mtl.data.readers import load_task_split as reader
    from hf_mtl.modeling import MultiTaskModel as model_class
    from hf_mtl.trainer import MultiTaskTrainer as trainer_class
    from hf_mtl.training_args import MultiTaskTrainingArguments as args_class

    assert (MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, load_task_split) == (
        model_class, trainer_class, args_class, reader)
    assert Task.__module__ == "hf_mtl.tasks"
    for name in hf_mtl.__all__:  # __all__ is complete and every name resolves
        assert getattr(hf_mtl, name) is not None, name
    assert {"MultiTaskModel", "MultiTaskTrainer", "MultiTaskTrainingArguments", "load_task_split"} <= set(dir(hf_mtl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hf_mtl.nope  # noqa: B018


def test_import_and_help_do_not_import_torch():
    """`import hf_mtl`, `hf-mtl --help` and `hf-mtl push --help` answer without torch (checked, never timed)."""
    code = ("import sys, contextlib, io\n"
            "import hf_mtl\n"
            "assert 'torch' not in sys.modules, 'import hf_mtl'\n"
            "from hf_mtl.cli import main\n"
            "for argv in (['--help'], ['push', '--help'], ['pull', '--help'], ['export', '--help'], ['predict', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'datasets') if m in sys.modules]\n"
            "    assert not heavy, (argv, heavy)\n"
            "print('ok')\n")
    proc = run_python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ one table
def _subcommands(help_text: str) -> list[str]:
    line = next(ln for ln in help_text.splitlines() if ln.strip().startswith("{"))
    return line.strip().strip("{}").split(",")


@pytest.mark.parametrize("launcher", [["-m", "hf_mtl.cli"], ["-c", "import sys; from hf_mtl.cli import main; sys.exit(main())"]])
def test_every_launch_form_offers_every_subcommand(launcher: list[str]):
    """`python -m hf_mtl.cli` (what `accelerate launch -m hf_mtl.cli` runs) has push/pull/export too."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, *launcher, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _subcommands(proc.stdout) == SUBCOMMANDS
    proc = subprocess.run([sys.executable, *launcher, "pull", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--local-dir" in proc.stdout, proc.stderr[-2000:]


def test_the_table_is_the_parser():
    assert [c.name for c in cli.COMMANDS] == SUBCOMMANDS
    parser = cli.build_parser()
    assert _subcommands(parser.format_help()) == SUBCOMMANDS


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "x", "--task", "t", "--batch-size", "0", "hi"], "argument --batch-size: '0' is not a positive integer"),
        (["predict", "x", "--task", "t", "--max-seq-length", "-5", "hi"], "argument --max-seq-length: '-5' is not a positive"),
        (["eval", "x", "--batch-size", "zero"], "argument --batch-size: 'zero' is not a positive integer"),
        (["predict", "x", "hi"], "No task. Fix: give --task T"),  # optional: --input lines may name their task
        (["pull", "a/b", "--nope"], "unrecognized arguments: --nope"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_usage_errors_are_one_line(argv: list[str], message: str, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


# ------------------------------------------------------------------------------------------------ Ctrl-C
def _interrupt_after(made: list[str]):
    def fake_run_training(args):
        for name in made:
            (Path(args.output_dir) / name).mkdir(parents=True)
            if not name.endswith("-partial"):
                (Path(args.output_dir) / name / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt
    return fake_run_training


def _train_interrupted(tmp_path: Path, monkeypatch, capsys, made: list[str], extra: list[str] = ()) -> tuple[int, str]:
    import hf_mtl.run

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(hf_mtl.run, "run_training", _interrupt_after(made))
    try:
        code = main(["train", "training_args/quickstart.json", "--output_dir", str(tmp_path / "out"), *extra])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a KeyboardInterrupt traceback")
    return code, capsys.readouterr().err.strip()


def test_ctrl_c_prints_the_checkpoint_and_the_resume_command(tmp_path, monkeypatch, capsys):
    code, err = _train_interrupted(tmp_path, monkeypatch, capsys, ["checkpoint-5", "checkpoint-10"],
                                   ["--max_steps", "30", "--resume_from_checkpoint", "false"])
    assert code == 130 and "\n" not in err
    out = tmp_path / "out"
    assert f"the last checkpoint is {out / 'checkpoint-10'}" in err
    assert err.endswith(f"hf-mtl train training_args/quickstart.json --output_dir {out} --max_steps 30 "
                        f"--resume_from_checkpoint true")


def test_ctrl_c_while_a_checkpoint_is_written_resumes_from_the_complete_one(tmp_path, monkeypatch, capsys):
    code, err = _train_interrupted(tmp_path, monkeypatch, capsys, ["checkpoint-5", "checkpoint-10-partial"])
    assert code == 130  # "checkpoint-10-partial" is not a checkpoint name; make a real incomplete one
    (tmp_path / "out" / "checkpoint-10").mkdir()
    msg = cli.interrupted_message(str(tmp_path / "out"), "r.json", [])
    assert msg.endswith(f"hf-mtl train r.json --resume_from_checkpoint {tmp_path / 'out' / 'checkpoint-5'}")


def test_ctrl_c_before_any_checkpoint(tmp_path, monkeypatch, capsys):
    code, err = _train_interrupted(tmp_path, monkeypatch, capsys, [])
    assert code == 130 and "no checkpoint was saved" in err and "resume_from_checkpoint" not in err


def test_ctrl_c_in_other_commands_is_one_line(tmp_path, monkeypatch, capsys):
    import hf_mtl.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_mtl.run, "run_evaluation", interrupted)
    try:
        code = main(["eval", str(tmp_path)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped as a KeyboardInterrupt traceback")
    assert code == 130 and capsys.readouterr().err.strip() == "interrupted."


# ------------------------------------------------------------------------------------------------ store arguments
@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_a_mistyped_folder_is_no_such_folder(command, tmp_path, monkeypatch, capsys):
    (tmp_path / "outputs" / "quickstart").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    extra = {"predict": ["--task", "x", "hello"], "eval": [], "export": ["--task", "x", "out"]}[command]
    for store, expected in [("outputs/quickstrat", "no such folder: outputs/quickstrat. Did you mean outputs/quickstart?"),
                            (str(tmp_path / "nope" / "run"), f"no such folder: {tmp_path / 'nope' / 'run'}"),
                            ("./run", "no such folder: ./run"),
                            ("~/no-such-hf-mtl-folder", "no such folder")]:
        assert main([command, store, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {expected}") and "\n" not in err and "Repo id" not in err, err


def test_store_argument_rule(tmp_path, monkeypatch):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "file.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    cli.check_store_argument("outputs")  # an existing folder
    cli.check_store_argument("user/repo")  # a repo id: `user` is no local folder
    cli.check_store_argument("bert-base-uncased")
    for value in ("outputs/run", "a/b/c", "/no/such", "../x", "~/x/y"):
        with pytest.raises(hf_mtl.HfMtlError, match="no such folder"):
            cli.check_store_argument(value)
    with pytest.raises(hf_mtl.HfMtlError, match="is a file, not a store folder"):
        cli.check_store_argument("file.json")


# ------------------------------------------------------------------------------------------------ eval --data
def test_eval_data_files_reach_run_evaluation(tmp_path, monkeypatch, capsys):
    import hf_mtl.run

    seen = {}

    def fake_run_evaluation(store, **kwargs):
        seen.update(kwargs)
        return {"eval_a_accuracy": 0.5, "eval_b_pearson": float("nan")}

    monkeypatch.setattr(hf_mtl.run, "run_evaluation", fake_run_evaluation)
    (tmp_path / "store").mkdir()
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.csv").write_text("x\n")
    store, a, b = (str(tmp_path / n) for n in ("store", "a.jsonl", "b.csv"))
    assert main(["eval", store, "--data", f"a={a}", "--data", f"b={b}", "--output", str(tmp_path / "m.json")]) == 0
    assert seen["data_files"] == {"a": a, "b": b}
    # a NaN metric (Pearson of a constant prediction) prints as null: strict JSON
    strict = {"parse_constant": lambda c: pytest.fail(f"{c} is not JSON")}
    assert json.loads(capsys.readouterr().out, **strict)["eval_b_pearson"] is None
    assert json.loads((tmp_path / "m.json").read_text(), **strict)["eval_b_pearson"] is None
    seen.clear()
    assert main(["eval", store]) == 0 and "data_files" not in seen
    for data, message in [("a", "give TASK=PATH"), (f"c={tmp_path / 'none.csv'}", "is not a file"),
                          (f"=={a}", "give TASK=PATH")]:
        assert main(["eval", store, "--data", data]) == 2
        assert message in capsys.readouterr().err
    assert main(["eval", store, "--data", f"a={a}", "--data", f"a={b}"]) == 2
    assert "names task 'a' twice" in capsys.readouterr().err
    assert main(["eval", store, "--tasks", "b", "--data", f"a={a}"]) == 2
    assert "is not among --tasks" in capsys.readouterr().err


def test_train_help_lists_the_recipe_fields(capsys):
    """The unknown-field error points to `hf-mtl train --help`: it lists hf_mtl's own fields with their help."""
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for field in ("adapter_method", "sampling_strategy", "loss_weighting", "max_seq_length", "freeze_backbone"):
        assert f"\n  {field}\n" in out, field
    assert "transformers.TrainingArguments" in out and "(default: " in out
