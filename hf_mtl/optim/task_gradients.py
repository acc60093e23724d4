"""Per-task gradients over one optimizer step: what gradient surgery and non-linear weightings need.

For every micro-batch of a step, the gradient of each task's loss L_t (and of the adversarial loss, a
separate row that no surgery touches) with respect to every trainable parameter is accumulated in a
(M [+1], P) buffer G, scaled by 1/accumulation steps as the Trainer scales losses. Each task runs its
own forward and backward pass on its own rows (a backward of L_t through a forward of the whole mixed
batch would cost a full-batch backward per task), so the M backward passes cost about one. When the step's last
micro-batch is done (`finish`):

    G <- mean of G over ranks                              (one all-reduce: exactly DDP's average)
    c_t = ∂W/∂L_t at the step's mean losses L̄             (λ_t for linear weightings)
    shared parameters:    surgery(c_1 G_1, ..., c_M G_M)   (or Σ_t c_t G_t without surgery)
    the other parameters: Σ_t c_t G_t (+ the adversarial row)

and the result is written to `.grad`. Projection after the all-reduce, on the gradients of the whole
step, makes gradient accumulation and DDP give the update of one process with the combined batch. The
micro-batches run under DDP's `no_sync` (the trainer's choice): the per-task backward passes use
`torch.autograd.grad`, which DDP's reducer does not see, so the buffer is all-reduced here instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .distributed import all_reduce_, world_size
from .surgery import GradientSurgery
from .weighting import LossWeighting, Progress


class StepStats:
    """Each task's loss values and trained rows over the micro-batches of the current optimizer step."""

    def __init__(self, task_names: list[str]):
        self.task_names = list(task_names)
        self._index = {n: i for i, n in enumerate(task_names)}
        self._stats = torch.zeros(3, len(task_names), dtype=torch.float64)  # Σ loss, micro-batches, rows

    def add(self, losses: dict[str, float], rows: dict[str, int]) -> None:
        for name, value in losses.items():
            self._stats[0, self._index[name]] += value
            self._stats[1, self._index[name]] += 1
        for name, count in rows.items():
            self._stats[2, self._index[name]] += count

    def pop(self, reduce: bool) -> tuple[dict[str, float], dict[str, float]]:
        """The step's mean loss per trained task and its rows per task (summed over ranks when `reduce`),
        and reset.

        Returns:
            ({task: mean loss}, {task: rows}).
        """
        stats, self._stats = self._stats, torch.zeros_like(self._stats)
        if reduce:
            all_reduce_(stats)
        losses = {n: float(stats[0, i] / stats[1, i]) for i, n in enumerate(self.task_names) if stats[1, i] > 0}
        rows = {n: float(stats[2, i]) for i, n in enumerate(self.task_names) if stats[2, i] > 0}
        return losses, rows


def loss_coefficients(weighting: LossWeighting, step_losses: dict[str, float], progress: Progress,
                      task_names: list[str]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """c_t = ∂W/∂L_t at the step's mean losses, and ∂W/∂(the weighting's parameters).

    Args:
        weighting: the loss weighting.
        step_losses: {task: L̄_t}.
        progress: where training stands.
        task_names: the order of the returned coefficients.

    Returns:
        ((M,) coefficients, 0 for tasks absent from the step; one gradient per weighting parameter).
    """
    params = weighting.parameters()
    device = params[0].device if params else torch.device("cpu")
    leaves = {n: torch.tensor(v, dtype=torch.float32, device=device, requires_grad=True) for n, v in step_losses.items()}
    total = weighting.combine(leaves, progress)
    grads = torch.autograd.grad(total, [*leaves.values(), *params], allow_unused=True)
    by_task = dict(zip(leaves, grads[: len(leaves)]))
    coefficients = torch.tensor([float(by_task[n]) if by_task.get(n) is not None else 0.0 for n in task_names])
    return coefficients, list(grads[len(leaves):])


class TaskGradients:
    """The (M [+1], P) per-task gradient buffer of one optimizer step.

    Args:
        task_names: the run's tasks (the buffer's rows).
        params: every trainable parameter of the model.
        shared: the parameters shared between tasks (a subset of `params`), where the surgery acts.
        surgery: the gradient surgery, or None (a non-linear weighting alone).
    """

    def __init__(self, task_names: list[str], params: list[nn.Parameter], shared: list[nn.Parameter],
                 surgery: GradientSurgery | None):
        shared_ids = {id(p) for p in shared}
        # shared parameters first: their gradients are the buffer's first P_s columns
        self.params = [p for p in params if id(p) in shared_ids] + [p for p in params if id(p) not in shared_ids]
        self.shared_sizes = [p.numel() for p in self.params[: len(shared_ids)]]
        self.num_shared = sum(self.shared_sizes)
        self.offsets = [0]
        for p in self.params:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.task_names = list(task_names)
        self.surgery = surgery
        self._buffer: torch.Tensor | None = None
        self._touched = torch.zeros(len(self.params), dtype=torch.float32)

    def accumulate(self, task_losses: dict[str, torch.Tensor], adversarial_loss: torch.Tensor | None, scale: float,
                   loss_scale: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Add the gradients of these losses, each to its own row (one backward pass per loss; they may share
        a forward graph). The trainer calls it once per task of a micro-batch, on that task's rows.

        Args:
            task_losses: {task: L_t}.
            adversarial_loss: the adversarial loss of the same rows (weighted by their share of the batch), or None.
            scale: 1 / gradient accumulation steps.
            loss_scale: the mixed-precision loss scaler (identity without one).
        """
        m = len(self.task_names)
        if self._buffer is None:
            self._buffer = torch.zeros(m + 1, self.offsets[-1], device=self.params[0].device)
        terms = [(self.task_names.index(n), loss) for n, loss in task_losses.items()]
        if adversarial_loss is not None:
            terms.append((m, adversarial_loss))
        for k, (row, loss) in enumerate(terms):
            grads = torch.autograd.grad(loss_scale(loss * scale), self.params, retain_graph=k < len(terms) - 1,
                                        allow_unused=True)
            for j, grad in enumerate(grads):
                if grad is not None:
                    self._buffer[row, self.offsets[j]: self.offsets[j + 1]] += grad.reshape(-1).float()
                    self._touched[j] = 1.0

    def finish(self, coefficients: torch.Tensor, step: int, check_finite: bool) -> None:
        """Reduce over ranks, weight, operate on the shared block, write `.grad`, and reset.

        Args:
            coefficients: (M,) c_t.
            step: the optimizer step (0-based), for the surgery's random task orders.
            check_finite: a loss scaler is active: a non-finite gradient (fp16 overflow) then skips the surgery
                (and its state update) and is left for the scaler to skip the step.
        """
        buffer, touched = self._buffer, self._touched
        if buffer is None:
            return
        self._touched = torch.zeros_like(touched)
        if world_size() > 1:
            all_reduce_(buffer, "mean")
            all_reduce_(touched, "max")
        m = len(self.task_names)
        buffer[:m].mul_(coefficients.to(buffer.device)[:, None])  # (M, P): c_t G_t
        combined = buffer[:m].sum(dim=0).add_(buffer[m])  # (P,)
        finite = not check_finite or bool(torch.isfinite(combined[: self.num_shared]).all())
        if self.surgery is not None and self.num_shared and finite:
            operated = self.surgery.combine(buffer[:m, : self.num_shared], step, self.shared_sizes)
            combined[: self.num_shared] = operated.add_(buffer[m, : self.num_shared])
        buffer.zero_()  # kept for the next step: no new (M + 1) x P allocation per step
        for j, param in enumerate(self.params):
            if touched[j]:  # a view of `combined`: the Trainer's zero_grad drops it
                grad = combined[self.offsets[j]: self.offsets[j + 1]].view_as(param)
                param.grad = grad if grad.dtype == param.dtype else grad.to(param.dtype)


def all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Average `.grad` over ranks, as DDP would (gradients a rank lacks count as zeros; parameters no rank
    touched keep no gradient)."""
    if world_size() == 1 or not params:
        return
    present = torch.tensor([float(p.grad is not None) for p in params])
    all_reduce_(present, "max")
    used = [p for p, flag in zip(params, present.tolist()) if flag]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in used])
    all_reduce_(flat, "mean")
    offset = 0
    for p in used:
        p.grad.copy_(flat[offset: offset + p.numel()].view_as(p))
        offset += p.numel()
