"""The model card (`README.md`) of a store pushed to the Hub: YAML metadata, tasks, results, how to load.

The card is regenerated from the merged `mtl_config.json` and every task's `task.json` at each push,
so a task pushed by someone else keeps its section.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from ..errors import StoreError


# Keys of `eval_results.json` that are bookkeeping, not metrics of the task.
_NOT_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second")
_PREFIXES = ("eval", "test")
_KIND_TAGS = {
    "classification": "text-classification",
    "regression": "text-classification",
    "token_classification": "token-classification",
    "masked_lm": "fill-mask",
    "causal_lm": "text-generation",
    "seq2seq": "text2text-generation",
}
_GENERATIVE_KINDS = ("causal_lm", "seq2seq")
_MAX_LABELS = 20


def run_metrics(store_dir: str | os.PathLike, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-task metrics of the run that wrote `store_dir` (its `eval_results.json`, when present).

    Args:
        store_dir: an output folder of `hf-mtl train`.
        tasks: the task names to collect.

    Returns:
        `{task: {"eval_accuracy": 0.91, ...}}` (`eval_<task>_<metric>` becomes `eval_<metric>`).
    """
    path = Path(store_dir) / "eval_results.json"
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path} is not valid JSON ({err}). Fix: delete it or evaluate again (`hf-mtl eval`).") from err
    return task_metrics(results if isinstance(results, dict) else {}, tasks)


def task_metrics(results: dict[str, Any], tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """Split `{prefix}_{task}_{metric}` keys by task; the longest matching task name wins (`a` vs `a_b`)."""
    out: dict[str, dict[str, float]] = {}
    by_length = sorted(tasks, key=len, reverse=True)
    for key, value in results.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        for prefix in _PREFIXES:
            task = next((t for t in by_length if key.startswith(f"{prefix}_{t}_")), None)
            if task is None:
                continue
            metric = key[len(prefix) + len(task) + 2:]
            if metric not in _NOT_METRICS:
                out.setdefault(task, {})[f"{prefix}_{metric}"] = float(value)
            break
    return out


def render_card(config: dict[str, Any], tasks: dict[str, dict[str, Any]], repo_id: str) -> str:
    """The README.md of a store.

    Args:
        config: the store's (merged) `mtl_config.json`.
        tasks: `{name: task.json content}` of every task of the store (missing ones get a short entry).
        repo_id: the Hub repo the card describes.

    Returns:
        The card's text: YAML front matter, then Markdown.
    """
    names = list(config.get("tasks", []))
    sections = [
        "---\n" + _metadata(config, tasks).to_yaml() + "\n---\n",
        _intro(config, repo_id),
        _task_table(config, tasks, names),
        *(_task_section(config, name, tasks.get(name, {})) for name in names),
        _usage(config, repo_id, names, tasks),
    ]
    return "\n".join(sections).rstrip() + "\n"


def _metadata(config: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> ModelCardData:
    method = config.get("adapter_method", "none")
    if method == "none":
        method = "full-fine-tuning" if config.get("backbone_trained") else "head-only"
    kinds = sorted({t.get("kind", "classification") for t in tasks.values()})
    tags = ["hf_mtl", "multi-task", "adapters", method, *(_KIND_TAGS[k] for k in kinds if k in _KIND_TAGS)]
    if config.get("peft_adapters"):
        tags += ["peft", method]
    datasets = sorted({t["dataset_name"] for t in tasks.values() if t.get("dataset_name")})
    metrics = sorted({m for t in tasks.values() for m in (t.get("metrics") or [])})
    languages = sorted(set(config.get("languages") or []))
    base = config.get("base_model")
    # the Hub's widget and search read one pipeline: a store of generative tasks generates text
    generative = sorted({_KIND_TAGS[k] for k in kinds if k in _GENERATIVE_KINDS})
    return ModelCardData(
        base_model=base if _is_hub_id(base) else None,
        pipeline_tag=generative[0] if len(generative) == 1 else None,
        library_name="hf_mtl",
        tags=list(dict.fromkeys(tags)),
        datasets=datasets or None,
        metrics=metrics or None,
        language=languages or None,
    )


def _is_hub_id(name: Any) -> bool:
    """A Hub repo id (`org/name` or `name`), not a local path, which the Hub's metadata cannot point to."""
    return (isinstance(name, str) and bool(name) and name.count("/") <= 1 and not name.startswith((".", "/", "~"))
            and not os.path.isdir(name))


def _intro(config: dict[str, Any], repo_id: str) -> str:
    base = config.get("base_model") or "a backbone saved in `backbone/`"
    method = config.get("adapter_method", "none")
    trained = " The backbone itself was fine-tuned and is stored in `backbone/`." if config.get("backbone_trained") else ""
    return (
        f"# {repo_id.split('/')[-1]}\n\n"
        f"Multi-task model built with `hf_mtl`: one base model (`{base}`), "
        f"adapter method `{method}`, and one small module per task, stored in its own folder so each task can be "
        f"pulled alone.{trained}\n"
    )


def _task_table(config: dict[str, Any], tasks: dict[str, dict[str, Any]], names: list[str]) -> str:
    rows = ["## Tasks\n", "| task | kind | labels | dataset | trainable parameters |", "| --- | --- | --- | --- | --- |"]
    counts = (config.get("trainable_parameters") or {}).get("tasks", {})
    for name in names:
        task = tasks.get(name, {})
        labels = task.get("labels")
        total = (counts.get(name) or {}).get("total")
        rows.append(
            f"| `{name}` | {task.get('kind', '?')} | {len(labels) if labels else '-'} | "
            f"{task.get('dataset_name') or '-'} | {f'{total:,}' if isinstance(total, int) else '?'} |"
        )
    shared = (config.get("trainable_parameters") or {}).get("shared") or {}
    if shared.get("total"):
        rows.append(f"\nShared by every task: {shared.get('backbone', 0):,} trainable backbone parameters and "
                    f"{shared.get('adapter', 0):,} shared adapter parameters.")
    rows.append("\n`mtl_config.json` lists every file with its size and sha256; `hf-mtl pull` checks them.")
    return "\n".join(rows) + "\n"


def _task_section(config: dict[str, Any], name: str, task: dict[str, Any]) -> str:
    lines = [f"### `{name}`\n"]
    if task.get("kind"):
        lines.append(f"- kind: {task['kind']}" + (f" (sentence pairs: `{task['text_pair_column']}`)" if task.get("text_pair_column") else ""))
    if task.get("kind") in _GENERATIVE_KINDS:
        lines += _generative_lines(task)
    elif task.get("labels"):
        labels = task["labels"]
        shown = ", ".join(f"`{label}`" for label in labels[:_MAX_LABELS])
        lines.append(f"- labels ({len(labels)}): {shown}" + (", ..." if len(labels) > _MAX_LABELS else ""))
    if task.get("language"):
        lines.append(f"- language: {task['language']}")
    if task.get("dataset_name"):
        config_name = f" ({task['dataset_config']})" if task.get("dataset_config") else ""
        lines.append(f"- dataset: {task['dataset_name']}{config_name}")
    counts = ((config.get("trainable_parameters") or {}).get("tasks") or {}).get(name) or {}
    if counts:
        lines.append(f"- trainable parameters: head {counts.get('head', 0):,} + adapter {counts.get('adapter', 0):,}")
    results = (config.get("eval_results") or {}).get(name) or {}
    if results:
        lines += ["", "| metric | value |", "| --- | --- |", *(f"| {k} | {v:.4f} |" for k, v in sorted(results.items()))]
    return "\n".join(lines) + "\n"


def _generative_lines(task: dict[str, Any]) -> list[str]:
    """What a generative task reads and writes: its prompt, its target, its label words and generation settings."""
    lines = [f"- prompt template: `{json.dumps(task.get('prompt_template'), ensure_ascii=False)}`"]
    if task.get("label_words"):
        words = list(task["label_words"].items())
        shown = ", ".join(f"`{label}` → `{word}`" for label, word in words[:_MAX_LABELS])
        lines.append(f"- label words ({len(words)}, label column `{task.get('label_column')}`): {shown}"
                     + (", ..." if len(words) > _MAX_LABELS else ""))
    elif task.get("target_template"):
        lines.append(f"- target template: `{json.dumps(task['target_template'], ensure_ascii=False)}`")
    else:
        lines.append(f"- target column: `{task.get('target_column') or task.get('label_column')}`")
    generation = task.get("generation") or {}
    lines.append(f"- generation: `{json.dumps(generation, sort_keys=True)}`" if generation else
                 "- generation: greedy (the library's defaults)")
    return lines


_PEFT_BASE_CLASS = {"causal_lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def _usage(config: dict[str, Any], repo_id: str, names: list[str], tasks: dict[str, dict[str, Any]]) -> str:
    first = names[0] if names else "TASK"
    text = (
        "## Use with hf_mtl\n\n"
        "```python\n"
        "from hf_mtl.modeling import MultiTaskModel\n\n"
        f"model = MultiTaskModel.from_pretrained(\"{repo_id}\", tasks={json.dumps(names[:2])})  # pulls only these tasks\n"
        f"model.predict([\"a fine film\"], task=\"{first}\")\n"
        "```\n\n"
        "```bash\n"
        f"hf-mtl pull {repo_id} --tasks {first} --local-dir ./{repo_id.split('/')[-1]}\n"
        f"hf-mtl predict {repo_id} --task {first} \"a fine film\"\n"
        "```\n"
    )
    if config.get("peft_adapters"):  # the method saves each task folder as a PEFT adapter (`saves_peft_format`)
        base = config.get("base_model") or "BASE_MODEL"
        kind = tasks.get(first, {}).get("kind")  # the base class a task's adapter sits on: the LM for generative kinds
        auto = _PEFT_BASE_CLASS.get(kind, "AutoModel")
        text += (
            "\n## Use a task's LoRA adapter with PEFT alone\n\n"
            "Each task folder is a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`); the task's head "
            "is `head.safetensors` in the same folder.\n\n"
            "```python\n"
            f"from peft import PeftModel\nfrom transformers import {auto}\n\n"
            f"base = {auto}.from_pretrained(\"{base}\")\n"
            f"model = PeftModel.from_pretrained(base, \"{repo_id}\", subfolder=\"{first}\")\n"
            "```\n"
        )
    return text
