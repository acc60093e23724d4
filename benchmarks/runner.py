"""Where and how the speed benchmarks time their steps: runner processes, lazy building, paired rounds, probes.

A runner process builds one library's configurations, warms each up, and times them when asked: AdapterHub's
(`adapterhub_runner.py --serve`, in its own venv) and hf_mtl's or PEFT's (`adapters_speed.py --serve`, in this
venv) speak the same protocol (stdin: `{"cmd": "run", "configs": [...], "steps": k}` / `{"cmd": "quit"}`;
stdout: `@@JSON` lines). Only one process computes at a time: the parent waits for each answer.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import MODEL
from benchmarks.adapterhub_runner import PROTOCOL, Bench
from benchmarks.configs import FLOOR, library_of
from hf_mtl.ops import cpu_memory


HERE = Path(__file__).resolve().parent
RUNNER = HERE / "adapterhub_runner.py"
SPEED_SCRIPT = HERE / "adapters_speed.py"  # its `--serve` and `--memory-probe` modes time hf_mtl's and PEFT's steps
VENV = Path.home() / ".cache" / "hf_mtl_bench" / "adapterhub-venv"
VENV_REQUIREMENTS = ["adapters==1.3.*", "transformers==4.57.6"]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # fixed threshold: freed tensors return to the OS
# every timing process (hf_mtl's, PEFT's and AdapterHub's runners) with the malloc settings that MultiTaskTrainer applies
# on the CPU (hf_mtl.ops.cpu_memory.keep_freed_memory), as environment variables so that all three get them alike
KEEP_FREED_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(cpu_memory.MMAP_THRESHOLD),
                         "MALLOC_TRIM_THRESHOLD_": str(cpu_memory.TRIM_THRESHOLD)}


def add_shape_args(parser: argparse.ArgumentParser, rounds: int) -> None:
    """The options every speed script shares: `--rounds`, the batch shape (`--batch` x `--seq`) and `--threads`."""
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)


def runner_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """`args` completed with what `start_local`/`start_adapterhub` read, for scripts without those options:
    one warm-up step, all-MiniLM-L6-v2 on the CPU in float32, and adapters_speed's default `--malloc keep`."""
    defaults = {"warmup": 1, "model": MODEL, "device": "cpu", "bf16": False, "malloc": "keep"}
    return argparse.Namespace(**{**defaults, **vars(args)})


def ensure_venv() -> Path:
    """The AdapterHub venv (created once): system site-packages for torch, adapters 1.3 + transformers 4.57."""
    python = VENV / "bin" / "python"
    marker = VENV / ".hf_mtl_bench_ready"
    if marker.exists():
        return python
    print(f"creating {VENV} (once): {' '.join(VENV_REQUIREMENTS)}", flush=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    # pin the system's torch so pip never downloads another one (the CUDA build is GBs)
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *VENV_REQUIREMENTS, torch_pin], check=True)
    check = subprocess.run([str(python), "-c", "import torch, adapters; print(torch.__file__)"],
                           check=True, capture_output=True, text=True)
    if str(VENV) in check.stdout:
        raise RuntimeError(f"pip installed a second torch into {VENV}: {check.stdout.strip()}; delete the venv and pin torch.")
    marker.write_text(" ".join(VENV_REQUIREMENTS) + "\n")
    return python


def _protocol_line(process: subprocess.Popen) -> dict[str, Any]:
    for line in process.stdout:
        if line.startswith(PROTOCOL):
            return json.loads(line[len(PROTOCOL):])
    raise RuntimeError(f"the runner {process.args[:3]} ended without an answer (exit code {process.wait()}); "
                       "see its stderr above")


class Runner:
    """A process that builds one library's configurations, warms each up, and times them when asked.

    The protocol of `adapterhub_runner.py --serve` (stdin: `{"cmd": "run", "configs": [...], "steps": k}` /
    `{"cmd": "quit"}`; stdout: `@@JSON` lines), spoken by AdapterHub's runner in its venv and by this script's
    `--serve` for hf_mtl and PEFT. Only one process computes at a time: the parent waits for each answer.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        self.command, self.env = command, env or {}
        self._start()
        self.info = _protocol_line(self.process)

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env={**os.environ, **self.env, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"},
        )

    def run(self, names: list[str], steps: int) -> dict[str, list[float]]:
        self.process.stdin.write(json.dumps({"cmd": "run", "configs": names, "steps": steps}) + "\n")
        self.process.stdin.flush()
        return _protocol_line(self.process)["times"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)

    @staticmethod
    def restart(runners: list[Runner]) -> None:
        """End these runners and start each anew (all building at once: nothing is timed meanwhile)."""
        for runner in runners:
            runner.close()
            runner._start()
        for runner in runners:
            runner.info = _protocol_line(runner.process)


def _shape_args(args: argparse.Namespace) -> list[str]:
    return ["--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads), "--warmup", str(args.warmup)]


def start_adapterhub(python: Path, model_path: str, args: argparse.Namespace) -> Runner:
    """AdapterHub's configurations, in its venv (transformers 4.57)."""
    return Runner([str(python), str(RUNNER), "--serve", "--model", model_path, *_shape_args(args)], runner_env(args))


def start_local(names: list[str], args: argparse.Namespace) -> Runner:
    """hf_mtl's or PEFT's configurations `names`, in a process of this venv (`--serve`)."""
    return Runner([sys.executable, str(SPEED_SCRIPT), "--serve", json.dumps(names), "--model", args.model,
                   *_shape_args(args), "--device", args.device] + (["--bf16"] if args.bf16 else []), runner_env(args))


def runner_env(args: argparse.Namespace) -> dict[str, str]:
    """The malloc settings of the timing processes: `--malloc keep` (default) those of MultiTaskTrainer on the CPU."""
    return KEEP_FREED_MEMORY_ENV if args.malloc == "keep" and args.device == "cpu" else {}


class InlineSource:
    """Configurations timed in this process (`--local-in main`), built at their first use."""

    def __init__(self, benches: LazyBenches):
        self.benches = benches

    def run(self, names: list[str], steps: int) -> dict[str, list[float]]:
        return {name: self.benches[name].run(steps) for name in names}


def probe(command: list[str], on_result: Callable[[str, dict], None]) -> None:
    """Run a memory probe process; it prints one protocol line per configuration (`{"config": .., "mib": ..,
    "gflop": ..}`) and a last one `{"done": true}`, so an interrupted probe still leaves the configurations it measured."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, **MALLOC_ENV, "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"})
    while True:
        answer = _protocol_line(process)
        if answer.get("done"):
            break
        on_result(answer["config"], answer)
    process.wait()


def adapterhub_memory(python: Path, model_path: str, args: argparse.Namespace, on_result: Callable[[str, dict], None]) -> None:
    """AdapterHub's peak memory and FLOPs per configuration, in a probe process of its venv."""
    probe([str(python), str(RUNNER), "--memory", "--model", model_path, "--batch", str(args.batch), "--seq", str(args.seq),
           "--threads", str(args.threads)], on_result)


def local_memory(args: argparse.Namespace, names: list[str], on_result: Callable[[str, dict], None]) -> None:
    """hf_mtl's and PEFT's configurations `names`: peak memory and FLOPs, in a probe process (`--memory-probe`)."""
    probe([sys.executable, str(SPEED_SCRIPT), "--memory-probe", json.dumps(names), "--model", args.model,
           "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads), "--device", args.device]
          + (["--bf16"] if args.bf16 else []), on_result)


def peak_cuda_delta_mib(bench: Bench, steps: int = 1) -> float:
    """GPU counterpart of `peak_rss_delta_mib`: the allocator's peak over `steps` training steps above what was
    allocated before them (AdamW's state is created inside, as on the CPU probe with warmup=0)."""
    gc.collect()
    if bench.activate is not None:
        bench.activate()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    for _ in range(steps):
        bench.step()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


class LazyBenches:
    """The local configurations, each model built (untimed) the first time one of its configurations runs,
    so a run stopped by --max-minutes never pays for models it does not reach."""

    def __init__(self, factories: dict[str, Callable[[], list[Bench]]], warmup: int):
        self.factories, self.warmup = factories, warmup
        self.built: dict[str, Bench] = {}

    def __getitem__(self, name: str) -> Bench:
        if name not in self.built:
            key = name.removesuffix("/mixed") if name.endswith("/mixed") else name
            for bench in self.factories[key]():
                self.built[bench.name] = bench
                bench.run(self.warmup)  # AdamW creates its state at the first step
        return self.built[name]


def time_aba(new: Bench, old: Bench, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Two ways of the same step, paired in this process: per round `new`, `old`, `new`, one step each.

    Returns:
        per round: the mean of the two `new` steps over the `old` one (drift within a round cancels), the
        `new` time (that mean) and the `old` time, in seconds.
    """
    ratios, new_times, old_times = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        new.run(1)
        t1 = time.perf_counter()
        old.run(1)
        t2 = time.perf_counter()
        new.run(1)
        t3 = time.perf_counter()
        new_times.append((t1 - t0 + t3 - t2) / 2)
        old_times.append(t2 - t1)
        ratios.append(new_times[-1] / old_times[-1])
    return ratios, new_times, old_times


def time_rounds(args: argparse.Namespace, sources: dict[str, Runner | InlineSource], groups: list[list[str]],
                on_round: Callable[[dict], None], deadline: float | None = None) -> dict[str, list[dict[str, float]]]:
    """Per round: {config: median step time} and {config: ratio to the floor steps around its group}.

    `sources` maps a library (the first part of a configuration's name) to what times its configurations."""
    times: list[dict[str, float]] = []
    ratios: list[dict[str, float]] = []

    def run(names: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for library, chunk in itertools.groupby(names, key=library_of):  # in order, a request per run of one library
            out.update({k: statistics.median(v) for k, v in sources[library].run(list(chunk), args.steps).items()})
        return out

    def floor_step() -> float:
        return run([FLOOR])[FLOOR]

    runners = [s for s in sources.values() if isinstance(s, Runner)]  # one per library (InlineSource may serve two)
    for r in range(args.rounds):
        if deadline is not None and r >= 1 and time.perf_counter() > deadline:
            print(f"--max-minutes reached: stopping after {r} rounds", flush=True)
            break
        if args.restart_every and r and r % args.restart_every == 0 and runners:
            Runner.restart(runners)  # a process's own speed (layout, allocator) averages out over restarts
        order = groups if r % 2 == 0 else [list(reversed(g)) for g in reversed(groups)]
        round_times: dict[str, float] = {}
        round_ratios: dict[str, float] = {}
        floors = [floor_step()]
        for group in order:
            if deadline is not None and time.perf_counter() > deadline:
                break  # a partial round: the groups done are paired with their own floor steps
            group_times = run(group)
            floors.append(floor_step())
            reference = (floors[-2] + floors[-1]) / 2
            for name, value in group_times.items():
                round_times[name] = value
                round_ratios[name] = value / reference
        round_times[FLOOR] = statistics.median(floors)
        round_ratios[FLOOR] = 1.0
        times.append(round_times)
        ratios.append(round_ratios)
        round_times["_loadavg"] = os.getloadavg()[0]
        print(f"round {r + 1}/{args.rounds} ({len(round_ratios) - 1} configurations, load average "
              f"{round_times['_loadavg']:.1f}): floor {round_times[FLOOR]:.3f}s; "
              + ", ".join(f"{n} {round_ratios[n]:.2f}x" for n in round_ratios if n != FLOOR), flush=True)
        on_round({"times": times, "ratios": ratios})
    return {"times": times, "ratios": ratios}

