"""A/B of one LoRA training step on a generative LM: hf_mtl's against PEFT's on the same model and LoraConfig.

The two configurations of `generation_speed.py`'s training table (`hf_mtl/lora`, `peft/lora`: 16 x 256 tokens,
SmolLM2-135M-Instruct, float32, 2 threads), alone, in interleaved rounds after a warm-up step each; prints the
per-round seconds and the paired median ratio with its 90% bootstrap interval. Used to time a change to the step
without rerunning the whole speed benchmark.

    python benchmarks/lora_peft_train_ab.py [--rounds 5]
    python benchmarks/lora_peft_train_ab.py --quick     # a tiny random Llama (smoke)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # `python benchmarks/lora_peft_train_ab.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import generation_speed as speed
from benchmarks.stats import paired, paired_ci


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 5
    args = speed.parse_args(["--parts", "train", *(["--quick"] if "--quick" in argv else [])])
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="hf_mtl-lora-ab-") as tmp:
        factories = speed.train_factories(args, speed.model_path(args, Path(tmp)))
        benches = {b.name: b for b in factories["hf_mtl/lora"]() + factories["peft/lora"]()}
        times = speed.time_rounds({n: benches[n].step for n in ("hf_mtl/lora", "peft/lora")}, rounds)
    result = {"rounds": times, "ratio": paired(times, "hf_mtl/lora", "peft/lora"),
              "ci90": paired_ci(times, "hf_mtl/lora", "peft/lora")}
    print(f"hf_mtl/lora / peft/lora: {result['ratio']:.3f} (90% CI {result['ci90']}), {len(times)} rounds")
    return result


if __name__ == "__main__":
    main()
