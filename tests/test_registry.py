"""One `Registry` type behind every name a recipe chooses: one normalization, one error message, lazy methods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hf_mtl import TaskConfigError
from hf_mtl.adapters import ADAPTER_METHODS, METHOD_MODULES, AdapterMethod, build_adapter_method
from hf_mtl.optim.schedulers import SAMPLING_STRATEGIES, TaskScheduler
from hf_mtl.optim.surgery import GRADIENT_SURGERIES
from hf_mtl.optim.weighting import LOSS_WEIGHTINGS
from hf_mtl.registry import Registry, normalize_name
from hf_mtl.training_args import MultiTaskTrainingArguments


REPO = Path(__file__).resolve().parents[1]
REGISTRIES = [ADAPTER_METHODS, SAMPLING_STRATEGIES, LOSS_WEIGHTINGS, GRADIENT_SURGERIES]


def test_every_family_is_one_registry_type() -> None:
    assert all(type(r) is Registry for r in REGISTRIES)
    assert [r.field for r in REGISTRIES] == ["adapter_method", "sampling_strategy", "loss_weighting", "gradient_surgery"]


def test_recipe_names_are_normalized_the_same_way_in_every_field() -> None:
    # "round-robin" and "PCGrad" were refused when a recipe was parsed while "DWA" was accepted
    args = MultiTaskTrainingArguments(output_dir="x", sampling_strategy="All-Tasks", gradient_surgery="PCGrad",
                                      loss_weighting=" DWA ", adapter_method="Prefix-Tuning")
    assert (args.sampling_strategy, args.gradient_surgery, args.loss_weighting, args.adapter_method) == (
        "all_tasks", "pcgrad", "dwa", "prefix_tuning")
    assert MultiTaskTrainingArguments(output_dir="x", sampling_strategy="round-robin").sampling_strategy == "round_robin"
    assert MultiTaskTrainingArguments(output_dir="x", gradient_surgery="NONE").gradient_surgery == "none"
    assert MultiTaskTrainingArguments(output_dir="x", adapter_method="Hyperformer++").adapter_method == "hyperformer++"


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.field)
def test_unknown_names_fail_with_one_message_listing_the_valid_ones(registry: Registry) -> None:
    with pytest.raises(TaskConfigError) as err:
        registry.get("no-such-name")
    assert str(err.value) == f"Unknown {registry.field} 'no-such-name'. Fix: use one of {registry.names()}."
    with pytest.raises(TaskConfigError, match=rf"^Unknown {registry.field} 'no-such-name'\. Fix: use one of \["):
        registry.resolve("no-such-name")
    for name in registry.names():
        assert registry.resolve(name.upper().replace("_", "-")) == name


def test_the_off_name_is_valid_in_a_recipe_but_builds_nothing() -> None:
    assert GRADIENT_SURGERIES.resolve("None") == "none"
    assert "none" not in GRADIENT_SURGERIES.names()
    with pytest.raises(TaskConfigError, match=r"Unknown gradient_surgery 'none'. Fix: use one of \['gradvac', 'pcgrad'\]"):
        GRADIENT_SURGERIES.get("none")


def test_registration_checks_the_base_class_the_name_and_duplicates() -> None:
    registry: Registry[type[AdapterMethod]] = Registry("adapter_method", base=AdapterMethod)

    class Upper(AdapterMethod):
        name = "Upper"

    class Other(AdapterMethod):
        name = "none"

    with pytest.raises(TypeError, match="expects a AdapterMethod subclass"):
        registry.register(TaskScheduler)
    with pytest.raises(TypeError, match="lower case"):
        registry.register(Upper)
    registry.register(AdapterMethod)
    with pytest.raises(TypeError, match="'none' is already registered by AdapterMethod"):
        registry.register(Other)
    registry.unregister("None")
    assert registry.names() == []


def test_adapter_methods_are_one_literal_table_loaded_lazily() -> None:
    assert ADAPTER_METHODS.names() == sorted(METHOD_MODULES)
    # validating a recipe and building one method import that method's module only (no PEFT for pals)
    code = (
        "import sys\n"
        "from transformers import BertConfig\n"
        "from hf_mtl.adapters import build_adapter_method\n"
        "from hf_mtl.training_args import MultiTaskTrainingArguments\n"
        "MultiTaskTrainingArguments(output_dir='x', adapter_method='lora')\n"
        "build_adapter_method('pals', BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, "
        "intermediate_size=37))\n"
        f"print(sorted(m for m in sys.modules if m in {sorted(set(METHOD_MODULES.values()))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "['hf_mtl.adapters.base', 'hf_mtl.adapters.pals']", out.stderr


def test_a_table_entry_that_registers_nothing_is_a_library_bug() -> None:
    registry = Registry("adapter_method", modules={"ghost": "hf_mtl.errors"})
    assert "Ghost" in registry
    with pytest.raises(RuntimeError, match="hf_mtl.errors did not register adapter_method 'ghost'"):
        registry.get("Ghost")


def test_build_adapter_method_accepts_any_spelling() -> None:
    from transformers import BertConfig

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    assert build_adapter_method("PALs", config).name == "pals"
    assert normalize_name(" Round-Robin ") == "round_robin"


def test_schedulers_share_the_option_and_state_checks_of_every_strategy() -> None:
    from hf_mtl.optim.schedulers import build_scheduler
    from hf_mtl.optim.strategy import Strategy

    assert issubclass(TaskScheduler, Strategy)
    with pytest.raises(TaskConfigError, match=r"Invalid option\(s\) \['alpha'\] for sampling_strategy 'temperature' "
                                              r"\(field `sampling_options`\): its options are: temperature\."):
        build_scheduler("temperature", ["a", "b"], [3, 4], alpha=1)
    with pytest.raises(TaskConfigError, match=r"sampling_strategy 'annealed' requires the option\(s\) \['num_epochs'\] "
                                              r"\(field `sampling_options`\)"):
        build_scheduler("annealed", ["a", "b"], [3, 4])
    uniform = build_scheduler("uniform", ["a", "b"], [3, 4], seed=1)
    assert uniform.state_dict() == {"name": "uniform", "seed": 1, "options": {}}  # the checkpoint's keys
    with pytest.raises(TaskConfigError, match="field 'name'.*'uniform'.*'round_robin'"):
        build_scheduler("round_robin", ["a", "b"], [3, 4], seed=1).load_state_dict(uniform.state_dict())
    with pytest.raises(TaskConfigError, match="field 'seed'"):
        build_scheduler("uniform", ["a", "b"], [3, 4], seed=2).load_state_dict(uniform.state_dict())
