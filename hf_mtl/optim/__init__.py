"""Multi-task optimization: loss weighting, gradient surgery and dynamic task scheduling.

- `weighting/`: `loss_weighting` strategies (equal, static, size, uncertainty, dwa, tchebycheff, curriculum);
- `surgery/`: `gradient_surgery` strategies (pcgrad, gradvac);
- `schedulers/`: `sampling_strategy` task schedulers (proportional, temperature, annealed, uniform,
  round_robin, sequential, all_tasks, bandit, uncertainty) and their base; the batch sampler that uses
  them is `hf_mtl.data.samplers`;
- `task_gradients.py`: per-task gradients over an optimizer step (surgery, non-linear weightings, DDP);
- `mixed.py`: mixed-task batches for adapter methods that train one task per forward;
- `feedback.py`: the held-out losses a dynamic scheduler learns from;
- `strategy.py`: the base of weightings and surgeries (names live in `hf_mtl.registry.Registry`);
- `plan.py`: `OptimizationPlan`, what the trainer needs from all of the above, validated together.
"""
