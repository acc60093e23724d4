"""The `bottleneck` adapter method: one bottleneck adapter per task in every layer, routed per row.

Sources: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"; Pfeiffer et al. 2020,
"AdapterFusion: Non-Destructive Task Composition for Transfer Learning" (the `pfeiffer` placement);
He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning" (parallel adapters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...errors import TaskConfigError
from ...modeling.arch import config_value
from ...store.weights import load_exact
from ...tasks import Task
from ..base import AdapterMethod, register_method
from ..routing import RoutedCall, Routing
from .config import NON_LINEARITIES, BottleneckConfig, bottleneck_size
from .layer import BottleneckAdapter, routed_adapter
from .sites import Site, hook_sites, not_routed_error, stack_specs, total_layers


@register_method
class BottleneckMethod(AdapterMethod):
    """Bottleneck adapters, one per task per site; a mixed-task batch runs in one forward pass.

    At each site the sub-block's branch output f (before the layer's residual add, and the LayerNorm of
    LN(f + x) in post-LN layers) becomes

        pfeiffer:  f' = f + A(LN(f + x))          (residual_before_ln=False: f' = LN(f+x) + A(LN(f+x)))
        houlsby:   f' = f + A(f)                  after (self-)attention and after the feed-forward block
        parallel:  f' = f + s · A(x)              x: the feed-forward block's input

    with A(h) = f(h W_down + b_down) W_up + b_up, i.e. h <- h + f(h W_down + b_down) W_up + b_up.
    These are AdapterHub's computations (SeqBn, DoubleSeqBn, ParBn). In pre-LN layers (Llama, GPT-2, T5),
    which have no norm after the residual add, LN is the identity: pfeiffer's input is f + x, as AdapterHub
    computes for those models (`layer_norm=None`).

    Generative backbones: sites sit in every layer of every stack (T5/BART: the encoder's, then the
    decoder's). A decoder's cross-attention gets no adapter in `houlsby` placement, as AdapterHub's
    `DoubleSeqBnConfig` (`cross_adapter=False`): the placement is Houlsby's (after self-attention and after
    the feed-forward block of each layer). Adapters act on each token's hidden state, so a generation step
    that feeds one new token per row (with the KV cache) is routed like a training forward.

    Args:
        backbone_config: the backbone's config (hidden size, layers, model type).
        config: options, see `BottleneckConfig` (variant, reduction_factor=16, non_linearity=relu,
            residual_before_ln=True, scaling=1.0, init=identity, ln_before=False, ln_after=False).
    """

    name = "bottleneck"
    groups_rows = True
    routes_per_row = True

    def __init__(self, backbone_config: Any, config: dict[str, Any] | None = None):
        options = BottleneckConfig.from_options(config, self.name)
        super().__init__(backbone_config, options.to_dict())
        self.options = options
        self.specs = stack_specs(backbone_config)  # one stack, or an encoder-decoder's encoder then decoder
        self.hidden_size = config_value(backbone_config, self.specs[0], "hidden_size")
        self.num_layers = total_layers(backbone_config, self.specs)
        self.rank = bottleneck_size(self.hidden_size, options.reduction_factor)
        self.act = NON_LINEARITIES[options.non_linearity]
        self.task_adapters = nn.ModuleList()  # slot -> ModuleList over layers of ModuleDict {position: adapter}
        self._slots: dict[str, int] = {}
        self._sites: list[Site] = []
        self._handles: list[Any] = []
        self._backbone: tuple[nn.Module, ...] = ()  # kept out of this module's children

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module) -> None:
        """Hook every site of the backbone (a forward hook per site, a pre-hook where x is needed)."""
        needs_x = self.options.variant in ("pfeiffer", "parallel")
        self._sites, self._handles = hook_sites(
            model.backbone, self.specs, self.options.positions, needs_x, self._site_forward, self._call_inputs
        )
        self._backbone = (model.backbone,)

    def add_task(self, task: Task) -> None:
        """Create the task's adapters: one per site, (H, r) down and (r, H) up (r = H // reduction_factor)."""
        if task.name in self._slots:
            return
        o = self.options
        layers = nn.ModuleList(
            nn.ModuleDict({p: BottleneckAdapter(self.hidden_size, self.rank, init=o.init, ln_before=o.ln_before,
                                                ln_after=o.ln_after) for p in o.positions})
            for _ in range(self.num_layers)
        )
        self._slots[task.name] = len(self.task_adapters)
        self.task_adapters.append(to_backbone(layers, self._backbone))

    @contextlib.contextmanager
    def route(self, routing: Routing) -> Iterator[None]:
        """Tell the sites which task adapter each row uses for this forward."""
        for name in routing.owners:
            self._slot(name)
        with RoutedCall(routing).scope(self):
            yield

    def _call_inputs(self) -> dict | None:
        call = self.current_call()
        return call.inputs if call is not None else None

    # ------------------------------------------------------------------ forward (called by the site hooks)
    def _site_forward(self, site: Site, f: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """f -> f' at one site (see the class docstring)."""
        call = self.current_call()
        if call is None:
            raise not_routed_error(self.name)
        routing = call.routing
        adapters = [self.task_adapters[self._slots[t]][site.layer][site.position].tensors() for t in routing.owners]
        o = self.options
        if o.variant == "parallel":
            a_in, residual = x, f
        elif o.variant == "pfeiffer":
            a_in = site.norm(f + x)  # the layer's own LN (pre-LN: none), as AdapterHub's original_ln_before
            residual = f if o.residual_before_ln else a_in
        else:
            a_in, residual = f, f
        return residual + routed_adapter(a_in, adapters, routing, self.act, o.scaling)

    # ------------------------------------------------------------------ parameters and state
    def _slot(self, task: str) -> int:
        if task not in self._slots:
            raise TaskConfigError(
                f"task {task!r} has no bottleneck adapter. Fix: add it with model.add_task(Task({task!r}, ...)) "
                f"before using it (known: {sorted(self._slots)})."
            )
        return self._slots[task]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.task_adapters[self._slot(task)].parameters()) if task in self._slots else []

    def task_state_dict(self, task: str) -> dict[str, torch.Tensor]:
        """Keys `layers.<i>.<position>.<down|down_bias|up|up_bias|ln_before.*|ln_after.*>`."""
        return {f"layers.{k}": v for k, v in self.task_adapters[self._slot(task)].state_dict().items()}

    def load_task_state_dict(self, task: str, state: dict[str, torch.Tensor]) -> None:
        load_exact(self.task_adapters[self._slot(task)].state_dict(), strip_prefix(state, "layers."),
                   f"bottleneck adapter of task {task!r}")

    def formula_parameter_count(self, task: str) -> int:
        """layers x positions x (2 H r + r + H [+ 2H per adapter LayerNorm]), r = H // reduction_factor; layers
        counts every stack's (an encoder-decoder's encoder and decoder layers)."""
        o = self.options
        per_site = BottleneckAdapter.parameter_count(self.hidden_size, self.rank, ln_before=o.ln_before, ln_after=o.ln_after)
        return self.num_layers * len(o.positions) * per_site


def to_backbone(module: nn.Module, backbone: tuple[nn.Module, ...]) -> nn.Module:
    """Put new adapter weights where the backbone is now (device and dtype), which may differ from attach time."""
    if backbone:
        weight = next(backbone[0].parameters())
        module.to(device=weight.device, dtype=weight.dtype)
    return module


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
