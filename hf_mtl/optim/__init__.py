"""Multi-task optimization: loss weighting, gradient surgery and dynamic task scheduling.

- `weighting/`: `loss_weighting` strategies (equal, static, size, uncertainty, dwa, tchebycheff, curriculum);
- `surgery/`: `gradient_surgery` strategies (pcgrad, gradvac);
- `schedulers/`: the `all_tasks`, `bandit` and `uncertainty` sampling strategies (the others live in
  `hf_mtl.data.samplers`, where all of them register);
- `task_gradients.py`: per-task gradients over an optimizer step (surgery, non-linear weightings, DDP);
- `mixed.py`: mixed-task batches for adapter methods that train one task per forward;
- `feedback.py`: the held-out losses a dynamic scheduler learns from;
- `plan.py`: `OptimizationPlan`, what the trainer needs from all of the above, validated together.
"""
