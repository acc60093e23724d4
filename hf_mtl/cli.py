"""`hf-mtl`: train, evaluate and use multi-task models from the command line.

    hf-mtl train RECIPE.json [--field value ...]
    hf-mtl eval OUTPUT_DIR [--split validation|test] [--tasks a b]
    hf-mtl predict OUTPUT_DIR|REPO_ID --task T|all [TEXT ... | --input FILE] [--language X] [--revision R]
    hf-mtl push | pull | export   (see `hf_mtl.cli_hub`)

Errors print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Sequence

from .errors import HfMtlError


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from .run import load_recipe, run_training

    recipe = load_recipe(args.recipe, extra)
    out = run_training(recipe)
    if _is_main_process():
        summary = {k: v for k, v in out.get("eval", {}).items() if k.endswith(("_average",)) or "accuracy" in k or "f1" in k
                   or "pearson" in k}
        print(json.dumps({"output_dir": recipe.output_dir, "train_loss": out["train"].get("train_loss"), **summary}, indent=2))
    return 0


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from .run import run_evaluation

    _no_extra(extra)
    metrics = run_evaluation(args.store, split=args.split, tasks=args.tasks, batch_size=args.batch_size,
                             max_seq_length=args.max_seq_length, max_samples=args.max_samples)
    text = json.dumps(metrics, indent=2, sort_keys=True)
    if args.output:
        from .io_utils import atomic_write_bytes

        atomic_write_bytes(args.output, (text + "\n").encode())
    print(text)
    return 0


def _predict(args: argparse.Namespace, extra: list[str]) -> int:
    from .modeling import MultiTaskModel

    # argparse gives texts that follow an option (`STORE --task T TEXT`) as extra arguments
    _no_extra([e for e in extra if e.startswith("--")])
    args.texts = list(args.texts) + extra
    inputs = _read_inputs(args)
    model = MultiTaskModel.from_pretrained(args.store, tasks=[args.task] if args.task != "all" else None,
                                           revision=args.revision, token=args.token)
    # --task all: one line per input, {task: prediction}; tasks sharing the backbone share its pass
    for row in model.predict(inputs, task=args.task, batch_size=args.batch_size, max_length=args.max_seq_length,
                             language=args.language):
        print(json.dumps(row, ensure_ascii=False))
    return 0


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
    with open(args.input, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if line.strip():
                rows.append(_parse_input_line(line, args.input, number))
    return rows


def _parse_input_line(line: str, path: str, number: int) -> Any:
    if not line.lstrip().startswith("{"):
        return line
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise HfMtlError(f"{path} line {number} is not valid JSON: {err}.") from err
    if "tokens" in obj:
        return obj["tokens"]
    if "text" not in obj:
        raise HfMtlError(f"{path} line {number}: a JSON input needs `text` (and `text_pair`) or `tokens`.")
    return (obj["text"], obj["text_pair"]) if "text_pair" in obj else obj["text"]


def _no_extra(extra: list[str]) -> None:
    if extra:
        raise HfMtlError(f"Unrecognized arguments: {' '.join(extra)}.")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") in ("0", "-1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-mtl", description="Multi-task learning with adapters on the Hugging Face stack.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="Train the tasks of a JSON recipe.",
                           description="Train a recipe (training_args/*.json). Any recipe field can be overridden with "
                                       "--field value (JSON values; dotted fields reach into tasks: --tasks.0.max_train_samples 50).")
    train.add_argument("recipe", help="Path of a JSON recipe (MultiTaskTrainingArguments fields).")
    train.set_defaults(func=_train, allow_extra=True)

    ev = sub.add_parser("eval", help="Evaluate a trained store on its tasks' validation or test data.")
    ev.add_argument("store", help="An output folder or a Hub repo id.")
    ev.add_argument("--split", choices=["validation", "test"], default="validation")
    ev.add_argument("--tasks", nargs="+", default=None, help="Only these tasks.")
    ev.add_argument("--max-samples", type=int, default=None,
                    help="Rows per task: 0 = all of them (default: each task's saved max_eval_samples).")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-seq-length", type=int, default=128)
    ev.add_argument("--output", help="Also write the metrics to this JSON file.")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="Predict with one task (or all) of a store; prints JSON lines.")
    pr.add_argument("store", help="An output folder or a Hub repo id (only the task's files are pulled).")
    pr.add_argument("--task", required=True, help="Task name, or 'all' for every task of the store (one line per input).")
    pr.add_argument("texts", nargs="*", help="Input texts (token tasks: words separated by spaces).")
    pr.add_argument("--input", help="A file with one text per line, or JSON lines with text/text_pair/tokens.")
    pr.add_argument("--language", help="Language adapter to use (zero-shot cross-lingual transfer).")
    pr.add_argument("--revision", help="Hub revision of the store.")
    pr.add_argument("--token", help="Hub token for a private repo (default: HF_TOKEN or `hf auth login`).")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--max-seq-length", type=int, default=128)
    pr.set_defaults(func=_predict, allow_extra=True)
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Other modules add sub-commands (push, pull, export) here: fn(subparsers) -> None.
EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _load_extra_commands()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except (HfMtlError, FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _load_extra_commands() -> None:
    import importlib.util

    if importlib.util.find_spec("hf_mtl.hub") is not None:
        importlib.import_module("hf_mtl.hub")  # registers push / pull / export


if __name__ == "__main__":
    sys.exit(main())
