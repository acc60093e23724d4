"""`lora`: PEFT LoRA adapters, one per task (and per language)."""

from .config import LoraOptions, parse_lora_options
from .model import LoraMethod


__all__ = ["LoraMethod", "LoraOptions", "parse_lora_options"]
