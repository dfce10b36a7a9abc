// Autograd of the fused ViS-MP ops in C++, so that TorchScript models (e.g. inside OpenMM's TorchForce)
// get forces without Python. The backward recomputes what it needs from the saved inputs (no per-edge
// [E, L, C] intermediates are kept) and calls the *_backward ops, dispatched to the CPU or CUDA launcher.
// The backward is not itself differentiable: under create_graph=True it raises instead of silently
// returning gradients without a graph (train with forces on the reference backend).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "autograd_common.h"
#include "vismp.h"

namespace viskrates {
namespace {

class VectorMessageFunction : public torch::autograd::Function<VectorMessageFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& row_ptr, const at::Tensor& receivers,
                            const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges,
                            const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                            const at::Tensor& harmonics, const std::optional<at::Tensor>& weights) {
    static const auto op =
        find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>&)>("viskrates::vismp_vector_message");
    at::AutoDispatchBelowADInplaceOrView guard;
    const at::Tensor v = vectors.has_value() ? *vectors : at::Tensor();
    const at::Tensor w = weights.has_value() ? *weights : at::Tensor();
    ctx->save_for_backward({row_ptr, receivers, senders, col_ptr, col_edges, v, filters, harmonics, w});
    return op.call(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::vismp_vector_message", "ViSNet");
    static const auto op =
        find_op<VectorMessageGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                   const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>(
            "viskrates::vismp_vector_message_backward");
    const variable_list s = ctx->get_saved_variables();
    auto [gv, gf, gy, gw] = op.call(grad_outputs[0].contiguous(), s[0], s[1], s[2], s[3], s[4], optional_of(s[5]),
                                    s[6], s[7], optional_of(s[8]));
    // inputs: row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights
    return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), gv, gf, gy, gw};
  }
};

class EdgeUpdateFunction : public torch::autograd::Function<EdgeUpdateFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& row_ptr, const at::Tensor& receivers,
                            const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges,
                            const at::Tensor& edge_features, const at::Tensor& gate, const at::Tensor& target,
                            const at::Tensor& source, const at::Tensor& harmonics) {
    static const auto op =
        find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&)>("viskrates::vismp_edge_update");
    at::AutoDispatchBelowADInplaceOrView guard;
    // the edge features enter linearly: their gradient is the upstream one and they need not be saved
    ctx->save_for_backward({row_ptr, receivers, senders, col_ptr, col_edges, gate, target, source, harmonics});
    return op.call(row_ptr, receivers, senders, col_ptr, col_edges, edge_features, gate, target, source, harmonics);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::vismp_edge_update", "ViSNet");
    static const auto op =
        find_op<EdgeUpdateGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&)>("viskrates::vismp_edge_update_backward");
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor grad = grad_outputs[0].contiguous();
    auto [gg, gt, gs, gy] = op.call(grad, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
    return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), grad, gg, gt, gs, gy};
  }
};

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& row_ptr, const at::Tensor& receivers,
                               const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges,
                               const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                               const at::Tensor& filters, const at::Tensor& weights, int64_t num_heads) {
    static const auto op =
        find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, int64_t)>("viskrates::vismp_attention");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({row_ptr, receivers, senders, col_ptr, col_edges, query, key, value, filters, weights});
    ctx->saved_data["num_heads"] = num_heads;
    auto [messages, sums] =
        op.call(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value, filters, weights, num_heads);
    return {messages, sums};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    check_no_double_backward("viskrates::vismp_attention", "ViSNet");
    static const auto op =
        find_op<AttentionGrads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               int64_t)>("viskrates::vismp_attention_backward");
    const variable_list s = ctx->get_saved_variables();
    // an output that does not reach the loss comes back undefined: its gradient is zero
    const at::Tensor g_messages = grad_outputs[0].defined()
                                      ? grad_outputs[0].contiguous()
                                      : at::zeros({s[1].size(0), s[5].size(1)}, s[5].options());
    const at::Tensor g_sums = grad_outputs[1].defined() ? grad_outputs[1].contiguous() : at::zeros_like(s[5]);
    auto [gq, gk, gv, gf, gw] = op.call(g_messages, g_sums, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
                                        s[9], ctx->saved_data["num_heads"].toInt());
    return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), gq, gk, gv, gf, gw, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> attention_autograd(const at::Tensor& row_ptr, const at::Tensor& receivers,
                                                      const at::Tensor& senders, const at::Tensor& col_ptr,
                                                      const at::Tensor& col_edges, const at::Tensor& query,
                                                      const at::Tensor& key, const at::Tensor& value,
                                                      const at::Tensor& filters, const at::Tensor& weights,
                                                      int64_t num_heads) {
  const variable_list out = AttentionFunction::apply(row_ptr, receivers, senders, col_ptr, col_edges, query, key,
                                                     value, filters, weights, num_heads);
  return {out[0], out[1]};
}

at::Tensor vector_message_autograd(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                                   const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                   const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                                   const at::Tensor& harmonics, const std::optional<at::Tensor>& weights) {
  return VectorMessageFunction::apply(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics,
                                      weights);
}

at::Tensor edge_update_autograd(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                                const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& edge_features,
                                const at::Tensor& gate, const at::Tensor& target, const at::Tensor& source,
                                const at::Tensor& harmonics) {
  return EdgeUpdateFunction::apply(row_ptr, receivers, senders, col_ptr, col_edges, edge_features, gate, target,
                                   source, harmonics);
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, Autograd, m) {
  m.impl("vismp_vector_message", &vector_message_autograd);
  m.impl("vismp_edge_update", &edge_update_autograd);
  m.impl("vismp_attention", &attention_autograd);
}

}  // namespace viskrates
