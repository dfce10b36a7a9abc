// Launchers of the viskrates::neighbor_list CUDA kernels (cuda/neighbor_list.cu). Raw pointers and
// streams only, so that nvcc compiles the kernels without torch headers; the tensor glue is in
// cuda/neighbor_list_cuda.cpp. Each launcher returns the launch status of the CUDA runtime that ran it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "neighbor_list_kernel.h"

namespace viskrates {
namespace cuda {

// cell[i] = global cell of atom i; coords [N, 3] its cell within its grid; frac [N, 3] (periodic only)
// its unwrapped fractional coordinates. grids is a device array.
template <typename scalar_t>
cudaError_t launch_assign_cells(const scalar_t* positions, const int* mol, const nl::Grid* grids, bool periodic,
                                int64_t n, double* frac, int* coords, int64_t* cell, cudaStream_t stream);

// counts[i] = number of edges of receiver i.
template <typename scalar_t>
cudaError_t launch_count_edges(const nl::SearchData<scalar_t>& data, int64_t n, int64_t* counts, cudaStream_t stream);

// Writes the edges of receiver i into row_ptr[i]:row_ptr[i+1] in cell order (not yet canonical).
template <typename scalar_t>
cudaError_t launch_fill_edges(const nl::SearchData<scalar_t>& data, int64_t n, const int64_t* row_ptr,
                              int64_t* receivers, int64_t* senders, scalar_t* shifts, scalar_t* vectors,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace viskrates
