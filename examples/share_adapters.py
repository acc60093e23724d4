"""Push each task's adapter to a Hub, pull back only what one task needs, and swap tasks by name.

    python examples/train_two_tasks.py          # first: writes the store outputs/two_tasks
    python examples/share_adapters.py            # "Hub" = the local folder outputs/hub
    python examples/share_adapters.py --repo you/two-tasks   # the Hugging Face Hub (needs `hf auth login`)

A local folder and a Hub repo hold the same layout (`mtl_config.json` + one folder per task), so the
same two calls work on both: `save_pretrained(folder, tasks=[...])` / `push_to_hub(repo, tasks=[...])`
write only those tasks' folders (the others stay), and `from_pretrained(folder_or_repo, tasks=[...])`
reads (or downloads) only the files those tasks need.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hf_mtl import MultiTaskModel


def main(argv: Sequence[str] | None = None) -> None:
    cli = parse_args(argv)
    trained = MultiTaskModel.from_pretrained(cli.store)  # every task of the trained store
    hub = cli.repo or cli.hub_dir

    # push: one task per commit; each touches only its own folder, so the other tasks stay
    for task in trained.task_names:
        if cli.repo:
            trained.push_to_hub(cli.repo, tasks=[task])
        else:
            trained.save_pretrained(cli.hub_dir, tasks=[task])
        print(f"pushed {task!r} to {hub}")

    # pull: only the first task's head and adapter (plus the shared config) come back
    first = trained.task_names[0]
    one = MultiTaskModel.from_pretrained(hub, tasks=[first])
    print(f"pulled {one.task_names}:", one.predict([cli.text], task=first))

    # swap: one frozen backbone, every task attached; the task name picks head and adapter per call
    every = MultiTaskModel.from_pretrained(hub)
    for task in every.task_names:
        print(f"{task}:", every.predict([cli.text], task=task))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="outputs/two_tasks", help="a trained store (examples/train_two_tasks.py)")
    parser.add_argument("--hub-dir", default="outputs/hub", help="the local folder that stands in for a Hub repo")
    parser.add_argument("--repo", default=None, help="push to and pull from this Hub repo (user/name) instead")
    parser.add_argument("--text", default="John Smith loved the film he saw in Paris")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
