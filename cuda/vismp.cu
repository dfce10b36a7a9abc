// CUDA launchers of the fused ViS-MP ops, running the kernel bodies of cpp/vismp_kernel.h (the functions the
// CPU launcher runs). Vector messages and edge update: one warp per receiver (or sender), each lane one
// channel at a time (W = 1). Attention: one thread per (receiver or sender, head).
// Cross-channel sums (harmonics and weight gradients) are reduced with warp shuffles in a fixed order,
// and every output element has a single writer: results are deterministic.
#include <cuda_runtime.h>

#include "launch_config.h"
#include "vismp_cuda.h"

namespace viskrates {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = kThreads / kWarp;

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// Warp index (= receiver or sender) and lane of the calling thread.
__device__ __forceinline__ int64_t warp_atom() {
  return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}
__device__ __forceinline__ int lane() { return threadIdx.x % kWarp; }

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename T>
__global__ void vector_message_kernel(const vismp::Graph<T> graph, int64_t n, const vismp::VectorMessage<T> p,
                                      T* out) {
  const int64_t i = warp_atom();
  if (i >= n) return;
  for (int64_t c = lane(); c < p.C; c += kWarp) {
    T acc[vismp::kMaxComponents];
    for (int m = 0; m < p.L; ++m) acc[m] = T(0);
    for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
      vismp::vector_message_edge<1>(p, e, graph.senders[e], c, acc, 1);
    }
    for (int m = 0; m < p.L; ++m) out[(i * p.L + m) * p.C + c] = acc[m];
  }
}

template <typename T>
__global__ void vector_message_edges_backward_kernel(const vismp::Graph<T> graph, int64_t n,
                                                     const vismp::VectorMessage<T> p, const T* g, T* grad_scale,
                                                     T* grad_shift, T* grad_harmonics, T* grad_weights) {
  const int64_t i = warp_atom();
  if (i >= n) return;  // uniform per warp: the shuffles below see all 32 lanes
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    T gy[vismp::kMaxComponents];
    for (int m = 0; m < p.L; ++m) gy[m] = T(0);
    T gw = T(0);
    for (int64_t c = lane(); c < p.C; c += kWarp) {
      vismp::vector_message_edge_backward<1>(p, g, e, i, graph.senders[e], c, grad_scale, grad_shift, gy, &gw);
    }
    for (int m = 0; m < p.L; ++m) gy[m] = warp_sum(gy[m]);
    gw = warp_sum(gw);
    if (lane() == 0) {
      for (int m = 0; m < p.L; ++m) grad_harmonics[e * p.L + m] = gy[m];
      grad_weights[e] = gw;
    }
  }
}

// The sender-pass body of the vector-message and the edge-update backward, chosen by the type of the parameters.
template <typename T>
__device__ __forceinline__ void sender_edge(const vismp::VectorMessage<T>& p, const T* g, int64_t e, int64_t i,
                                            int64_t c, T* acc) {
  vismp::vector_message_edge_backward_sender<1>(p, g, e, i, c, acc, 1);
}
template <typename T>
__device__ __forceinline__ void sender_edge(const vismp::EdgeUpdate<T>& p, const T* g, int64_t e, int64_t i, int64_t c,
                                            T* acc) {
  vismp::update_edge_backward_sender<1>(p, g, e, i, c, acc, 1);
}

// Sender pass of those two backwards: one warp per sender j, each lane one channel c; grad[j, m, c] sums the body's
// terms over the edges of sender j (grad_vectors of the vector messages, grad_source of the edge update).
template <typename T, typename Params>
__global__ void senders_backward_kernel(const vismp::Graph<T> graph, int64_t n, const Params p, const T* g, T* grad) {
  const int64_t j = warp_atom();
  if (j >= n) return;
  for (int64_t c = lane(); c < p.C; c += kWarp) {
    T acc[vismp::kMaxComponents];
    for (int m = 0; m < p.L; ++m) acc[m] = T(0);
    for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
      const int64_t e = graph.col_edges[k];
      sender_edge(p, g, e, graph.receivers[e], c, acc);
    }
    for (int m = 0; m < p.L; ++m) grad[(j * p.L + m) * p.C + c] = acc[m];
  }
}

template <typename T>
__global__ void edge_update_kernel(const vismp::Graph<T> graph, int64_t n, const vismp::EdgeUpdate<T> p, T* out) {
  const int64_t i = warp_atom();
  if (i >= n) return;
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    for (int64_t c = lane(); c < p.C; c += kWarp) vismp::update_edge<1>(p, e, i, graph.senders[e], c, out);
  }
}

template <typename T>
__global__ void edge_update_receivers_backward_kernel(const vismp::Graph<T> graph, int64_t n,
                                                      const vismp::EdgeUpdate<T> p, const T* g, T* grad_gate,
                                                      T* grad_target, T* grad_harmonics) {
  const int64_t i = warp_atom();
  if (i >= n) return;  // uniform per warp
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    T gy[vismp::kMaxComponents];
    for (int m = 0; m < p.L; ++m) gy[m] = T(0);
    // grad_target[i] is owned by this warp, each of its elements by one lane
    for (int64_t c = lane(); c < p.C; c += kWarp) {
      vismp::update_edge_backward<1>(p, g, e, i, graph.senders[e], c, grad_gate, grad_target + i * p.L * p.C + c, p.C,
                                     gy);
    }
    for (int m = 0; m < p.L; ++m) gy[m] = warp_sum(gy[m]);
    if (lane() == 0) {
      for (int m = 0; m < p.L; ++m) grad_harmonics[e * p.L + m] = gy[m];
    }
  }
}

template <typename T>
__global__ void attention_kernel(const vismp::Graph<T> graph, int64_t n, int64_t heads, const vismp::Attention<T> p,
                                 T* out, T* sums) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * heads) return;
  const int64_t i = t / heads, h = t % heads;
  // sums[i] (zero on entry): the head's channels belong to this thread
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    vismp::attention_edge<0>(p, e, i, graph.senders[e], h, out, sums);
  }
}

template <typename T>
__global__ void attention_receivers_backward_kernel(const vismp::Graph<T> graph, int64_t n, int64_t heads,
                                                    const vismp::Attention<T> p, const T* g, const T* g_node,
                                                    T* grad_query, T* grad_key_filter, T* grad_value_filter,
                                                    T* grad_weight_heads) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * heads) return;
  const int64_t i = t / heads, h = t % heads;
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    grad_weight_heads[e * heads + h] =
        vismp::attention_edge_backward<0>(p, g, g_node, e, i, graph.senders[e], h, grad_query, grad_key_filter,
                                          grad_value_filter);
  }
}

template <typename T>
__global__ void attention_senders_backward_kernel(const vismp::Graph<T> graph, int64_t n, int64_t heads,
                                                  const vismp::Attention<T> p, const T* g, const T* g_node,
                                                  T* grad_key, T* grad_value) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n * heads) return;
  const int64_t j = t / heads, h = t % heads;
  for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
    const int64_t e = graph.col_edges[k];
    vismp::attention_edge_backward_sender<0>(p, g, g_node, e, graph.receivers[e], j, h, grad_key, grad_value);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_attention(const vismp::Graph<T>& graph, int64_t n, int64_t heads, const vismp::Attention<T>& p,
                             T* out, T* sums, cudaStream_t stream) {
  attention_kernel<T><<<thread_blocks(n * heads), kThreads, 0, stream>>>(graph, n, heads, p, out, sums);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_attention_backward(const vismp::Graph<T>& graph, int64_t n, int64_t heads,
                                      const vismp::Attention<T>& p, const T* g, const T* g_node, T* grad_query,
                                      T* grad_key, T* grad_value, T* grad_key_filter, T* grad_value_filter,
                                      T* grad_weight_heads, cudaStream_t stream) {
  attention_receivers_backward_kernel<T><<<thread_blocks(n * heads), kThreads, 0, stream>>>(
      graph, n, heads, p, g, g_node, grad_query, grad_key_filter, grad_value_filter, grad_weight_heads);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  attention_senders_backward_kernel<T><<<thread_blocks(n * heads), kThreads, 0, stream>>>(graph, n, heads, p, g,
                                                                                         g_node, grad_key, grad_value);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_vector_message(const vismp::Graph<T>& graph, int64_t n, const vismp::VectorMessage<T>& p, T* out,
                                  cudaStream_t stream) {
  vector_message_kernel<T><<<num_blocks(n), kThreads, 0, stream>>>(graph, n, p, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_vector_message_backward(const vismp::Graph<T>& graph, int64_t n, const vismp::VectorMessage<T>& p,
                                           const T* g, T* grad_vectors, T* grad_scale, T* grad_shift,
                                           T* grad_harmonics, T* grad_weights, cudaStream_t stream) {
  vector_message_edges_backward_kernel<T><<<num_blocks(n), kThreads, 0, stream>>>(
      graph, n, p, g, grad_scale, grad_shift, grad_harmonics, grad_weights);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess || p.vectors == nullptr) return status;
  senders_backward_kernel<T, vismp::VectorMessage<T>><<<num_blocks(n), kThreads, 0, stream>>>(graph, n, p, g,
                                                                                              grad_vectors);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_edge_update(const vismp::Graph<T>& graph, int64_t n, const vismp::EdgeUpdate<T>& p, T* out,
                               cudaStream_t stream) {
  edge_update_kernel<T><<<num_blocks(n), kThreads, 0, stream>>>(graph, n, p, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_edge_update_backward(const vismp::Graph<T>& graph, int64_t n, const vismp::EdgeUpdate<T>& p,
                                        const T* g, T* grad_gate, T* grad_target, T* grad_source, T* grad_harmonics,
                                        cudaStream_t stream) {
  edge_update_receivers_backward_kernel<T>
      <<<num_blocks(n), kThreads, 0, stream>>>(graph, n, p, g, grad_gate, grad_target, grad_harmonics);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  senders_backward_kernel<T, vismp::EdgeUpdate<T>><<<num_blocks(n), kThreads, 0, stream>>>(graph, n, p, g, grad_source);
  return cudaGetLastError();
}

#define VISKRATES_INSTANTIATE(T)                                                                                     \
  template cudaError_t launch_vector_message<T>(const vismp::Graph<T>&, int64_t, const vismp::VectorMessage<T>&, T*, \
                                                cudaStream_t);                                                       \
  template cudaError_t launch_vector_message_backward<T>(                                                            \
      const vismp::Graph<T>&, int64_t, const vismp::VectorMessage<T>&, const T*, T*, T*, T*, T*, T*, cudaStream_t);  \
  template cudaError_t launch_edge_update<T>(const vismp::Graph<T>&, int64_t, const vismp::EdgeUpdate<T>&, T*,       \
                                             cudaStream_t);                                                          \
  template cudaError_t launch_edge_update_backward<T>(const vismp::Graph<T>&, int64_t, const vismp::EdgeUpdate<T>&,  \
                                                      const T*, T*, T*, T*, T*, cudaStream_t);                       \
  template cudaError_t launch_attention<T>(const vismp::Graph<T>&, int64_t, int64_t, const vismp::Attention<T>&, T*, \
                                           T*, cudaStream_t);                                                        \
  template cudaError_t launch_attention_backward<T>(const vismp::Graph<T>&, int64_t, int64_t,                        \
                                                    const vismp::Attention<T>&, const T*, const T*, T*, T*, T*, T*,  \
                                                    T*, T*, cudaStream_t);
VISKRATES_INSTANTIATE(float)
VISKRATES_INSTANTIATE(double)
#undef VISKRATES_INSTANTIATE

}  // namespace cuda
}  // namespace viskrates
