// Autograd of viskrates::rgc_geometry in C++, so TorchScript models (e.g. in OpenMM's TorchForce) get forces
// without Python. The backward recomputes the per-edge geometry from the saved inputs and calls
// rgc_geometry_backward (CPU or CUDA launcher); the gradients of the basis parameters (means, betas) are only
// computed when they require grad (trainable RBF). The backward is not differentiable again: under
// create_graph=True it raises (train on forces with the reference backend).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <torch/library.h>

#include "autograd_common.h"
#include "rgc.h"

namespace viskrates {
namespace {

class GeometryFunction : public torch::autograd::Function<GeometryFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& edge_vectors, const at::Tensor& receivers,
                               const at::Tensor& senders, double cutoff, int64_t lmax, const at::Tensor& means,
                               const at::Tensor& betas, double alpha) {
    static const auto op = find_op<RgcOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                              int64_t, const at::Tensor&, const at::Tensor&, double)>(
        "viskrates::rgc_geometry");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({edge_vectors, receivers, senders, means, betas});
    ctx->saved_data["cutoff"] = cutoff;
    ctx->saved_data["lmax"] = lmax;
    ctx->saved_data["alpha"] = alpha;
    auto [harmonics, weights, radial] = op.call(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
    return {harmonics, weights, radial};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::rgc_geometry", "ViSNet");
    static const auto op =
        find_op<RgcGrads(const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                         const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         double, int64_t, const at::Tensor&, const at::Tensor&, double, bool)>(
            "viskrates::rgc_geometry_backward");
    const variable_list s = ctx->get_saved_variables();
    // needs_input_grad counts the tensor inputs only: edge_vectors, receivers, senders, means, betas
    const bool basis_grad = ctx->needs_input_grad(3) || ctx->needs_input_grad(4);
    auto [gv, gm, gb] =
        op.call(optional_of(grad_outputs[0]), optional_of(grad_outputs[1]), optional_of(grad_outputs[2]), s[0], s[1],
                s[2], ctx->saved_data["cutoff"].toDouble(), ctx->saved_data["lmax"].toInt(), s[3], s[4],
                ctx->saved_data["alpha"].toDouble(), basis_grad);
    // inputs: edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha
    return {gv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), gm, gb, at::Tensor()};
  }
};

RgcOutputs geometry_autograd(const at::Tensor& edge_vectors, const at::Tensor& receivers, const at::Tensor& senders,
                             double cutoff, int64_t lmax, const at::Tensor& means, const at::Tensor& betas,
                             double alpha) {
  const variable_list out =
      GeometryFunction::apply(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, Autograd, m) { m.impl("rgc_geometry", &geometry_autograd); }

}  // namespace viskrates
