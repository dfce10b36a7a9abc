// CUDA launchers of viskrates::rgc_geometry, running the kernel body of cpp/rgc_kernel.h (the functions the CPU
// launcher runs): one thread per edge; the basis-parameter gradients are reduced by one warp per basis
// function with a fixed lane-to-edge assignment and shuffle order, so results are deterministic.
#include <cuda_runtime.h>

#include "launch_config.h"
#include "rgc_cuda.h"

namespace viskrates {
namespace cuda {
namespace {

template <typename T>
__global__ void rgc_geometry_kernel(const rgc::Geometry<T> p, int64_t num_edges, T* harmonics, T* cutoff_weights,
                                    T* radial) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= num_edges) return;
  rgc::geometry_edge(p, e, harmonics, cutoff_weights, radial);
}

template <typename T>
__global__ void rgc_geometry_backward_kernel(const rgc::Geometry<T> p, int64_t num_edges, const T* gy, const T* gphi,
                                             const T* grho, T* grad_edge_vectors) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= num_edges) return;
  rgc::geometry_edge_backward(p, e, gy, gphi, grho, grad_edge_vectors);
}

template <typename T>
__global__ void rgc_basis_backward_kernel(const rgc::Geometry<T> p, int64_t num_edges, const T* grho, T* grad_means,
                                          T* grad_betas) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * (kThreads / kWarp) + threadIdx.x / kWarp;
  if (k >= p.K) return;  // uniform per warp: the shuffles below see all 32 lanes
  const int lane = threadIdx.x % kWarp;
  T gm = T(0), gb = T(0);
  for (int64_t e = lane; e < num_edges; e += kWarp) rgc::geometry_edge_basis_grad(p, e, k, grho, &gm, &gb);
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    gm += __shfl_xor_sync(0xffffffffu, gm, offset);
    gb += __shfl_xor_sync(0xffffffffu, gb, offset);
  }
  if (lane == 0) {
    grad_means[k] = gm;
    grad_betas[k] = gb;
  }
}

}  // namespace

template <typename T>
cudaError_t launch_rgc_geometry(const rgc::Geometry<T>& p, int64_t num_edges, T* harmonics, T* cutoff_weights,
                                T* radial, cudaStream_t stream) {
  rgc_geometry_kernel<T><<<thread_blocks(num_edges), kThreads, 0, stream>>>(p, num_edges, harmonics, cutoff_weights,
                                                                            radial);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rgc_geometry_backward(const rgc::Geometry<T>& p, int64_t num_edges, const T* gy, const T* gphi,
                                         const T* grho, T* grad_edge_vectors, T* grad_means, T* grad_betas,
                                         cudaStream_t stream) {
  rgc_geometry_backward_kernel<T><<<thread_blocks(num_edges), kThreads, 0, stream>>>(p, num_edges, gy, gphi, grho,
                                                                                     grad_edge_vectors);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess || grad_means == nullptr || grad_betas == nullptr || grho == nullptr) return status;
  rgc_basis_backward_kernel<T><<<thread_blocks(p.K * kWarp), kThreads, 0, stream>>>(p, num_edges, grho, grad_means,
                                                                                    grad_betas);
  return cudaGetLastError();
}

#define VISKRATES_INSTANTIATE_RGC(T)                                                                               \
  template cudaError_t launch_rgc_geometry<T>(const rgc::Geometry<T>&, int64_t, T*, T*, T*, cudaStream_t);         \
  template cudaError_t launch_rgc_geometry_backward<T>(const rgc::Geometry<T>&, int64_t, const T*, const T*,       \
                                                       const T*, T*, T*, T*, cudaStream_t);
VISKRATES_INSTANTIATE_RGC(float)
VISKRATES_INSTANTIATE_RGC(double)
#undef VISKRATES_INSTANTIATE_RGC

}  // namespace cuda
}  // namespace viskrates
