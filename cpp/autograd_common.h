// Shared by the C++ autograd wrappers of the ops (cpp/*_autograd.cpp): each forward calls its op below the
// Autograd key and saves the inputs, each backward calls the op's *_backward op (CPU or CUDA launcher).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>

namespace viskrates {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Handle of the registered op `name` ("viskrates::..."); throws if no such schema was registered. Wrappers keep
// it in a function-local static: the lookup searches the dispatcher's table by name, once is enough.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The fused backward ops are not differentiable: under create_graph=True they would return gradients without
// a graph, i.e. silently wrong second derivatives, so the backward raises (RuntimeError) naming the op and
// the model to train with on the reference backend instead.
inline void check_no_double_backward(const char* op, const char* model) {
  TORCH_CHECK(!at::GradMode::is_enabled(), op,
              ": double backward (create_graph=True) is not implemented by the fused kernels; use the reference "
              "backend (",
              model, "(..., backend='reference')) to train on forces");
}

// An undefined tensor as an absent optional: autograd hands over the gradient of an output that does not
// reach the loss, and save_for_backward keeps an absent optional input, as undefined tensors.
inline std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

}  // namespace viskrates
