// Tensor glue of the fused ViS-MP CUDA ops (compiled by the C++ compiler): input checks from
// cpp/vismp.cpp, kernels from cuda/vismp.cu.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "vismp.h"
#include "vismp_cuda.h"

namespace viskrates {
namespace {

at::Tensor vector_message_cuda(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                               const at::Tensor& col_ptr, const at::Tensor& col_edges,
                               const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                               const at::Tensor& harmonics, const std::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard guard(filters.device());
  const VectorMessageInputs in =
      check_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights);
  const int64_t n = in.graph.num_nodes;
  at::Tensor out = at::empty({n, in.L, in.C}, in.filters.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.filters.scalar_type(), "vismp_vector_message_cuda", [&] {
    check_launch(cuda::launch_vector_message<scalar_t>(graph_pointers<scalar_t>(in.graph), n,
                                                       vector_message_params<scalar_t>(in),
                                                       out.data_ptr<scalar_t>(), stream_of(out)),
                 "viskrates::vismp_vector_message");
  });
  return out;
}

VectorMessageGrads vector_message_backward_cuda(const at::Tensor& grad, const at::Tensor& row_ptr,
                                                const at::Tensor& receivers, const at::Tensor& senders,
                                                const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                                const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                                                const at::Tensor& harmonics,
                                                const std::optional<at::Tensor>& weights) {
  const c10::cuda::CUDAGuard guard(filters.device());
  const VectorMessageInputs in =
      check_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights);
  const int64_t n = in.graph.num_nodes, num_edges = in.graph.num_edges;
  const at::Tensor g = check_vismp_features("viskrates::vismp_vector_message_backward", "grad", grad,
                                            {n, in.L, in.C}, in.filters);
  const bool has_vectors = in.vectors.defined();
  at::Tensor grad_vectors = has_vectors ? at::empty({n, in.L, in.C}, g.options()) : at::Tensor();
  at::Tensor grad_filters = at::empty({num_edges, in.filters.size(1)}, g.options());
  at::Tensor grad_harmonics = at::empty({num_edges, in.L}, g.options());
  at::Tensor grad_weights = at::empty({num_edges}, g.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(in.filters.scalar_type(), "vismp_vector_message_backward_cuda", [&] {
      scalar_t* grad_scale = has_vectors ? grad_filters.data_ptr<scalar_t>() : nullptr;
      scalar_t* grad_shift = grad_filters.data_ptr<scalar_t>() + (has_vectors ? in.C : 0);
      check_launch(cuda::launch_vector_message_backward<scalar_t>(
                       graph_pointers<scalar_t>(in.graph), n, vector_message_params<scalar_t>(in),
                       g.data_ptr<scalar_t>(), has_vectors ? grad_vectors.data_ptr<scalar_t>() : nullptr, grad_scale,
                       grad_shift, grad_harmonics.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(),
                       stream_of(g)),
                   "viskrates::vismp_vector_message_backward");
    });
  }
  return {grad_vectors, grad_filters, grad_harmonics, in.weights.defined() ? grad_weights : at::Tensor()};
}

at::Tensor edge_update_cuda(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                            const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& edge_features,
                            const at::Tensor& gate, const at::Tensor& target, const at::Tensor& source,
                            const at::Tensor& harmonics) {
  const c10::cuda::CUDAGuard guard(target.device());
  const EdgeUpdateInputs in = check_edge_update("viskrates::vismp_edge_update", row_ptr, receivers, senders, col_ptr,
                                                col_edges, edge_features, gate, target, source, harmonics);
  const int64_t n = in.graph.num_nodes;
  at::Tensor out = at::empty({in.graph.num_edges, in.C}, in.target.options());
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.target.scalar_type(), "vismp_edge_update_cuda", [&] {
    const vismp::EdgeUpdate<scalar_t> p = edge_update_params<scalar_t>(in);
    check_launch(cuda::launch_edge_update<scalar_t>(graph_pointers<scalar_t>(in.graph), n, p, out.data_ptr<scalar_t>(),
                                                    stream_of(out)),
                 "viskrates::vismp_edge_update");
  });
  return out;
}

EdgeUpdateGrads edge_update_backward_cuda(const at::Tensor& grad, const at::Tensor& row_ptr,
                                          const at::Tensor& receivers, const at::Tensor& senders,
                                          const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                          const at::Tensor& gate, const at::Tensor& target, const at::Tensor& source,
                                          const at::Tensor& harmonics) {
  const c10::cuda::CUDAGuard guard(target.device());
  const char* op = "viskrates::vismp_edge_update_backward";
  const EdgeUpdateInputs in = check_edge_update(op, row_ptr, receivers, senders, col_ptr, col_edges, std::nullopt, gate,
                                                target, source, harmonics);
  const int64_t n = in.graph.num_nodes;
  const at::Tensor g = check_vismp_features(op, "grad", grad, {in.graph.num_edges, in.C}, in.target);
  at::Tensor grad_gate = at::empty({in.graph.num_edges, in.C}, g.options());
  at::Tensor grad_target = at::zeros({n, in.L, in.C}, g.options());  // accumulated in place by the kernel
  at::Tensor grad_source = at::empty({n, in.L, in.C}, g.options());
  at::Tensor grad_harmonics = at::empty({in.graph.num_edges, in.L}, g.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(in.target.scalar_type(), "vismp_edge_update_backward_cuda", [&] {
      const vismp::EdgeUpdate<scalar_t> p = edge_update_params<scalar_t>(in);
      check_launch(cuda::launch_edge_update_backward<scalar_t>(
                       graph_pointers<scalar_t>(in.graph), n, p, g.data_ptr<scalar_t>(), grad_gate.data_ptr<scalar_t>(),
                       grad_target.data_ptr<scalar_t>(), grad_source.data_ptr<scalar_t>(),
                       grad_harmonics.data_ptr<scalar_t>(), stream_of(g)),
                   op);
    });
  }
  return {grad_gate, grad_target, grad_source, grad_harmonics};
}

std::tuple<at::Tensor, at::Tensor> attention_cuda(const at::Tensor& row_ptr, const at::Tensor& receivers,
                                                  const at::Tensor& senders, const at::Tensor& col_ptr,
                                                  const at::Tensor& col_edges, const at::Tensor& query,
                                                  const at::Tensor& key, const at::Tensor& value,
                                                  const at::Tensor& filters, const at::Tensor& weights,
                                                  int64_t num_heads) {
  const c10::cuda::CUDAGuard guard(query.device());
  const AttentionInputs in = check_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value,
                                             filters, weights, num_heads);
  const int64_t n = in.graph.num_nodes;
  at::Tensor out = at::empty({in.graph.num_edges, in.C}, in.query.options());
  at::Tensor sums = at::zeros({n, in.C}, in.query.options());  // accumulated in place by the kernel
  if (n == 0) return {out, sums};
  AT_DISPATCH_FLOATING_TYPES(in.query.scalar_type(), "vismp_attention_cuda", [&] {
    check_launch(cuda::launch_attention<scalar_t>(graph_pointers<scalar_t>(in.graph), n, in.H,
                                                  attention_params<scalar_t>(in), out.data_ptr<scalar_t>(),
                                                  sums.data_ptr<scalar_t>(), stream_of(out)),
                 "viskrates::vismp_attention");
  });
  return {out, sums};
}

AttentionGrads attention_backward_cuda(const at::Tensor& grad, const at::Tensor& grad_sums, const at::Tensor& row_ptr,
                                       const at::Tensor& receivers, const at::Tensor& senders,
                                       const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                       const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                       const at::Tensor& filters, const at::Tensor& weights, int64_t num_heads) {
  const c10::cuda::CUDAGuard guard(query.device());
  const char* op = "viskrates::vismp_attention_backward";
  const AttentionInputs in = check_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value,
                                             filters, weights, num_heads);
  const int64_t n = in.graph.num_nodes, num_edges = in.graph.num_edges, C = in.C;
  const at::Tensor g = check_vismp_features(op, "grad", grad, {num_edges, C}, in.query);
  const at::Tensor g_node = check_vismp_features(op, "grad_sums", grad_sums, {n, C}, in.query);
  at::Tensor grad_query = at::zeros({n, C}, g.options());
  at::Tensor grad_key = at::zeros({n, C}, g.options());
  at::Tensor grad_value = at::zeros({n, C}, g.options());
  at::Tensor grad_filters = at::empty({num_edges, 2 * C}, g.options());
  at::Tensor grad_weight_heads = at::empty({num_edges, in.H}, g.options());
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(in.query.scalar_type(), "vismp_attention_backward_cuda", [&] {
      check_launch(cuda::launch_attention_backward<scalar_t>(
                       graph_pointers<scalar_t>(in.graph), n, in.H, attention_params<scalar_t>(in),
                       g.data_ptr<scalar_t>(), g_node.data_ptr<scalar_t>(), grad_query.data_ptr<scalar_t>(),
                       grad_key.data_ptr<scalar_t>(), grad_value.data_ptr<scalar_t>(),
                       grad_filters.data_ptr<scalar_t>(), grad_filters.data_ptr<scalar_t>() + C,
                       grad_weight_heads.data_ptr<scalar_t>(), stream_of(g)),
                   op);
    });
  }
  return {grad_query, grad_key, grad_value, grad_filters, grad_weight_heads.sum(1)};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CUDA, m) {
  m.impl("vismp_attention", &attention_cuda);
  m.impl("vismp_attention_backward", &attention_backward_cuda);
  m.impl("vismp_vector_message", &vector_message_cuda);
  m.impl("vismp_vector_message_backward", &vector_message_backward_cuda);
  m.impl("vismp_edge_update", &edge_update_cuda);
  m.impl("vismp_edge_update_backward", &edge_update_backward_cuda);
}

}  // namespace viskrates
