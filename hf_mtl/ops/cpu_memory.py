"""Keep freed tensor memory in the process while training on the CPU (Linux, glibc's malloc).

PyTorch's CPU tensors come from `malloc`. glibc serves a block above its *mmap threshold* (128 KiB at
start, raised as large blocks are freed, to at most 32 MiB) with a fresh `mmap`, unmaps it again on
`free`, and hands the top of its heap back to the OS once more than the *trim threshold* (twice the
mmap threshold) lies free there. A train step allocates and frees the same activation tensors every
step (MiniLM at 32 x 128 tokens: 25 MB attention maps per layer, 29 MB with 20 prefix keys), so the
next step's tensors often land on pages that the kernel must fault in and zero again: the same copy,
softmax or masked_fill then costs several times as much (seen on the 2-core benchmark VM: one
attention forward + backward over 148 keys 126-140 ms against 95-105 ms with this setting).

`keep_freed_memory()` raises both thresholds with `mallopt` (M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, 1 GiB
and 2 GiB by default): blocks up to 1 GiB come from the heap, and freed ones stay there for the next
step. That is what PyTorch's CPU launcher (`python -m torch.backends.xeon.run_cpu`) gets by preloading
jemalloc or tcmalloc. The cost: the process keeps the heap it peaked at (the next step needs it again)
instead of returning it between steps. The setting holds for the whole process and cannot be undone
(glibc's dynamic threshold stays off), so `MultiTaskTrainer` applies it only on the CPU and only with
`MultiTaskTrainingArguments.cpu_keep_freed_memory` (default on). Elsewhere (macOS, musl, GPUs) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform


logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int

_applied: tuple[int, int] | None = None


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve blocks up to `mmap_threshold` bytes from the heap and keep up to `trim_threshold` free bytes there.

    Returns:
        True when glibc took both settings (now or in an earlier call with the same values), False where
        the process does not run on glibc or it refused them (nothing changed then).
    """
    global _applied
    if _applied == (mmap_threshold, trim_threshold):
        return True
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if not (libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)):
        return False
    _applied = (mmap_threshold, trim_threshold)
    logger.info("CPU training: freed tensor memory stays in the process (malloc mmap threshold %d MiB, trim threshold "
                "%d MiB); set cpu_keep_freed_memory=false to keep glibc's defaults", mmap_threshold >> 20, trim_threshold >> 20)
    return True
