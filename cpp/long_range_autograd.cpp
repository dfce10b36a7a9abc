// Autograd of viskrates::long_range_energy in C++, so that TorchScript SO3LR models (e.g. inside OpenMM's
// TorchForce) get forces without Python. The forward saves only its inputs; the backward recomputes the pair
// terms (no per-pair intermediates are kept) and calls viskrates::long_range_energy_backward (CPU or CUDA
// launcher). The gradients with respect to the charges, polarisabilities and C6 coefficients flow on through
// autograd into the network that predicted them. The backward is not itself differentiable: under
// create_graph=True it raises (train on forces with backend='reference').
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "autograd_common.h"
#include "long_range.h"

namespace viskrates {
namespace {

using T = const at::Tensor&;
using OptT = const std::optional<at::Tensor>&;

class LongRangeFunction : public torch::autograd::Function<LongRangeFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, T positions, OptT box, T row_ptr, T senders, T shifts,
                               T charges, T polarizabilities, T c6, double cutoff, double coulomb_constant,
                               double sigma, double coulomb_switch_on, double dispersion_switch_on,
                               double dispersion_scale, c10::string_view coulomb_kernel) {
    static const auto op = find_op<LongRangeOutputs(T, OptT, T, T, T, T, T, T, double, double, double, double,
                                                    double, double, c10::string_view)>("viskrates::long_range_energy");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({positions, box.has_value() ? *box : at::Tensor(), row_ptr, senders, shifts, charges,
                            polarizabilities, c6});
    ctx->saved_data["cutoff"] = cutoff;
    ctx->saved_data["coulomb_constant"] = coulomb_constant;
    ctx->saved_data["sigma"] = sigma;
    ctx->saved_data["coulomb_switch_on"] = coulomb_switch_on;
    ctx->saved_data["dispersion_switch_on"] = dispersion_switch_on;
    ctx->saved_data["dispersion_scale"] = dispersion_scale;
    ctx->saved_data["coulomb_kernel"] = std::string(coulomb_kernel);
    auto [coulomb, dispersion] = op.call(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6,
                                         cutoff, coulomb_constant, sigma, coulomb_switch_on, dispersion_switch_on,
                                         dispersion_scale, coulomb_kernel);
    return {coulomb, dispersion};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::long_range_energy", "SO3LR");
    static const auto op =
        find_op<LongRangeGrads(T, T, T, OptT, T, T, T, T, T, T, double, double, double, double, double, double,
                               c10::string_view, bool)>("viskrates::long_range_energy_backward");
    const variable_list s = ctx->get_saved_variables();
    const std::optional<at::Tensor> box = optional_of(s[1]);
    // an output that does not reach the loss comes back undefined: its gradient is zero
    const at::Tensor g_coulomb = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros_like(s[5]);
    const at::Tensor g_dispersion = grad_outputs[1].defined() ? grad_outputs[1] : at::zeros_like(s[5]);
    // needs_input_grad counts the tensor inputs: positions, box, row_ptr, senders, shifts, charges, ...
    const bool box_grad = box.has_value() && ctx->needs_input_grad(1);
    auto [gr, gbox, gq, galpha, gc6] =
        op.call(g_coulomb, g_dispersion, s[0], box, s[2], s[3], s[4], s[5], s[6], s[7],
                ctx->saved_data["cutoff"].toDouble(), ctx->saved_data["coulomb_constant"].toDouble(),
                ctx->saved_data["sigma"].toDouble(), ctx->saved_data["coulomb_switch_on"].toDouble(),
                ctx->saved_data["dispersion_switch_on"].toDouble(), ctx->saved_data["dispersion_scale"].toDouble(),
                ctx->saved_data["coulomb_kernel"].toStringRef(), box_grad);
    const at::Tensor none;
    // inputs: positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6, then seven scalars
    return {gr, gbox, none, none, none, gq, galpha, gc6, none, none, none, none, none, none, none};
  }
};

LongRangeOutputs long_range_autograd(T positions, OptT box, T row_ptr, T senders, T shifts, T charges,
                                     T polarizabilities, T c6, double cutoff, double coulomb_constant, double sigma,
                                     double coulomb_switch_on, double dispersion_switch_on, double dispersion_scale,
                                     c10::string_view coulomb_kernel) {
  const variable_list out =
      LongRangeFunction::apply(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6, cutoff,
                               coulomb_constant, sigma, coulomb_switch_on, dispersion_switch_on, dispersion_scale,
                               coulomb_kernel);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, Autograd, m) { m.impl("long_range_energy", &long_range_autograd); }

}  // namespace viskrates
