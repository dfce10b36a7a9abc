// Host side of the fused SO3krates Euclidean attention op shared by the CPU launcher
// (cpp/euclidean_attention.cpp), the CUDA glue (cuda/euclidean_attention_cuda.cpp) and the autograd wrapper
// (cpp/euclidean_attention_autograd.cpp): input checks and contiguous views of the inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "euclidean_attention_kernel.h"

namespace viskrates {

// Checked, contiguous inputs of viskrates::euclidean_attention.
struct EuclideanAttentionInputs {
  at::Tensor row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges;
  at::Tensor x_query, x_key, x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values;
  int64_t N = 0, E = 0, P = 0, H = 0, L = 0, D = 0, C = 0;
  double normalization = 1.0;
};

// Raises c10::ValueError naming the offending argument for wrong shapes, dtypes, devices, a number of
// harmonic components other than (L+1)² − 1, more EV heads than invariant heads, or a normalisation that is
// not a positive finite number.
EuclideanAttentionInputs check_euclidean_attention(
    const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
    const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& filter_index,
    const at::Tensor& filter_ptr, const at::Tensor& filter_edges, const at::Tensor& x_query, const at::Tensor& x_key,
    const at::Tensor& x_value, const at::Tensor& x_filter, const at::Tensor& ev_query, const at::Tensor& ev_key,
    const at::Tensor& ev_filter, const at::Tensor& harmonics, const at::Tensor& cutoff_values, double normalization);

inline eattn::Graph euclidean_attention_graph(const EuclideanAttentionInputs& in) {
  return {in.row_ptr.data_ptr<int64_t>(),   in.receivers.data_ptr<int64_t>(),  in.senders.data_ptr<int64_t>(),
          in.col_ptr.data_ptr<int64_t>(),   in.col_edges.data_ptr<int64_t>(),  in.filter_ptr.data_ptr<int64_t>(),
          in.filter_edges.data_ptr<int64_t>()};
}

template <typename T>
eattn::Params<T> euclidean_attention_params(const EuclideanAttentionInputs& in) {
  return {in.x_query.data_ptr<T>(),   in.x_key.data_ptr<T>(),     in.x_value.data_ptr<T>(),
          in.x_filter.data_ptr<T>(),  in.ev_query.data_ptr<T>(),  in.ev_key.data_ptr<T>(),
          in.ev_filter.data_ptr<T>(), in.harmonics.data_ptr<T>(), in.cutoff_values.data_ptr<T>(),
          in.filter_index.data_ptr<int64_t>(), in.H, in.L, in.D, in.C, static_cast<T>(1.0 / in.normalization)};
}

// (grad_x_query, grad_x_key, grad_x_value, grad_x_filter, grad_ev_query, grad_ev_key, grad_ev_filter,
//  grad_harmonics, grad_cutoff_values)
using EuclideanAttentionGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                           at::Tensor, at::Tensor, at::Tensor>;

}  // namespace viskrates
