"""Hand-written CPU kernels that both `hf_mtl.modeling` and `hf_mtl.adapters` use.

- `fast_dropout`: dropout masks from 16 random bits an element (the backbone's and the heads' dropout);
- `attention`: hf_mtl's registered attention function (adapter modifiers inside self-attention, and the
  fused softmax-dropout attention on the CPU in training);
- `cpu_memory`: glibc malloc thresholds that keep freed activation memory in the process while training.

This package imports nothing else of hf_mtl: it sits below `modeling` and `adapters`.
"""
