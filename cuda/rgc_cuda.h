// Launchers of the viskrates::rgc_geometry CUDA kernels (cuda/rgc.cu). Raw pointers and streams only, so that
// nvcc compiles the kernels without torch headers; the tensor glue is in cuda/rgc_cuda.cpp. Each launcher
// returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "rgc_kernel.h"

namespace viskrates {
namespace cuda {

// harmonics [E, L], cutoff_weights [E], radial [E, K]; one thread per edge.
template <typename T>
cudaError_t launch_rgc_geometry(const rgc::Geometry<T>& p, int64_t num_edges, T* harmonics, T* cutoff_weights,
                                T* radial, cudaStream_t stream);

// grad_edge_vectors [E, 3] from the upstream gradients (each may be nullptr); one thread per edge. With
// grad_means / grad_betas [K] non-null (and grho non-null), also the basis gradients: one warp per basis
// function, summing the edges in a fixed order (deterministic).
template <typename T>
cudaError_t launch_rgc_geometry_backward(const rgc::Geometry<T>& p, int64_t num_edges, const T* gy, const T* gphi,
                                         const T* grho, T* grad_edge_vectors, T* grad_means, T* grad_betas,
                                         cudaStream_t stream);

}  // namespace cuda
}  // namespace viskrates
