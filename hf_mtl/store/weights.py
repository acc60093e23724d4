"""The one strict loader of saved tensors: heads, adapters and shared parts all load through `load_exact`."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import StoreError


def load_exact(target: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy `state` into the tensors of `target`, requiring the same keys and shapes.

    Args:
        target: name -> parameter or buffer to fill (e.g. `module.state_dict()`, whose tensors share the
            module's storage, or `dict(module.named_parameters())`).
        state: name -> saved tensor (cast to each target's dtype and device).
        what: the owner, for errors (e.g. "head of task 'sst2' (path)", "task 'sst2' (pals)").

    Raises:
        StoreError: naming the missing, unexpected and mis-shaped keys; nothing is copied then.
    """
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(target) & set(state) if tuple(target[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else ""]
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: saved {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in wrong))
        raise StoreError(
            f"{what}: the saved weights do not fit this model, their keys or shapes differ "
            f"({'; '.join(p for p in parts if p)}). They were saved for another base model, adapter options or label "
            f"set. Fix: load it with the adapter_config, base model and labels it was saved with."
        )
    with torch.no_grad():
        for key, tensor in target.items():
            tensor.copy_(state[key].to(dtype=tensor.dtype, device=tensor.device))
