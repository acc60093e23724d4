"""Atomic writes and safe reads: a crash never leaves a half-written file, nothing is unpickled."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import StoreError


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (`/proc/self/status`)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (the only portable way to read it)
    os.umask(mask)
    return mask


def normal_mode(directory: bool = False) -> int:
    """The mode `open()` / `mkdir()` would give a new file or folder under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`."""
    with _temporary_sibling(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (Python or numpy) replaced by None, so it is valid JSON.

    Scores are NaN when a metric is undefined (e.g. accuracy over no rows); JSON has no NaN, and
    `json.dumps` would write the invalid token `NaN`.
    """
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON atomically; NaN and infinite numbers become null (see `json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (contiguous CPU copies; shared storage is split)."""
    with _temporary_sibling(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)


@contextmanager
def _temporary_sibling(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path next to `path`, renamed onto it on success (with a normal write's mode), removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, normal_mode())  # mkstemp creates 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupt file raises a StoreError naming `what` and the path."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{what}: file {path} is missing. Fix: save or pull the task again.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise StoreError(
            f"{what}: {path} is not a valid safetensors file ({err}). Fix: delete it and save or pull the task again; "
            f"only safetensors files are read (nothing is unpickled)."
        ) from err


def read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{what}: {path} is missing.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{what}: {path} is not valid JSON ({err}). Fix: save or pull it again.") from err


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- folders
# `.<name>.saving-<pid>-<random>`: a folder being written (or, after the swap, the replaced one being removed)
_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.saving-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def staging_folder(target: Path) -> Path:
    """A new empty folder next to `target` to write a replacement of `target` into (see `swap_in`).

    Staging folders of saves whose process is gone (killed) are removed first. The folder gets the
    mode of `target` (or of a normal `mkdir`), not `mkdtemp`'s 0700.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-{os.getpid()}-", dir=target.parent))
    os.chmod(staging, target.stat().st_mode & 0o7777 if target.is_dir() else normal_mode(directory=True))
    return staging


def is_staging_name(name: str) -> bool:
    return _STAGING_RE.match(name) is not None


def remove_stale_staging(target: Path) -> None:
    """Remove the staging folders of `target` left by saves whose process no longer runs."""
    for entry in target.parent.iterdir():
        match = _STAGING_RE.match(entry.name)
        if match and match["name"] == target.name and not _process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def swap_in(staging: Path, target: Path) -> Path | None:
    """Put the complete folder `staging` in the place of `target` and return where the old `target` went.

    On Linux, `renameat2(RENAME_EXCHANGE)` swaps both names in one step: at every moment `target` is
    either the old folder or the new one. Elsewhere (or on a filesystem without it) the old folder is
    renamed aside, then the new one into place: two renames, with a moment between them when `target`
    is missing. Returns None when there was no old `target`.
    """
    if not target.exists():
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-{os.getpid()}-", dir=target.parent))
    os.rmdir(aside)
    os.rename(target, aside)
    os.rename(staging, target)
    return aside


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def link_or_copy(src: str, dst: str) -> str:
    """Hard-link `src` to `dst` (no data copied), or copy it where links are unsupported; keep an existing `dst`."""
    if os.path.lexists(dst):
        return dst
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
