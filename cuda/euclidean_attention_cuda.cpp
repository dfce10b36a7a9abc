// Tensor glue of the fused Euclidean attention CUDA op (compiled by the C++ compiler): input checks from
// cpp/euclidean_attention.cpp, kernels from cuda/euclidean_attention.cu.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "euclidean_attention.h"
#include "euclidean_attention_cuda.h"

namespace viskrates {
namespace {

using T_ = const at::Tensor&;

std::tuple<at::Tensor, at::Tensor> euclidean_attention_cuda(T_ row_ptr, T_ receivers, T_ senders, T_ col_ptr,
                                                            T_ col_edges, T_ filter_index, T_ filter_ptr,
                                                            T_ filter_edges, T_ x_query, T_ x_key, T_ x_value,
                                                            T_ x_filter, T_ ev_query, T_ ev_key, T_ ev_filter,
                                                            T_ harmonics, T_ cutoff_values, double normalization) {
  const char* op = "viskrates::euclidean_attention";
  const c10::cuda::CUDAGuard guard(x_query.device());
  const EuclideanAttentionInputs in = check_euclidean_attention(
      op, row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges, x_query, x_key,
      x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values, normalization);
  at::Tensor dx = at::zeros({in.N, in.H, in.D}, in.x_query.options());
  at::Tensor dev = at::zeros({in.N, in.C}, in.x_query.options());
  AT_DISPATCH_FLOATING_TYPES(in.x_query.scalar_type(), "euclidean_attention_cuda", [&] {
    check_launch(cuda::launch_euclidean_attention<scalar_t>(euclidean_attention_graph(in), in.N,
                                                            euclidean_attention_params<scalar_t>(in),
                                                            dx.data_ptr<scalar_t>(), dev.data_ptr<scalar_t>(),
                                                            stream_of(dx)),
                 op);
  });
  return {dx, dev};
}

EuclideanAttentionGrads euclidean_attention_backward_cuda(T_ grad_dx, T_ grad_dev, T_ row_ptr, T_ receivers,
                                                          T_ senders, T_ col_ptr, T_ col_edges, T_ filter_index,
                                                          T_ filter_ptr, T_ filter_edges, T_ x_query, T_ x_key,
                                                          T_ x_value, T_ x_filter, T_ ev_query, T_ ev_key,
                                                          T_ ev_filter, T_ harmonics, T_ cutoff_values,
                                                          double normalization) {
  const char* op = "viskrates::euclidean_attention_backward";
  const c10::cuda::CUDAGuard guard(x_query.device());
  const EuclideanAttentionInputs in = check_euclidean_attention(
      op, row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges, x_query, x_key,
      x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values, normalization);
  TORCH_CHECK_VALUE(grad_dx.sizes() == in.x_query.sizes() && grad_dx.scalar_type() == in.x_query.scalar_type() &&
                        grad_dx.device() == in.x_query.device(),
                    op, ": grad_dx must match x_query, got ", grad_dx.scalar_type(), " of shape ", grad_dx.sizes());
  TORCH_CHECK_VALUE(grad_dev.dim() == 2 && grad_dev.size(0) == in.N && grad_dev.size(1) == in.C &&
                        grad_dev.scalar_type() == in.x_query.scalar_type() && grad_dev.device() == in.x_query.device(),
                    op, ": grad_dev must be [N, C] like the harmonics, got ", grad_dev.scalar_type(), " of shape ",
                    grad_dev.sizes());
  const at::Tensor g_dx = grad_dx.contiguous(), g_dev = grad_dev.contiguous();
  const auto opts = in.x_query.options();
  at::Tensor gxq = at::zeros({in.N, in.H, in.D}, opts), gxk = at::zeros({in.N, in.H, in.D}, opts);
  at::Tensor gxv = at::zeros({in.N, in.H, in.D}, opts), gxw = at::zeros({in.P, in.H, in.D}, opts);
  at::Tensor geq = at::zeros({in.N, in.L, in.D}, opts), gek = at::zeros({in.N, in.L, in.D}, opts);
  at::Tensor gew = at::zeros({in.P, in.L, in.D}, opts);
  at::Tensor gy = at::empty({in.E, in.C}, opts), gcut = at::empty({in.E}, opts);
  at::Tensor scratch = at::empty({2 * in.E * (in.H + in.L)}, opts);
  AT_DISPATCH_FLOATING_TYPES(in.x_query.scalar_type(), "euclidean_attention_backward_cuda", [&] {
    const int64_t E = in.E, H = in.H, L = in.L;
    scalar_t* base = scratch.data_ptr<scalar_t>();
    const eattn::EdgeScalars<scalar_t> sc{base, base + E * H, base + E * (H + L), base + E * (2 * H + L)};
    check_launch(cuda::launch_euclidean_attention_backward<scalar_t>(
                     euclidean_attention_graph(in), in.N, E, in.P, euclidean_attention_params<scalar_t>(in),
                     g_dx.data_ptr<scalar_t>(), g_dev.data_ptr<scalar_t>(), gxq.data_ptr<scalar_t>(),
                     geq.data_ptr<scalar_t>(), gxk.data_ptr<scalar_t>(), gxv.data_ptr<scalar_t>(),
                     gek.data_ptr<scalar_t>(), gxw.data_ptr<scalar_t>(), gew.data_ptr<scalar_t>(),
                     gy.data_ptr<scalar_t>(), gcut.data_ptr<scalar_t>(), sc, stream_of(gxq)),
                 op);
  });
  return {gxq, gxk, gxv, gxw, geq, gek, gew, gy, gcut};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CUDA, m) {
  m.impl("euclidean_attention", &euclidean_attention_cuda);
  m.impl("euclidean_attention_backward", &euclidean_attention_backward_cuda);
}

}  // namespace viskrates
