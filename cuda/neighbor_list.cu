// CUDA launcher of viskrates::neighbor_list: one thread per atom, running the kernel bodies of
// cpp/neighbor_list_kernel.h (the same functions the CPU launcher runs).
#include <cuda_runtime.h>

#include "launch_config.h"
#include "neighbor_list_cuda.h"

namespace viskrates {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void assign_cells_kernel(const scalar_t* positions, const int* mol, const nl::Grid* grids, bool periodic,
                                    int64_t n, double* frac, int* coords, int64_t* cell) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  cell[i] = nl::assign_cell(positions + 3 * i, grids[mol != nullptr ? mol[i] : 0], periodic,
                            periodic ? frac + 3 * i : nullptr, coords + 3 * i);
}

template <typename scalar_t>
__global__ void count_edges_kernel(const nl::SearchData<scalar_t> data, int64_t n, int64_t* counts) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t count = 0;
  auto counter = [&](int64_t, const int*, const scalar_t*) { ++count; };
  nl::for_each_neighbor(data, i, counter);
  counts[i] = count;
}

template <typename scalar_t>
__global__ void fill_edges_kernel(const nl::SearchData<scalar_t> data, int64_t n, const int64_t* row_ptr,
                                  int64_t* receivers, int64_t* senders, scalar_t* shifts, scalar_t* vectors) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t e = row_ptr[i];
  auto write = [&](int64_t j, const int* shift, const scalar_t* vec) {
    receivers[e] = i;
    senders[e] = j;
    for (int k = 0; k < 3; ++k) {
      shifts[3 * e + k] = static_cast<scalar_t>(shift[k]);
      vectors[3 * e + k] = vec[k];
    }
    ++e;
  };
  nl::for_each_neighbor(data, i, write);
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_assign_cells(const scalar_t* positions, const int* mol, const nl::Grid* grids, bool periodic,
                                int64_t n, double* frac, int* coords, int64_t* cell, cudaStream_t stream) {
  assign_cells_kernel<scalar_t><<<thread_blocks(n), kThreads, 0, stream>>>(positions, mol, grids, periodic, n, frac,
                                                                        coords, cell);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_count_edges(const nl::SearchData<scalar_t>& data, int64_t n, int64_t* counts, cudaStream_t stream) {
  count_edges_kernel<scalar_t><<<thread_blocks(n), kThreads, 0, stream>>>(data, n, counts);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_fill_edges(const nl::SearchData<scalar_t>& data, int64_t n, const int64_t* row_ptr,
                              int64_t* receivers, int64_t* senders, scalar_t* shifts, scalar_t* vectors,
                              cudaStream_t stream) {
  fill_edges_kernel<scalar_t><<<thread_blocks(n), kThreads, 0, stream>>>(data, n, row_ptr, receivers, senders, shifts,
                                                                      vectors);
  return cudaGetLastError();
}

#define VISKRATES_INSTANTIATE(T)                                                                                   \
  template cudaError_t launch_assign_cells<T>(const T*, const int*, const nl::Grid*, bool, int64_t, double*, int*, \
                                              int64_t*, cudaStream_t);                                             \
  template cudaError_t launch_count_edges<T>(const nl::SearchData<T>&, int64_t, int64_t*, cudaStream_t);          \
  template cudaError_t launch_fill_edges<T>(const nl::SearchData<T>&, int64_t, const int64_t*, int64_t*, int64_t*, \
                                            T*, T*, cudaStream_t);
VISKRATES_INSTANTIATE(float)
VISKRATES_INSTANTIATE(double)
#undef VISKRATES_INSTANTIATE

}  // namespace cuda
}  // namespace viskrates
