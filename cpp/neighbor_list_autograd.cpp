// Autograd of viskrates::neighbor_list in C++, so that TorchScript models (e.g. inside OpenMM's
// TorchForce) get forces without Python.
//
// edge_vectors[e] = R[senders[e]] - R[receivers[e]] + shifts[e] @ box, hence for an upstream gradient g
// [E, 3]: dL/dR = scatter_add(g, senders) - scatter_add(g, receivers) and dL/dbox = shifts^T @ g. The
// backward is linear in g and independent of R and box, and it is built from differentiable ATen ops,
// so double backward (create_graph=True, e.g. force training) is exact. Indices and shifts are
// piecewise-constant: they are marked non-differentiable.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "autograd_common.h"
#include "neighbor_list.h"

namespace viskrates {
namespace {

NeighborListResult call_neighbor_list_below_autograd(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                                     double cutoff, const std::optional<at::Tensor>& batch,
                                                     bool self_loops) {
  static const auto op = find_op<NeighborListResult(const at::Tensor&, const std::optional<at::Tensor>&, double,
                                                    const std::optional<at::Tensor>&, bool)>(
      "viskrates::neighbor_list");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(positions, box, cutoff, batch, self_loops);
}

class NeighborListFunction : public torch::autograd::Function<NeighborListFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& positions, const std::optional<at::Tensor>& box,
                               double cutoff, const std::optional<at::Tensor>& batch, bool self_loops) {
    auto [row_ptr, receivers, senders, shifts, vectors] =
        call_neighbor_list_below_autograd(positions, box, cutoff, batch, self_loops);
    ctx->save_for_backward({receivers, senders, shifts});
    ctx->saved_data["num_atoms"] = positions.size(0);
    ctx->saved_data["has_box"] = box.has_value() && box->defined();
    ctx->mark_non_differentiable({row_ptr, receivers, senders, shifts});
    return {row_ptr, receivers, senders, shifts, vectors};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& receivers = saved[0];
    const at::Tensor& senders = saved[1];
    const at::Tensor& shifts = saved[2];
    const at::Tensor& grad_vectors = grad_outputs[4];
    at::Tensor grad_positions, grad_box;
    // input edges: 0 = positions, 1 = box (only when a box was given)
    if (ctx->needs_input_grad(0)) {
      const int64_t n = ctx->saved_data["num_atoms"].toInt();
      grad_positions = at::zeros({n, 3}, grad_vectors.options())
                           .index_add(0, senders, grad_vectors)
                           .index_add(0, receivers, grad_vectors, /*alpha=*/-1);
    }
    if (ctx->saved_data["has_box"].toBool() && ctx->needs_input_grad(1)) {
      grad_box = at::mm(shifts.t(), grad_vectors);
    }
    return {grad_positions, grad_box, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

NeighborListResult neighbor_list_autograd(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                          double cutoff, const std::optional<at::Tensor>& batch, bool self_loops) {
  const variable_list out = NeighborListFunction::apply(positions, box, cutoff, batch, self_loops);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, Autograd, m) { m.impl("neighbor_list", &neighbor_list_autograd); }

}  // namespace viskrates
