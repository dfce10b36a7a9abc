// Autograd of viskrates::euclidean_attention in C++, so that TorchScript SO3krates/SO3LR models (e.g. inside
// OpenMM's TorchForce) get forces without Python. The forward saves only its inputs; the backward recomputes
// the attention scores (no [E, H, D] intermediates are kept) and calls viskrates::euclidean_attention_backward,
// dispatched to the CPU or CUDA launcher. The backward is not itself differentiable: under create_graph=True
// it raises instead of silently returning gradients without a graph (train on forces with
// backend='reference').
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "autograd_common.h"
#include "euclidean_attention.h"

namespace viskrates {
namespace {

using T = const at::Tensor&;

class EuclideanAttentionFunction : public torch::autograd::Function<EuclideanAttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, T row_ptr, T receivers, T senders, T col_ptr, T col_edges,
                               T filter_index, T filter_ptr, T filter_edges, T x_query, T x_key, T x_value,
                               T x_filter, T ev_query, T ev_key, T ev_filter, T harmonics, T cutoff_values,
                               double normalization) {
    static const auto op =
        find_op<std::tuple<at::Tensor, at::Tensor>(T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, double)>(
            "viskrates::euclidean_attention");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges,
                            x_query, x_key, x_value, x_filter, ev_query, ev_key, ev_filter, harmonics,
                            cutoff_values});
    ctx->saved_data["normalization"] = normalization;
    auto [dx, dev] = op.call(row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges,
                             x_query, x_key, x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values,
                             normalization);
    return {dx, dev};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::euclidean_attention", "SO3LR");
    static const auto op =
        find_op<EuclideanAttentionGrads(T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, double)>(
            "viskrates::euclidean_attention_backward");
    const variable_list s = ctx->get_saved_variables();
    // an output that does not reach the loss comes back undefined: its gradient is zero
    const at::Tensor g_dx = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros_like(s[8]);
    const at::Tensor g_dev = grad_outputs[1].defined()
                                 ? grad_outputs[1]
                                 : at::zeros({s[8].size(0), s[15].size(1)}, s[15].options());
    auto [gxq, gxk, gxv, gxw, geq, gek, gew, gy, gcut] =
        op.call(g_dx, g_dev, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[12], s[13],
                s[14], s[15], s[16], ctx->saved_data["normalization"].toDouble());
    const at::Tensor none;
    return {none, none, none, none, none, none, none, none, gxq, gxk, gxv, gxw, geq, gek, gew, gy, gcut, none};
  }
};

std::tuple<at::Tensor, at::Tensor> euclidean_attention_autograd(T row_ptr, T receivers, T senders, T col_ptr,
                                                                T col_edges, T filter_index, T filter_ptr,
                                                                T filter_edges, T x_query, T x_key, T x_value,
                                                                T x_filter, T ev_query, T ev_key, T ev_filter,
                                                                T harmonics, T cutoff_values, double normalization) {
  const variable_list out = EuclideanAttentionFunction::apply(
      row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges, x_query, x_key,
      x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values, normalization);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, Autograd, m) { m.impl("euclidean_attention", &euclidean_attention_autograd); }

}  // namespace viskrates
