"""`hf-mtl`: train, evaluate, use and share multi-task models from the command line.

    hf-mtl train RECIPE.json [--field value ...]
    hf-mtl eval OUTPUT_DIR [--split validation|test] [--tasks a b] [--data TASK=PATH ...]
    hf-mtl predict OUTPUT_DIR|REPO_ID --task T|all [TEXT ... | --input FILE] [--language X] [--revision R]
                   [--num-beams N] [--max-new-tokens N]   (generative tasks)
    hf-mtl push | pull | export   (arguments and backends in `hf_mtl.cli_hub`)

`hf-mtl ...` and `python -m hf_mtl.cli ...` (the form `accelerate launch -m hf_mtl.cli` needs) read the same
table of subcommands, `COMMANDS`. Each subcommand imports its backend (torch, transformers, the Hub client)
only when it runs, so `--help` answers at once. Errors print one line (`error: ...`) and exit with status 2;
Ctrl-C during training prints what was saved and the command that resumes, and exits with status 130.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cli_hub
from .errors import HfMtlError


INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (128 + 2)
CHECKPOINT_STATE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is incomplete


# ---------------------------------------------------------------------------------------------------- train
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-h", "--help", action=_RecipeHelp, nargs=0,
                        help="Show this help and every recipe field of hf_mtl, then exit.")
    parser.add_argument("recipe", help="Path of a JSON recipe (MultiTaskTrainingArguments fields).")


class _RecipeHelp(argparse.Action):
    """`hf-mtl train --help`: the usage, then hf_mtl's own recipe fields with their help.

    The fields come from `MultiTaskTrainingArguments`, which imports transformers: they are read only when this help
    is asked for, so `hf-mtl --help` and the other commands' help stay fast.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: Any = None) -> None:
        from .training_args import RECIPE_FIELDS_NOTE, recipe_fields_help

        lines = [parser.format_help(), "recipe fields of hf_mtl (JSON keys of a recipe, or --field value):"]
        for name, text in recipe_fields_help():
            lines.append(f"  {name}\n      {text}")
        lines += ["", RECIPE_FIELDS_NOTE]
        print("\n".join(lines))
        parser.exit()


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from .run import load_recipe, run_training

    recipe = load_recipe(args.recipe, extra)
    try:
        out = run_training(recipe)
    except KeyboardInterrupt:
        # every rank gets the SIGINT; one line from the main process replaces the traceback of each
        if _is_main_process():
            print(interrupted_message(recipe.output_dir, args.recipe, extra), file=sys.stderr)
        return INTERRUPTED
    if _is_main_process():
        shown = ("accuracy", "f1", "pearson", "exact_match", "rouge", "bleu", "chrf")  # and generated texts' scores
        summary = {k: v for k, v in out.get("eval", {}).items() if k.endswith("_average") or any(s in k for s in shown)}
        print(_json({"output_dir": recipe.output_dir, "train_loss": out["train"].get("train_loss"), **summary}, indent=2))
    return 0


def interrupted_message(output_dir: str, recipe: str, overrides: Sequence[str]) -> str:
    """The line printed when training is interrupted: the last complete checkpoint, and the exact command
    that resumes from it (`--resume_from_checkpoint true` picks the newest checkpoint; when the newest is
    incomplete, because the interrupt came while it was written, the command names the complete one).

    Args:
        output_dir: the run's output folder.
        recipe: the recipe path as given on the command line.
        overrides: the `--field value` overrides as given.
    """
    kept = _without_option(list(overrides), "--resume_from_checkpoint")
    rerun = [*_launcher(), "train", recipe, *kept]
    complete = [c for c in _checkpoints(output_dir) if (c / CHECKPOINT_STATE).is_file()]
    if not complete:
        return (f"interrupted: no checkpoint was saved in {output_dir} yet (see save_strategy and save_steps). "
                f"Start again with: {shlex.join(rerun)}")
    last = complete[-1]
    resume = "true" if last == _checkpoints(output_dir)[-1] else str(last)
    return f"interrupted: the last checkpoint is {last}. Resume with: {shlex.join([*rerun, '--resume_from_checkpoint', resume])}"


def _checkpoints(output_dir: str) -> list[Path]:
    """`checkpoint-<step>` folders of `output_dir`, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option value` and `option=value`."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == option:
            skip = i + 1 < len(argv)
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _launcher() -> list[str]:
    """How this process was started: `hf-mtl`, or `accelerate launch -m hf_mtl.cli` for several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return ["accelerate", "launch", "-m", "hf_mtl.cli"]
    return ["hf-mtl"]


# ---------------------------------------------------------------------------------------------------- eval
def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="An output folder or a Hub repo id.")
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--tasks", nargs="+", default=None, help="Only these tasks.")
    parser.add_argument("--data", action="append", default=None, metavar="TASK=PATH",
                        help="Evaluate TASK on this data file instead of its saved source (repeat for other tasks).")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="Rows per task: 0 = all of them (default: each task's saved max_eval_samples).")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--max-seq-length", type=positive_int, default=128)
    parser.add_argument("--output", help="Also write the metrics to this JSON file.")


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from .run import run_evaluation

    data_files = parse_data_files(args.data or [], args.tasks)
    # data_files only when given: the parameter is run_evaluation's newest
    more = {"data_files": data_files} if data_files else {}
    metrics = run_evaluation(args.store, split=args.split, tasks=args.tasks, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, max_samples=args.max_samples, **more)
    text = _json(metrics, indent=2, sort_keys=True)
    if args.output:
        from .io_utils import atomic_write_bytes

        atomic_write_bytes(args.output, (text + "\n").encode())
    print(text)
    return 0


def parse_data_files(values: Sequence[str], tasks: Sequence[str] | None) -> dict[str, str]:
    """`--data TASK=PATH` values as `{task: path}`; each path must be an existing file, each task named once
    (and among `--tasks` when given)."""
    files: dict[str, str] = {}
    for value in values:
        task, sep, path = value.partition("=")
        if not sep or not task or not path:
            raise HfMtlError(f"--data {value}: give TASK=PATH (the task name, '=', then its data file).")
        if task in files:
            raise HfMtlError(f"--data names task {task!r} twice ({files[task]} and {path}). Fix: one file per task.")
        if tasks is not None and task not in tasks:
            raise HfMtlError(f"--data {value}: task {task!r} is not among --tasks {list(tasks)}. Fix: add it to --tasks.")
        if not os.path.isfile(path):
            raise HfMtlError(f"--data {value}: {path} is not a file. Fix: give the path of task {task!r}'s data file.")
        files[task] = path
    return files


# ---------------------------------------------------------------------------------------------------- predict
def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="An output folder or a Hub repo id (only the task's files are pulled).")
    parser.add_argument("--task", help="Task name, or 'all' for every task of the store (one line per input). "
                                       "Optional when every --input line names its `task`.")
    parser.add_argument("texts", nargs="*", help="Input texts (token tasks: words separated by spaces).")
    parser.add_argument("--input", help="A UTF-8 file with one text per line, or JSON lines with text/text_pair/tokens, "
                                        "or `columns` ({column: value}: the prompt template's columns of a generative "
                                        "task); a line's `task` names its task (rows of several tasks in one file).")
    parser.add_argument("--language", help="Language adapter to use (zero-shot cross-lingual transfer).")
    parser.add_argument("--revision", help="Hub revision of the store.")
    parser.add_argument("--token", help="Hub token for a private repo (default: HF_TOKEN or `hf auth login`).")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--max-seq-length", type=positive_int, default=128,
                        help="Tokens per input (at most the model's positions); longer token-task inputs run in windows. "
                             "A decoder-only LM's new tokens count towards it.")
    parser.add_argument("--num-beams", type=positive_int, default=None,
                        help="Generative tasks: beam search with N beams (default: each task's `generation`, else 1).")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="Generative tasks: at most N new tokens per row (default: each task's `generation`).")


_GENERATION_ARGUMENTS = ("num_beams", "max_new_tokens")  # predict's options that go to generation as they are


def _predict(args: argparse.Namespace, extra: list[str]) -> int:
    # argparse gives texts that follow an option (`STORE --task T TEXT`) as extra arguments
    _no_extra([e for e in extra if e.startswith("--")])
    args.texts = list(args.texts) + extra
    inputs = _read_inputs(args)
    task = _predict_tasks(args.task, inputs)
    inputs = [row.value if isinstance(row, _Row) else row for row in inputs]
    names = None if task == "all" else list(dict.fromkeys([task] if isinstance(task, str) else task))
    generation = {name: getattr(args, name) for name in _GENERATION_ARGUMENTS if getattr(args, name) is not None}
    from .modeling import MultiTaskModel

    model = MultiTaskModel.from_pretrained(args.store, tasks=names, revision=args.revision, token=args.token,
                                           trust_remote_code=False)
    # --task all: one line per input, {task: prediction}; tasks sharing the backbone share its pass
    for row in model.predict(inputs, task=task, batch_size=args.batch_size, max_length=args.max_seq_length,
                             language=args.language, **generation):
        print(_json(row, ensure_ascii=False))
    return 0


@dataclass(frozen=True)
class _Row:
    """An --input JSON line that names its task."""

    task: str
    value: Any


def _predict_tasks(default: str | None, inputs: list[Any]) -> str | list[str]:
    """The task of every input: `--task`, or a line's own `task` (rows of several tasks in one file)."""
    if not any(isinstance(row, _Row) for row in inputs):
        if default is None:
            raise HfMtlError("No task. Fix: give --task T (or 'all'), or a `task` on every --input JSON line.")
        return default
    if default == "all":
        raise HfMtlError("--task all asks every task of the store, but --input lines name their own `task`. Fix: drop "
                         "--task all, or the lines' `task`.")
    missing = [number for number, row in enumerate(inputs, 1) if not isinstance(row, _Row)]
    if missing and default is None:
        raise HfMtlError(f"--input: input {missing[0]} (counting non-blank lines) names no `task`, and there is no "
                         f"--task. Fix: give --task T (the task of the inputs without one), or a `task` on every line.")
    return [row.task if isinstance(row, _Row) else default for row in inputs]


def _read_inputs(args: argparse.Namespace) -> list[Any]:
    if args.input and args.texts:
        raise HfMtlError("Give texts on the command line or --input FILE, not both.")
    if not args.input:
        if not args.texts:
            raise HfMtlError("No input. Fix: give TEXT arguments or --input FILE (one text or JSON object per line).")
        return list(args.texts)
    if not os.path.isfile(args.input):
        raise HfMtlError(f"--input {args.input} does not exist.")
    rows = []
    with open(args.input, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            line = _decode_line(raw, args.input, number).rstrip("\r\n")
            if line.strip():
                rows.append(_parse_input_line(line, args.input, number))
    return rows


def _decode_line(raw: bytes, path: str, number: int) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HfMtlError(f"--input {path} line {number} is not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}). "
                         f"Fix: save the file as UTF-8 (e.g. iconv -t UTF-8).") from None
    return line.removeprefix("\ufeff") if number == 1 else line


_INPUT_FIELDS = ("text", "text_pair", "tokens", "columns", "task")


def _parse_input_line(line: str, path: str, number: int) -> Any:
    if not line.lstrip().startswith("{"):
        return line
    where = f"--input {path} line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise HfMtlError(f"{where} is not valid JSON: {err}.") from None
    unknown = sorted(set(obj) - set(_INPUT_FIELDS))
    if unknown:
        raise HfMtlError(f"{where}: unknown field(s) {unknown}. Fix: a JSON input has `text` (and `text_pair`), "
                         f"`tokens` or `columns` (generative tasks), and optionally its `task`.")
    if "task" not in obj:
        return _input_value(obj, where)
    if not isinstance(obj["task"], str) or not obj["task"]:
        raise HfMtlError(f"{where}: `task` must be a task name, got {json.dumps(obj['task'])[:60]}.")
    return _Row(obj.pop("task"), _input_value(obj, where))


def _input_value(obj: dict[str, Any], where: str) -> Any:
    """The input of one JSON line: a text, a (text, text_pair) pair, a word list, or a {column: value} row."""
    if "columns" in obj:
        columns = obj["columns"]
        if len(obj) > 1:
            raise HfMtlError(f"{where}: give `columns` alone (a generative task's prompt columns), not with "
                             f"{sorted(set(obj) - {'columns'})}.")
        if not isinstance(columns, dict) or not columns or not all(isinstance(v, str) for v in columns.values()):
            raise HfMtlError(f"{where}: `columns` must be an object of strings ({{column: value}}), got "
                             f"{json.dumps(columns)[:60]}.")
        return columns
    if "tokens" in obj:
        tokens = obj["tokens"]
        if "text" in obj or "text_pair" in obj:
            raise HfMtlError(f"{where}: give `tokens` or `text`, not both.")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise HfMtlError(f"{where}: `tokens` must be a list of strings, got {json.dumps(tokens)[:60]}.")
        return tokens
    if "text" not in obj:
        raise HfMtlError(f"{where}: a JSON input needs `text` (and `text_pair`), `tokens` or `columns`.")
    for field in ("text", "text_pair"):
        if field in obj and not isinstance(obj[field], str):
            raise HfMtlError(f"{where}: `{field}` must be a string, got {json.dumps(obj[field])[:60]}. "
                             f"Fix: quote it, or drop the line.")
    return (obj["text"], obj["text_pair"]) if "text_pair" in obj else obj["text"]


# ---------------------------------------------------------------------------------------------------- shared
def check_store_argument(value: str) -> None:
    """Refuse a store argument that looks like a local path but names no folder.

    A store is given as an existing folder or a Hub repo id (`name` or `user/name`). A mistyped folder
    would otherwise go to the Hub and come back as a network error (`outputs/quickstrat`) or as "Repo id
    must be in the form ..." (`/abs/path`). The rule: an argument that is not an existing folder is a
    local path, and refused as "no such folder", when

    - it starts with `/`, `.` or `~`, or holds a backslash: a repo id never does;
    - it has more than one `/`: a repo id has at most one;
    - its part before the one `/` is an existing local folder (`outputs/quickstrat` when `outputs/`
      exists): a folder named like the repo's owner in the working directory is far likelier a typo.
      To reach such a repo, run from another folder.

    An existing file is refused as "not a folder". Anything else goes on to the Hub.
    """
    if os.path.isdir(value):
        return
    parts = value.split("/")
    pathlike = (value.startswith(("/", ".", "~")) or "\\" in value or os.path.isabs(value)
                or len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0])))
    if os.path.exists(value):
        raise HfMtlError(f"{value} is a file, not a store folder. Fix: give the output folder that holds mtl_config.json.")
    if pathlike:
        raise HfMtlError(f"no such folder: {value}.{_near_folders(value)} "
                         f"Fix: give an existing output folder, or a Hub repo id user/name.")


def _near_folders(value: str) -> str:
    """` Did you mean ...?` from the folders beside the missing one, when its parent exists."""
    path = Path(os.path.expanduser(value))
    if not path.parent.is_dir():
        return f" ({path.parent} does not exist either.)" if str(path.parent) not in ("", ".") else ""
    siblings = [p.name for p in path.parent.iterdir() if p.is_dir()]
    near = difflib.get_close_matches(path.name, siblings, n=3)
    return f" Did you mean {' or '.join(str(path.parent / n) for n in near)}?" if near else ""


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, sequence lengths)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer. Fix: give a whole number of 1 or more")
    return number


def _json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON: non-finite floats (NaN scores of a diverged model, Pearson of a constant) become null,
    since `NaN` and `Infinity` are not JSON and break the readers of these lines."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _no_extra(extra: list[str]) -> None:
    if extra:
        raise HfMtlError(f"Unrecognized arguments: {' '.join(extra)}.")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") in ("0", "-1")


# ---------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Command:
    """One subcommand: its arguments, and the function that runs it (which imports its own backend)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, list[str]], int]
    takes_extra: bool = False  # `train` takes `--field value` recipe overrides, `predict` texts after options
    store_argument: bool = False  # `args.store` is a store folder or repo id: see `check_store_argument`
    description: str | None = None


COMMANDS: tuple[Command, ...] = (
    Command("train", "Train the tasks of a JSON recipe.", _train_arguments, _train, takes_extra=True,
            description="Train a recipe (training_args/*.json). Any recipe field can be overridden with --field value "
                        "(JSON values; dotted fields reach into tasks: --tasks.0.max_train_samples 50)."),
    Command("eval", "Evaluate a trained store on its tasks' validation or test data.", _eval_arguments, _eval,
            store_argument=True),
    Command("predict", "Predict with one task (or all) of a store; prints JSON lines.", _predict_arguments, _predict,
            takes_extra=True, store_argument=True),
    Command("push", "Push tasks of a store to a Hub repo (other tasks in the repo stay).",
            cli_hub.push_arguments, cli_hub.run_push),
    Command("pull", "Download the files some tasks of a Hub repo need, verified.", cli_hub.pull_arguments,
            cli_hub.run_pull),
    Command("export", "Write one task as a standalone transformers model (AutoModelFor...).",
            cli_hub.export_arguments, cli_hub.run_export, store_argument=True),
)


class _UsageError(HfMtlError):
    """A command line argparse rejects."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one `error: ...` line like every other error of the CLI."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise _UsageError(f"{message} (see `{self.prog} --help`).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-mtl", description="Multi-task learning with adapters on the Hugging Face stack.")
    sub = parser.add_subparsers(dest="command_name", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.description or command.help,
                               conflict_handler="resolve")  # `train` has a help of its own (`_RecipeHelp`)
        command.arguments(child)
        child.set_defaults(command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        command: Command = args.command
        if extra and not command.takes_extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if command.store_argument:
            check_store_argument(args.store)
        return command.run(args, extra)
    except (HfMtlError, FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # `train` says what was saved; the other commands save nothing
        print("interrupted.", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
