"""keep_freed_memory: freed tensor memory stays in the process (glibc), and MultiTaskTrainer applies it on the CPU."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_mtl import trainer as trainer_module
from test_trainer import make_trainer


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process (the setting is process-wide): allocate and touch a 48 MiB tensor, free it, and read glibc's
# mallinfo2: `fordblks` is the free memory the heap keeps, `hblkhd` what is mmapped right now.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import torch
    from hf_mtl.ops.cpu_memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    block = torch.ones(12 * 1024 * 1024)  # 48 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
    while_held = libc.mallinfo2()
    del block
    after = libc.mallinfo2()
    print(json.dumps({"applied": applied, "mmapped_while_held": while_held.hblkhd, "heap_free_after": after.fordblks}))
""")


def _probe(tmp_path: Path, mode: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds exist in glibc's malloc only (Linux with glibc)")
def test_a_freed_block_stays_in_the_heap_only_with_keep_freed_memory(tmp_path: Path) -> None:
    block = 48 * 1024 * 1024
    default = _probe(tmp_path, "default")
    assert default["mmapped_while_held"] >= block  # glibc's default: a fresh mapping ...
    assert default["heap_free_after"] < block  # ... returned to the OS when freed
    kept = _probe(tmp_path, "keep")
    assert kept["applied"] is True
    assert kept["mmapped_while_held"] < block  # from the heap ...
    assert kept["heap_free_after"] >= block  # ... and still there for the next step


def test_keep_freed_memory_does_nothing_without_glibc(monkeypatch) -> None:
    from hf_mtl.ops import cpu_memory

    monkeypatch.setattr(cpu_memory, "_applied", None)
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    assert cpu_memory.keep_freed_memory() is False
    assert cpu_memory._applied is None


@pytest.mark.parametrize("keep", [True, False])
def test_trainer_keeps_freed_memory_on_the_cpu_unless_asked_not_to(tmp_path: Path, monkeypatch, keep: bool) -> None:
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(True) or True)
    make_trainer(tmp_path / "run", max_steps=1, cpu_keep_freed_memory=keep)
    assert calls == ([True] if keep else [])
