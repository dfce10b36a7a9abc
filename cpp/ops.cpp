// Schemas of the viskrates custom ops (torch.ops.viskrates.*). Kernels are registered per dispatch key
// next to their launchers (CPU: cpp/, CUDA: cuda/) and autograd wrappers in cpp/*_autograd.cpp.
#include <torch/library.h>

TORCH_LIBRARY(viskrates, m) {
  // Contract and pure-PyTorch specification: python/viskrates/ops.py (neighbor_list_reference).
  m.def(
      "neighbor_list(Tensor positions, Tensor? box, float cutoff, Tensor? batch, bool self_loops) -> "
      "(Tensor row_ptr, Tensor receivers, Tensor senders, Tensor shifts, Tensor edge_vectors)");
}
