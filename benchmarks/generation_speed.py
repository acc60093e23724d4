"""Mixed-task generation and training speed on a generative LM (issue 23, "2. Speed"): hf_mtl's one-call `generate`
over rows of 4 LoRA tasks against the same rows as one single-task batch, 4 separate single-task calls and PEFT's
`generate(adapter_names=...)` on the same weights; hf_mtl's training step against PEFT's, a 4-task batch against a
single-task one, and the adapter methods against the frozen-backbone floor; the peak memory of each.

    python benchmarks/generation_speed.py                 # SmolLM2-135M-Instruct (offline copy), float32, CPU, 2 threads
    python benchmarks/generation_speed.py --quick         # a tiny random Llama (CI smoke: shapes and finite numbers)
    python benchmarks/generation_speed.py --parts train,memory      # a subset of generate,train,memory
    python benchmarks/generation_speed.py --device cuda --bf16      # on a GPU

Generation (`--prompts` 32 rows, 4 tasks interleaved, `--rounds` 5): every row generates exactly `--new-tokens` (32)
tokens (`min_new_tokens` = `max_new_tokens`), greedy and with 2 beams; time to first token is a 1-token generation
of the same rows. Configurations: `hf_mtl_mixed` (one call, rows routed to their tasks' LoRA), `hf_mtl_single` (the
same rows all as one task), `hf_mtl_separate` (one call per task), `peft_mixed` (PEFT's mixed-adapter generate on
the adapters hf_mtl saved). Ratios: hf_mtl_mixed / each.

Training (`--train-batch` 16 x `--train-seq` 256 tokens, `--train-rounds` 5): one step = forward + backward + AdamW
step + zero_grad (`adapterhub_runner.Bench.step`, the encoder benchmark's step) on one fixed batch: random ids,
half of the rows right-padded over their last quarter, the labels scoring the last quarter of each row's real
tokens (a prompt + target row; the rest -100). Every configuration's loss is the mean token cross-entropy of the
shifted labels over the scored tokens: hf_mtl's per-task LM loss, and for PEFT the LM's own loss (`labels=`),
which computes the same.
- `hf_mtl/lora`: LoRA r=8 on hf_mtl's default target modules (q_proj, v_proj for Llama), a single-task batch;
  `peft/lora`: `get_peft_model` on a plain AutoModelForCausalLM with the same LoraConfig (built by hf_mtl's own
  `parse_lora_options`/`build_lora_config`: same r, alpha, targets, dropout). Goal: hf_mtl / PEFT ≤ 1.0.
- `hf_mtl/lora/mixed`: the same LoRA model on a batch of 4 tasks (4 rows each at 16 rows, interleaved; each row
  through its task's adapter, `hf_mtl.adapters.lora.layer.row_batch`) against its single-task batch (one model,
  one optimizer). Goal ≤ 1.05. `hf_mtl/bottleneck/mixed`: the same for the Pfeiffer bottleneck.
- `hf_mtl/floor`: the frozen backbone (adapter_method none), the input embeddings' output requiring grad so the
  backward runs through every layer (as it must for any adapter) with no weight gradient: the least any adapter
  costs. `hf_mtl/bottleneck` (Pfeiffer), `hf_mtl/prefix_tuning`, `hf_mtl/hyperformer++` as ratios to it (issue 23
  gives these no goal).
Configurations are built once, each warmed up by one step, then timed in interleaved rounds (each round runs
every configuration once, in an order rotated each round); ratios are paired medians over rounds with bootstrap
90% intervals (benchmarks/stats.py) and a verdict against the goal.

Peak memory (`--parts` memory): measured after the timings in a probe process (this script with a hidden
`--memory-probe`, started by `runner.probe` with MALLOC_MMAP_THRESHOLD_ fixed so freed tensors return to the OS),
one model at a time: one unmeasured call, then the peak over one call above the memory before it. On the CPU the
process's RSS (`peak_rss_delta_mib`: activations kept for backward, gradients, the optimizer's temporaries, the
generation caches); on a GPU the allocator's peak (`peak_cuda_delta_mib`, `torch.cuda.max_memory_allocated`).

On a GPU (`--device cuda`): every timed call ends with `torch.cuda.synchronize()` (a training step is timed between
two, as `Bench.step` does); with `--bf16` training runs the forward under `torch.autocast(bfloat16)` (float32
weights and AdamW, as the Trainer's bf16 does) and generation casts both models to bfloat16.

Writes `results.json`, `table.md` (a generation table and a training table) and `plot.png` (one panel each) under
`--out`.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/generation_speed.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.adapterhub_runner import Bench, count, emit, make_inputs, peak_rss_delta_mib
from benchmarks.configs import Placement, _hf_bench
from benchmarks.report import fmt, pyplot, write_json
from benchmarks.runner import peak_cuda_delta_mib, probe
from benchmarks.stats import paired, paired_ci, verdict


SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TASKS = ("sentiment", "topic", "places", "summary")
CONFIGS = ("hf_mtl_mixed", "hf_mtl_single", "hf_mtl_separate", "peft_mixed")
GOALS = {("hf_mtl_mixed", "hf_mtl_single"): 1.05, ("hf_mtl_mixed", "peft_mixed"): 1.0}
PARTS = ("generate", "train", "memory")
# training: adapter_method and adapter_config of each hf_mtl configuration (LoRA r=8 on hf_mtl's default targets)
TRAIN_METHODS = {"lora": ("lora", {"r": 8}), "bottleneck": ("bottleneck", {"variant": "pfeiffer"}),
                 "prefix_tuning": ("prefix_tuning", {}), "hyperformer++": ("hyperformer++", {})}
TRAIN_MIXED = ("lora", "bottleneck")  # also timed on a 4-task batch
TRAIN_FLOOR = "hf_mtl/floor"
TRAIN_CONFIGS = ("hf_mtl/lora", "hf_mtl/lora/mixed", "peft/lora", TRAIN_FLOOR, "hf_mtl/bottleneck", "hf_mtl/bottleneck/mixed",
                 "hf_mtl/prefix_tuning", "hf_mtl/hyperformer++")
# each configuration's paired ratio: (reference, goal); issue 23 gives no goal against the floor
TRAIN_REFERENCES = {"hf_mtl/lora": ("peft/lora", 1.0), "hf_mtl/lora/mixed": ("hf_mtl/lora", 1.05),
                    "hf_mtl/bottleneck/mixed": ("hf_mtl/bottleneck", 1.05),
                    "hf_mtl/bottleneck": (TRAIN_FLOOR, None), "hf_mtl/prefix_tuning": (TRAIN_FLOOR, None),
                    "hf_mtl/hyperformer++": (TRAIN_FLOOR, None)}
TRAIN_TASKS = tuple(f"t{i}" for i in range(4))  # `configs._hf_bench` counts the parameters of task "t0"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2, help="A causal LM (Hub id, folder, or the packaged SmolLM2 id).")
    parser.add_argument("--quick", action="store_true", help="A tiny random Llama, 2 rounds: a smoke run.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/generation_speed")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated subset of generate,train,memory (memory: the peak of each timed part)")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-seq", type=int, default=256)
    parser.add_argument("--train-rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    parser.add_argument("--bf16", action="store_true",
                        help="training: bf16 autocast of the forward (float32 weights and AdamW); generation: the "
                             "models cast to bfloat16")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = args.parts.split(",")
    if set(args.parts) - set(PARTS) or not set(args.parts) & {"generate", "train"}:
        parser.error(f"--parts takes a comma-separated subset of {','.join(PARTS)} with generate or train; "
                     f"got {','.join(args.parts)}")
    if args.quick:
        args.rounds, args.prompts, args.new_tokens = 2, 8, 4
        args.train_rounds, args.train_batch, args.train_seq = 2, 4, 32
    return args


def model_path(args: argparse.Namespace, workdir: Path) -> str:
    """The backbone's folder: a tiny random Llama written under `workdir` (`--quick`), else `--model` resolved."""
    from hf_mtl.modeling.backbone import resolve_model_path

    return tiny_model(workdir) if args.quick else resolve_model_path(args.model)


def build_models(args: argparse.Namespace, path: str, workdir: Path) -> tuple[Any, Any]:
    """The hf_mtl model (one LoRA adapter per task, B initialised at random so tasks differ) and PEFT's PeftModel
    holding the same four adapters, loaded from the store's task folders (plain PEFT adapters); both on
    `--device`, cast to bfloat16 with `--bf16`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hf_mtl import MultiTaskModel, Task

    torch.manual_seed(0)
    tasks = [Task(name, kind="causal_lm", prompt_template="Text: {text}\nAnswer:", target_column="target")
             for name in TASKS]
    model = MultiTaskModel.from_backbone(path, tasks, adapter_method="lora", adapter_config={"r": 8}).eval()
    with torch.no_grad():
        for name in TASKS:
            for p in model.adapter.task_parameters(name):
                p.normal_(0, 0.02)
    store = workdir / "store"
    model.save_pretrained(str(store))
    base = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    peft = PeftModel.from_pretrained(base, str(store / TASKS[0]), adapter_name=TASKS[0])
    for name in TASKS[1:]:
        peft.load_adapter(str(store / name), adapter_name=name)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    return model.to(args.device, dtype), peft.to(args.device, dtype).eval()


def tiny_model(workdir: Path) -> str:
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    tok = ByT5Tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None)
    folder = workdir / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def workload(model: Any, count: int) -> tuple[list[list[int]], list[str]]:
    """`count` prompts of different lengths, the tasks in turn (a mixed batch of 4 tasks)."""
    from hf_mtl.generation import prompt_ids

    words = "the film was long but the ending made up for every slow minute of it".split()
    names = [TASKS[i % len(TASKS)] for i in range(count)]
    texts = [" ".join(words[: 4 + (i * 5) % len(words)]) for i in range(count)]
    return [prompt_ids(model, model.tasks[n], t, 256) for n, t in zip(names, texts)], names


def runners(model: Any, peft: Any, prompts: list[list[int]], names: list[str], tokens: int,
            beams: int) -> dict[str, Any]:
    """One callable per configuration; each generates every row with exactly `tokens` new tokens."""
    from hf_mtl.data.collators import pad_rows
    from hf_mtl.generation import generate_ids

    options = {"max_new_tokens": tokens, "min_new_tokens": tokens, "num_beams": beams}
    size = len(prompts)
    device = next(peft.parameters()).device
    ids = pad_rows(prompts, model.tokenizer.pad_token_id or 0, "left").to(device)
    mask = pad_rows([[1] * len(p) for p in prompts], 0, "left").to(device)

    def separate() -> None:
        for task in TASKS:
            rows = [i for i, n in enumerate(names) if n == task]
            generate_ids(model, [prompts[i] for i in rows], [task] * len(rows), batch_size=size, **options)

    def peft_mixed() -> list[list[int]]:
        with torch.no_grad():
            out = peft.generate(input_ids=ids, attention_mask=mask, adapter_names=names, do_sample=False,
                                pad_token_id=model.tokenizer.pad_token_id or 0, **options)
        return out[:, ids.shape[1]:].tolist()

    calls = {
        "hf_mtl_mixed": lambda: generate_ids(model, prompts, names, batch_size=size, **options),
        "hf_mtl_single": lambda: generate_ids(model, prompts, [TASKS[0]] * size, batch_size=size, **options),
        "hf_mtl_separate": separate,
        "peft_mixed": peft_mixed,
    }
    return {name: synced(call, device) for name, call in calls.items()}


def synced(call: Any, device: torch.device) -> Any:
    """`call` followed by `torch.cuda.synchronize()` on a GPU (its kernels run asynchronously), else `call` itself."""
    if device.type != "cuda":
        return call

    def run() -> Any:
        out = call()
        torch.cuda.synchronize(device)
        return out
    return run


class Call:
    """A generation configuration as the memory probes see it: `peak_rss_delta_mib` and `peak_cuda_delta_mib`
    run `step()` (and `activate` first when set)."""

    activate = None

    def __init__(self, call: Any):
        self.step = call


def train_inputs(args: argparse.Namespace, vocab_size: int) -> dict[str, torch.Tensor]:
    """The training batch: `make_inputs`' random ids and mask (the second half of the rows padded over their last
    quarter) as prompt + target rows: the labels score the last quarter of each row's real tokens, the rest is -100."""
    inputs = make_inputs(args.train_batch, args.train_seq, vocab_size)
    real = inputs["attention_mask"].sum(dim=1, keepdim=True)  # (B, 1) real tokens per row
    position = torch.arange(args.train_seq).unsqueeze(0)
    labels = inputs["input_ids"].masked_fill((position < real - real // 4) | (position >= real), -100)
    return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels}


def train_factories(args: argparse.Namespace, path: str) -> dict[str, Any]:
    """Factories of the training configurations (each builds one model and the configurations that share it), so
    the memory probe holds one model at a time. A method of TRAIN_MIXED builds its single-task and mixed
    configurations on one model with one optimizer, as `configs.build_hf_mtl` does."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_mtl import MultiTaskModel, Task
    from hf_mtl.adapters.lora.config import build_lora_config, parse_lora_options
    from hf_mtl.modeling.arch import get_generative_spec

    where = Placement(args.device, args.bf16)
    config = AutoConfig.from_pretrained(path)
    inputs = train_inputs(args, config.vocab_size)
    tasks = [Task(name, kind="causal_lm", prompt_template="{text}", target_column="target") for name in TRAIN_TASKS]
    mixed = [TRAIN_TASKS[i % len(TRAIN_TASKS)] for i in range(args.train_batch)]  # 4 tasks interleaved

    def hf_model(method: str) -> Any:
        adapter_method, adapter_config = TRAIN_METHODS.get(method, ("none", {}))
        return where.model(MultiTaskModel.from_backbone(path, tasks, adapter_method=adapter_method,
                                                        adapter_config=adapter_config).train())

    def floor() -> list[Bench]:
        model = hf_model("floor")  # adapter_method none, backbone frozen: nothing trains
        # the backward runs through every frozen layer (as it must for any adapter) but computes no weight gradient
        model.backbone.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))
        nothing = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # no gradient: its step does nothing
        return [_hf_bench(TRAIN_FLOOR, model, inputs, TRAIN_TASKS[0], nothing, where=where)]

    def peft_lora() -> list[Bench]:
        # hf_mtl's LoraConfig for this backbone (`{"r": 8}` + its default target modules): the same r, alpha,
        # targets and dropout; the loss is the LM's own (`labels=`): the mean token cross-entropy of the
        # shifted labels, which is what hf_mtl computes for a single-task batch
        lora_config = build_lora_config(parse_lora_options(TRAIN_METHODS["lora"][1],
                                                           get_generative_spec(config).stacks).lora, "peft/lora")
        base = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        model = where.model(get_peft_model(base, lora_config).train())
        x = where.inputs(inputs)
        params = [p for p in model.parameters() if p.requires_grad]
        return [Bench("peft/lora", where.loss(lambda: model(**x).loss), params, count(params), device=where.device)]

    def adapter(method: str) -> Any:
        def build() -> list[Bench]:
            model = hf_model(method)
            single = _hf_bench(f"hf_mtl/{method}", model, inputs, TRAIN_TASKS[0], where=where)
            if method not in TRAIN_MIXED:
                return [single]
            return [single, _hf_bench(f"hf_mtl/{method}/mixed", model, inputs, mixed, single.optimizer, where=where)]
        return build

    return {"peft/lora": peft_lora, TRAIN_FLOOR: floor, **{f"hf_mtl/{m}": adapter(m) for m in TRAIN_METHODS}}


def train_benches(args: argparse.Namespace, path: str) -> dict[str, Bench]:
    """Every training configuration, built."""
    return {bench.name: bench for factory in train_factories(args, path).values() for bench in factory()}


def summarize_train(args: argparse.Namespace, rounds: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"batch": args.train_batch, "seq": args.train_seq, "rounds_count": len(rounds),
                           "seconds": {}, "tokens_per_s": {}, "ratios": {}, "rounds": rounds}
    for name in TRAIN_CONFIGS:
        median = statistics.median(r[name] for r in rounds)
        out["seconds"][name] = median
        out["tokens_per_s"][name] = args.train_batch * args.train_seq / median
    for name, (reference, goal) in TRAIN_REFERENCES.items():
        value, ci = paired(rounds, name, reference), paired_ci(rounds, name, reference)
        out["ratios"][name] = {"reference": reference, "median": value, "ci90": ci, "goal": goal,
                               "verdict": verdict(value, ci, goal) if goal is not None else None}
    return out


def time_rounds(calls: dict[str, Any], rounds: int) -> list[dict[str, float]]:
    """Seconds of each configuration per round; the order rotates each round (no configuration always goes first)."""
    names = list(calls)
    for call in calls.values():  # warm-up: first-call allocations and lazy imports stay out of the rounds
        call()
    results = []
    for r in range(rounds):
        timings = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            timings[name] = time.perf_counter() - start
        results.append(timings)
    return results


def summarize(rounds: list[dict[str, float]], rows: int, tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": {}, "tokens_per_s": {}, "ratios": {}}
    for name in CONFIGS:
        median = statistics.median(r[name] for r in rounds)
        out["seconds"][name] = median
        out["tokens_per_s"][name] = rows * tokens / median
    for other in CONFIGS[1:]:
        value, ci = paired(rounds, "hf_mtl_mixed", other), paired_ci(rounds, "hf_mtl_mixed", other)
        goal = GOALS.get(("hf_mtl_mixed", other))
        out["ratios"][f"hf_mtl_mixed / {other}"] = {
            "median": value, "ci90": ci, "goal": goal,
            "verdict": verdict(value, ci, goal) if goal is not None else None}
    return out


def decoding(beams: int) -> str:
    return "greedy" if beams == 1 else f"beam {beams}"


def generation_part(args: argparse.Namespace, path: str, workdir: Path) -> dict[str, Any]:
    """Greedy and beam-2 runs: each configuration's seconds, tokens/s, time to first token and paired ratios."""
    model, peft = build_models(args, path, workdir)
    prompts, names = workload(model, args.prompts)
    runs = {}
    for beams in (1, 2):
        calls = runners(model, peft, prompts, names, args.new_tokens, beams)
        rounds = time_rounds(calls, args.rounds)
        first = time_rounds(runners(model, peft, prompts, names, 1, beams), args.rounds)
        summary = summarize(rounds, args.prompts, args.new_tokens)
        summary["first_token_s"] = {n: statistics.median(r[n] for r in first) for n in CONFIGS}
        summary["rounds"] = rounds
        # the same weights in both libraries: the mixed batches must generate the same tokens
        summary["same_tokens_as_peft"] = calls["hf_mtl_mixed"]() == calls["peft_mixed"]()
        runs[decoding(beams)] = summary
    return runs


def peak_mib(bench: Any, device: str) -> float:
    """Peak memory of one call of `bench` (a training `Bench` or a generation `Call`) above the memory before it,
    after one unmeasured call (first-call allocations and AdamW's state, a few MiB for these adapters, stay in the
    baseline): the process's RSS on the CPU (`peak_rss_delta_mib`), the GPU allocator's peak on CUDA."""
    if device.startswith("cuda"):
        bench.step()
        return peak_cuda_delta_mib(bench, steps=1)
    return peak_rss_delta_mib(bench, steps=1, warmup=1)


def memory_probe(args: argparse.Namespace) -> None:
    """`--memory-probe` (a fresh process, MALLOC_MMAP_THRESHOLD_ fixed by `runner.probe`): one protocol line per
    configuration with its peak memory, one model at a time, then `{"done": true}`."""
    with tempfile.TemporaryDirectory(prefix="hf_mtl-genspeed-probe-") as tmp:
        path = model_path(args, Path(tmp))
        if "generate" in args.parts:
            model, peft = build_models(args, path, Path(tmp))
            prompts, names = workload(model, args.prompts)
            for beams in (1, 2):
                for name, call in runners(model, peft, prompts, names, args.new_tokens, beams).items():
                    emit({"config": f"{decoding(beams)}: {name}", "mib": peak_mib(Call(call), args.device)})
            del model, peft
            gc.collect()
        if "train" in args.parts:
            for factory in train_factories(args, path).values():
                benches = factory()
                for bench in benches:
                    emit({"config": f"train: {bench.name}", "mib": peak_mib(bench, args.device)})
                del benches, bench
                gc.collect()
    emit({"done": True})


def memory_part(args: argparse.Namespace, argv: list[str]) -> dict[str, float]:
    """{"greedy: hf_mtl_mixed": MiB, "train: peft/lora": MiB, ...}, measured in a probe process (this script with
    `--memory-probe`), so the timed models held here do not hide its peaks."""
    peaks: dict[str, float] = {}
    probe([sys.executable, str(Path(__file__).resolve()), *argv, "--memory-probe"],
          lambda config, answer: peaks.__setitem__(config, answer["mib"]))
    return peaks


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return {}
    out_dir = Path(args.out)
    results: dict[str, Any] = {"model": "tiny random Llama" if args.quick else args.model, "rows": args.prompts,
                               "new_tokens": args.new_tokens, "rounds": args.rounds, "threads": args.threads,
                               "device": args.device, "dtype": "bfloat16" if args.bf16 else "float32", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="hf_mtl-genspeed-") as tmp:
        path = model_path(args, Path(tmp))
        if "generate" in args.parts:
            results["runs"] = generation_part(args, path, Path(tmp))
            gc.collect()
        if "train" in args.parts:
            benches = train_benches(args, path)
            rounds = time_rounds({name: benches[name].step for name in TRAIN_CONFIGS}, args.train_rounds)
            results["train"] = summarize_train(args, rounds)
            del benches
            gc.collect()
    if "memory" in args.parts:
        peaks = memory_part(args, argv)
        for label, run in results["runs"].items():
            run["peak_mib"] = {n: peaks[f"{label}: {n}"] for n in CONFIGS}
        if "train" in results:
            results["train"]["peak_mib"] = {n: peaks[f"train: {n}"] for n in TRAIN_CONFIGS}
    write_json(out_dir / "results.json", results)
    table = render_table(results)
    (out_dir / "table.md").write_text(table)
    plot(results, out_dir / "plot.png")
    print(table)
    return results


def ratio_cell(ratio: dict[str, Any] | None) -> tuple[str, str]:
    """The table's "ratio (90% CI)" and "goal" cells of a paired ratio ('-' where there is none)."""
    if ratio is None:
        return "-", "-"
    ci = ratio["ci90"]
    cell = fmt(ratio["median"], 3) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    goal = f"≤ {ratio['goal']}: {ratio['verdict']}" if ratio["goal"] is not None else "-"
    return cell, goal


def render_table(results: dict[str, Any]) -> str:
    where = f"{results['model']}, {results['dtype']} on the {results['device']} ({results['threads']} threads)"
    lines = []
    if results["runs"]:
        same = {label: run["same_tokens_as_peft"] for label, run in results["runs"].items()}
        lines += [f"Generation of {results['rows']} rows (4 LoRA tasks mixed), {results['new_tokens']} new tokens each, "
                  f"{where}, {results['rounds']} interleaved rounds.",
                  f"hf_mtl's mixed batch generates the same tokens as PEFT's: {same}.", "",
                  "| decoding | configuration | seconds | tokens/s | first token (s) | peak MiB | "
                  "hf_mtl mixed / this (90% CI) | goal |", "|---|---|---|---|---|---|---|---|"]
        for label, run in results["runs"].items():
            for name in CONFIGS:
                cell, goal = ratio_cell(run["ratios"].get(f"hf_mtl_mixed / {name}"))
                lines.append(f"| {label} | {name} | {fmt(run['seconds'][name], 3)} | {fmt(run['tokens_per_s'][name], 1)} | "
                             f"{fmt(run['first_token_s'][name], 3)} | {fmt(run.get('peak_mib', {}).get(name), 0)} | "
                             f"{cell} | {goal} |")
    train = results.get("train")
    if train:
        lines += [""] if lines else []
        lines += [f"Training step (forward + backward + AdamW + zero_grad), batch {train['batch']} x {train['seq']} "
                  f"tokens, {where}, {train['rounds_count']} interleaved rounds.", "",
                  "| configuration | seconds/step | tokens/s | peak MiB | this / reference (90% CI) | goal |",
                  "|---|---|---|---|---|---|"]
        for name in TRAIN_CONFIGS:
            ratio = train["ratios"].get(name)
            cell, goal = ratio_cell(ratio)
            if ratio is not None:
                cell = f"{cell} vs {ratio['reference']}"
            lines.append(f"| {name} | {fmt(train['seconds'][name], 3)} | {fmt(train['tokens_per_s'][name], 1)} | "
                         f"{fmt(train.get('peak_mib', {}).get(name), 0)} | {cell} | {goal} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Generation tokens/s per decoding and configuration; training tokens/s per configuration (a second panel)."""
    plt = pyplot()
    panels = [part for part in ("runs", "train") if results.get(part)]
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 3.5), squeeze=False)
    for ax, part in zip(axes[0], panels):
        if part == "runs":
            labels = list(results["runs"])
            width = 0.8 / len(CONFIGS)
            for i, name in enumerate(CONFIGS):
                values = [results["runs"][label]["tokens_per_s"][name] for label in labels]
                ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
            ax.set_xticks([x + width * (len(CONFIGS) - 1) / 2 for x in range(len(labels))], labels)
            ax.set_ylabel("new tokens / s")
            ax.set_title(f"Mixed-task generation, {results['model']}")
            ax.legend(fontsize=7)
        else:
            values = [results["train"]["tokens_per_s"][name] for name in TRAIN_CONFIGS]
            ax.barh(range(len(TRAIN_CONFIGS)), values)
            ax.set_yticks(range(len(TRAIN_CONFIGS)), TRAIN_CONFIGS, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel("training tokens / s")
            ax.set_title(f"Train step, {results['train']['batch']} x {results['train']['seq']}, {results['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def finite(results: dict[str, Any]) -> bool:
    """Every time, rate, peak and ratio of `results` is a finite number (what the smoke test checks)."""
    runs = list(results["runs"].values()) + ([results["train"]] if "train" in results else [])
    values = [v for run in runs for part in ("seconds", "tokens_per_s", "first_token_s", "peak_mib")
              for v in run.get(part, {}).values()]
    values += [r["median"] for run in runs for r in run["ratios"].values()]
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


if __name__ == "__main__":
    main()
