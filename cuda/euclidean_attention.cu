// CUDA launchers of the fused Euclidean attention, running the kernel bodies of
// cpp/euclidean_attention_kernel.h (the functions the CPU launcher runs). One thread per (receiver, head) for
// the forward and the receiver pass of the backward, per (sender, head) and per (filter row, head) for the
// other gradients, per edge for the cutoff gradient. Every output element has a single writer: results are
// deterministic, no atomics.
#include <cuda_runtime.h>

#include "euclidean_attention_cuda.h"
#include "launch_config.h"

namespace viskrates {
namespace cuda {
namespace {

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
}

template <typename T>
__global__ void forward_kernel(const eattn::Graph graph, int64_t n, const eattn::Params<T> p, T* dx, T* dev) {
  const int64_t t = thread_index();
  if (t >= n * p.H) return;
  const int64_t i = t / p.H, h = t % p.H;
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    eattn::forward_edge_head<0>(p, e, i, graph.senders[e], h, dx + (i * p.H + h) * p.D, dev + i * p.C);
  }
}

template <typename T>
__global__ void receivers_backward_kernel(const eattn::Graph graph, int64_t n, const eattn::Params<T> p, const T* g_dx,
                                          const T* g_dev, T* gxq, T* geq, T* gy, const eattn::EdgeScalars<T> sc) {
  const int64_t t = thread_index();
  if (t >= n * p.H) return;
  const int64_t i = t / p.H, h = t % p.H;
  for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
    eattn::backward_receiver_edge_head<0>(p, g_dx, g_dev, e, i, graph.senders[e], h, gxq + (i * p.H + h) * p.D,
                                       h < p.L ? geq + (i * p.L + h) * p.D : nullptr, gy, sc);
  }
}

template <typename T>
__global__ void cutoff_backward_kernel(int64_t num_edges, const eattn::Params<T> p, const eattn::EdgeScalars<T> sc,
                                       T* gcut) {
  const int64_t e = thread_index();
  if (e < num_edges) gcut[e] = eattn::cutoff_grad_edge(p, sc, e);
}

template <typename T>
__global__ void senders_backward_kernel(const eattn::Graph graph, int64_t n, const eattn::Params<T> p, const T* g_dx,
                                        const eattn::EdgeScalars<T> sc, T* gxk, T* gxv, T* gek) {
  const int64_t t = thread_index();
  if (t >= n * p.H) return;
  const int64_t j = t / p.H, h = t % p.H;
  for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
    const int64_t e = graph.col_edges[k];
    eattn::backward_sender_edge_head<0>(p, g_dx, sc, e, graph.receivers[e], h, gxk + (j * p.H + h) * p.D,
                                     gxv + (j * p.H + h) * p.D, h < p.L ? gek + (j * p.L + h) * p.D : nullptr);
  }
}

template <typename T>
__global__ void filters_backward_kernel(const eattn::Graph graph, int64_t num_filters, const eattn::Params<T> p,
                                        const eattn::EdgeScalars<T> sc, T* gxw, T* gew) {
  const int64_t t = thread_index();
  if (t >= num_filters * p.H) return;
  const int64_t f = t / p.H, h = t % p.H;
  for (int64_t k = graph.filter_ptr[f]; k < graph.filter_ptr[f + 1]; ++k) {
    const int64_t e = graph.filter_edges[k];
    eattn::backward_filter_edge_head<0>(p, sc, e, graph.receivers[e], graph.senders[e], h, gxw + (f * p.H + h) * p.D,
                                     h < p.L ? gew + (f * p.L + h) * p.D : nullptr);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_euclidean_attention(const eattn::Graph& graph, int64_t n, const eattn::Params<T>& p, T* dx, T* dev,
                                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  forward_kernel<T><<<thread_blocks(n * p.H), kThreads, 0, stream>>>(graph, n, p, dx, dev);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_euclidean_attention_backward(const eattn::Graph& graph, int64_t n, int64_t num_edges,
                                                int64_t num_filters, const eattn::Params<T>& p, const T* g_dx,
                                                const T* g_dev, T* grad_x_query, T* grad_ev_query, T* grad_x_key,
                                                T* grad_x_value, T* grad_ev_key, T* grad_x_filter, T* grad_ev_filter,
                                                T* grad_harmonics, T* grad_cutoff, const eattn::EdgeScalars<T>& scalars,
                                                cudaStream_t stream) {
  if (n > 0) {
    receivers_backward_kernel<T><<<thread_blocks(n * p.H), kThreads, 0, stream>>>(
        graph, n, p, g_dx, g_dev, grad_x_query, grad_ev_query, grad_harmonics, scalars);
  }
  // the passes below read the per-edge scalars of the receiver pass (same stream: ordered)
  if (num_edges > 0) {
    cutoff_backward_kernel<T><<<thread_blocks(num_edges), kThreads, 0, stream>>>(num_edges, p, scalars, grad_cutoff);
  }
  if (n > 0) {
    senders_backward_kernel<T><<<thread_blocks(n * p.H), kThreads, 0, stream>>>(graph, n, p, g_dx, scalars,
                                                                                 grad_x_key, grad_x_value, grad_ev_key);
  }
  if (num_filters > 0) {
    filters_backward_kernel<T><<<thread_blocks(num_filters * p.H), kThreads, 0, stream>>>(
        graph, num_filters, p, scalars, grad_x_filter, grad_ev_filter);
  }
  return cudaGetLastError();
}

#define VISKRATES_INSTANTIATE(T)                                                                                   \
  template cudaError_t launch_euclidean_attention<T>(const eattn::Graph&, int64_t, const eattn::Params<T>&, T*, T*, \
                                                     cudaStream_t);                                                \
  template cudaError_t launch_euclidean_attention_backward<T>(                                                     \
      const eattn::Graph&, int64_t, int64_t, int64_t, const eattn::Params<T>&, const T*, const T*, T*, T*, T*, T*, \
      T*, T*, T*, T*, T*, const eattn::EdgeScalars<T>&, cudaStream_t);
VISKRATES_INSTANTIATE(float)
VISKRATES_INSTANTIATE(double)
#undef VISKRATES_INSTANTIATE

}  // namespace cuda
}  // namespace viskrates
