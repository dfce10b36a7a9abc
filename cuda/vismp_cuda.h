// Launchers of the fused ViS-MP CUDA kernels (cuda/vismp.cu). Raw pointers and streams only, so that nvcc
// compiles the kernels without torch headers; the tensor glue is in cuda/vismp_cuda.cpp. Each launcher
// returns the launch status. Vector messages and edge update: one warp per receiver (forward, per-edge
// gradients) or per sender (gradients of the senders' features), lanes take channels lane, lane + 32, ...
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "vismp_kernel.h"

namespace viskrates {
namespace cuda {

// out [N, L, C] = V.
template <typename T>
cudaError_t launch_vector_message(const vismp::Graph<T>& graph, int64_t n, const vismp::VectorMessage<T>& p, T* out,
                                  cudaStream_t stream);

// grad_vectors [N, L, C] (skipped when p.vectors is null), grad_scale (idem) and grad_shift (rows of stride
// p.ld_grad), grad_harmonics [E, L], grad_weights [E] from g = dL/dV.
template <typename T>
cudaError_t launch_vector_message_backward(const vismp::Graph<T>& graph, int64_t n, const vismp::VectorMessage<T>& p,
                                           const T* g, T* grad_vectors, T* grad_scale, T* grad_shift,
                                           T* grad_harmonics, T* grad_weights, cudaStream_t stream);

// out [E, C] = f' = f + gate·r.
template <typename T>
cudaError_t launch_edge_update(const vismp::Graph<T>& graph, int64_t n, const vismp::EdgeUpdate<T>& p, T* out,
                               cudaStream_t stream);

// grad_gate [E, C], grad_target (must be zero on entry), grad_source [N, L, C], grad_harmonics [E, L] from
// g = dL/df'.
template <typename T>
cudaError_t launch_edge_update_backward(const vismp::Graph<T>& graph, int64_t n, const vismp::EdgeUpdate<T>& p,
                                        const T* g, T* grad_gate, T* grad_target, T* grad_source, T* grad_harmonics,
                                        cudaStream_t stream);

// out [E, C] = attention messages m, sums [N, C] (zero on entry) = their sums per receiver. One thread per
// (receiver, head).
template <typename T>
cudaError_t launch_attention(const vismp::Graph<T>& graph, int64_t n, int64_t heads, const vismp::Attention<T>& p,
                             T* out, T* sums, cudaStream_t stream);

// grad_query, grad_key, grad_value [N, C] (zero on entry), grad_key_filter, grad_value_filter (rows of stride
// p.ld_grad_filter) and grad_weight_heads [E, H] (per-head shares of dL/dw, summed by the caller) from g = dL/dm
// and g_node = dL/d(sums).
template <typename T>
cudaError_t launch_attention_backward(const vismp::Graph<T>& graph, int64_t n, int64_t heads,
                                      const vismp::Attention<T>& p, const T* g, const T* g_node, T* grad_query,
                                      T* grad_key, T* grad_value, T* grad_key_filter, T* grad_value_filter,
                                      T* grad_weight_heads, cudaStream_t stream);

}  // namespace cuda
}  // namespace viskrates
