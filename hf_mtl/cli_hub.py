"""`hf-mtl push | pull | export`: their arguments and the functions that run them (rows of `hf_mtl.cli.COMMANDS`).

    hf-mtl push OUTPUT_DIR user/repo [--tasks a b] [--private] [--revision BRANCH] [--create-pr] [--token T]
    hf-mtl pull user/repo [--tasks a] [--revision REV] [--local-dir DIR (default: adapters/user/repo)] [--token T]
    hf-mtl export OUTPUT_DIR --task T OUT    (a transformers AutoModelFor... folder; `lora` tasks merged)

This module imports only argparse and json: the Hub client and torch are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os


ADAPTERS_DIR = "adapters"  # `hf-mtl pull user/repo` writes to ./adapters/user/repo (the repository's local store)


def run_push(args: argparse.Namespace, extra: list[str]) -> int:
    from .hub import push

    result = push(args.store, args.repo_id, tasks=args.tasks, private=args.private, revision=args.revision,
                  create_pr=args.create_pr, token=args.token, commit_message=args.message)
    print(json.dumps({"repo_id": result.repo_id, "commit": result.commit, "committed": result.committed,
                      "changed": result.changed, "deleted": result.deleted, "pr_url": result.pr_url,
                      "replaced": result.replaced}, indent=2))
    return 0


def run_pull(args: argparse.Namespace, extra: list[str]) -> int:
    from .hub import pull

    local_dir = args.local_dir or _default_local_dir(args.repo_id)
    print(pull(args.repo_id, tasks=args.tasks, revision=args.revision, local_dir=local_dir, token=args.token))
    return 0


def _default_local_dir(repo_id: str) -> str:
    """`adapters/<user>/<repo>`; the repo id is checked first, since it becomes a path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from .errors import StoreError

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise StoreError(f"Invalid repo id {repo_id!r}: {str(err).splitlines()[0]} Fix: give user/name.") from err
    return os.path.join(ADAPTERS_DIR, *repo_id.split("/"))


def run_export(args: argparse.Namespace, extra: list[str]) -> int:
    from .store.export import export_task

    print(export_task(args.store, args.task, args.output, revision=args.revision, token=args.token))
    return 0


def push_arguments(push: argparse.ArgumentParser) -> None:
    """The arguments of `hf-mtl push`."""
    push.add_argument("store", help="A store folder (an output folder of `hf-mtl train`).")
    push.add_argument("repo_id", help="The Hub repo, user/name (created when missing).")
    push.add_argument("--tasks", nargs="+", default=None, help="Only these tasks (default: all of the store).")
    push.add_argument("--private", action="store_true", help="Create the repo private.")
    push.add_argument("--revision", help="Branch to push to (created when missing), or refs/pr/N.")
    push.add_argument("--create-pr", action="store_true", help="Open a pull request instead of committing.")
    push.add_argument("--token", help="Write token (default: HF_TOKEN or `hf auth login`).")
    push.add_argument("--message", help="Commit message.")


def pull_arguments(pull: argparse.ArgumentParser) -> None:
    """The arguments of `hf-mtl pull`."""
    pull.add_argument("repo_id", help="The Hub repo, user/name.")
    pull.add_argument("--tasks", nargs="+", default=None, help="Only these tasks (default: all).")
    pull.add_argument("--revision", help="Branch, tag, commit or refs/pr/N.")
    pull.add_argument("--local-dir", help=f"Put the store in this folder (default: {ADAPTERS_DIR}/<user>/<repo> under the "
                      "working directory). It must be empty, absent or a folder an earlier pull of the same repo made.")
    pull.add_argument("--token", help="Token for private repos (default: HF_TOKEN or `hf auth login`).")


def export_arguments(export: argparse.ArgumentParser) -> None:
    """The arguments of `hf-mtl export`."""
    export.add_argument("store", help="A store folder or a Hub repo id.")
    export.add_argument("output", help="New folder for the transformers model (AutoModelForSequenceClassification / "
                        "TokenClassification, or AutoModelForCausalLM / Seq2SeqLM with the task's generation_config.json).")
    export.add_argument("--task", required=True, help="The task to export.")
    export.add_argument("--revision", help="Hub revision of the store.")
    export.add_argument("--token", help="Token for private repos.")
