"""Issue 21.5: generic code asks a method or a scheduler what it can do, never its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from hf_mtl.adapters import ADAPTER_METHODS, AdapterMethod, load_builtin_methods
from hf_mtl.optim.schedulers import SAMPLING_STRATEGIES, RoundRobinScheduler, build_scheduler, register_scheduler
from test_trainer import make_trainer


ROOT = Path(__file__).resolve().parents[1] / "hf_mtl"
# modules that act on any method or scheduler: they may not compare a method's or strategy's name
GENERIC = ["inference.py", "trainer.py", "store/export.py", "store/card.py", "store/save.py", "store/load.py"]
# a name shown to people, not a capability: the card tags method `none` as head-only or full fine-tuning
SHOWN = {"method == 'none'"}


def test_method_capabilities_are_class_attributes() -> None:
    load_builtin_methods()
    methods = {name: ADAPTER_METHODS.get(name) for name in ADAPTER_METHODS.names()}
    assert sorted(n for n, c in methods.items() if c.exportable) == ["lora", "none"]
    assert sorted(n for n, c in methods.items() if c.shares_backbone_pass) == ["none"]
    assert sorted(n for n, c in methods.items() if c.saves_peft_format) == ["lora"]

    class NewMethod(AdapterMethod):  # adds modules: does not inherit the `none` method's capabilities
        name = "new_method"

    assert not NewMethod.exportable and not NewMethod.shares_backbone_pass and not NewMethod.saves_peft_format

    class Foldable(AdapterMethod):
        name = "foldable"
        exportable = True

    assert Foldable.exportable and not Foldable.shares_backbone_pass


@pytest.mark.parametrize("module", GENERIC)
def test_generic_code_compares_no_method_or_strategy_name(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    names = {*ADAPTER_METHODS.names(), *SAMPLING_STRATEGIES.names()} - {"off"}
    found = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Compare)
             and any(isinstance(c, ast.Constant) and c.value in names for c in [node.left, *node.comparators])
             and ast.unparse(node) not in SHOWN]
    assert not found, f"hf_mtl/{module} branches on a name: {found}"
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in imported if m.endswith("schedulers.uncertainty")], f"hf_mtl/{module} imports a strategy"


def test_default_select_batch_keeps_the_drawn_batch() -> None:
    pool = {"input_ids": torch.ones(4, 3, dtype=torch.long), "task": "a"}
    scheduler = build_scheduler("round_robin", ["a", "b"], [4, 4])
    assert scheduler.select_batch(None, pool, {}, 2, False) is pool


def test_trainer_trains_on_the_batch_the_scheduler_selects(tmp_path: Path) -> None:
    """A new scheduler changes the trained batch by overriding `select_batch`; the trainer needs no edit."""
    seen: list[int] = []

    @register_scheduler
    class HalfBatches(RoundRobinScheduler):
        name = "half_batches_test"

        def select_batch(self, model, pool, tasks, batch_size, split_forward):
            seen.append(pool["input_ids"].shape[0])
            keep = batch_size // 2
            return {k: v[:keep] if isinstance(v, torch.Tensor) else v for k, v in pool.items()}

    try:
        trainer, _ = make_trainer(tmp_path / "run", max_steps=2, sampling_strategy="half_batches_test", save_steps=100)
        trained: list[int] = []
        forward = trainer.model.forward

        def counting(*args, **kwargs):
            if trainer.model.training:
                trained.append(kwargs["input_ids"].shape[0])
            return forward(*args, **kwargs)

        trainer.model.forward = counting
        trainer.train()
    finally:
        SAMPLING_STRATEGIES.unregister("half_batches_test")
    assert seen == [4, 4] and trained == [2, 2]
