// Launchers of the fused Euclidean attention CUDA kernels (cuda/euclidean_attention.cu). Raw pointers and
// streams only, so that nvcc compiles the kernels without torch headers; the tensor glue is in
// cuda/euclidean_attention_cuda.cpp. One thread per (atom or filter row, head); each launcher returns the
// launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "euclidean_attention_kernel.h"

namespace viskrates {
namespace cuda {

// dx [N, H, D] and dev [N, C], both zero on entry.
template <typename T>
cudaError_t launch_euclidean_attention(const eattn::Graph& graph, int64_t n, const eattn::Params<T>& p, T* dx, T* dev,
                                       cudaStream_t stream);

// Gradients from g_dx [N, H, D], g_dev [N, C]: grad_x_query, grad_ev_query, grad_x_key, grad_x_value,
// grad_ev_key [N, ·, D] and grad_x_filter, grad_ev_filter [P, ·, D] zero on entry; grad_harmonics [E, C],
// grad_cutoff [E] and the per-edge scalars are written.
template <typename T>
cudaError_t launch_euclidean_attention_backward(const eattn::Graph& graph, int64_t n, int64_t num_edges,
                                                int64_t num_filters, const eattn::Params<T>& p, const T* g_dx,
                                                const T* g_dev, T* grad_x_query, T* grad_ev_query, T* grad_x_key,
                                                T* grad_x_value, T* grad_ev_key, T* grad_x_filter, T* grad_ev_filter,
                                                T* grad_harmonics, T* grad_cutoff, const eattn::EdgeScalars<T>& scalars,
                                                cudaStream_t stream);

}  // namespace cuda
}  // namespace viskrates
