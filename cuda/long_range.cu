// CUDA launchers of viskrates::long_range_energy, running the kernel body of cpp/long_range_kernel.h (the
// functions the CPU launcher runs): one thread per receiver, which sums over its own edges in list order, so
// the results are deterministic and need no atomics.
#include <cuda_runtime.h>

#include "launch_config.h"
#include "long_range_cuda.h"

namespace viskrates {
namespace cuda {
namespace {

template <typename T>
__global__ void long_range_energy_kernel(const lr::Params<T> p, int64_t num_atoms, T* coulomb_energies,
                                         T* dispersion_energies) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_atoms) return;
  lr::long_range_atom(p, i, coulomb_energies, dispersion_energies);
}

template <typename T>
__global__ void long_range_energy_backward_kernel(const lr::Params<T> p, const lr::Gradients<T> g,
                                                  int64_t num_atoms) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_atoms) return;
  lr::long_range_atom_backward(p, g, i);
}

}  // namespace

template <typename T>
cudaError_t launch_long_range_energy(const lr::Params<T>& p, int64_t num_atoms, T* coulomb_energies,
                                     T* dispersion_energies, cudaStream_t stream) {
  long_range_energy_kernel<T><<<thread_blocks(num_atoms), kThreads, 0, stream>>>(p, num_atoms, coulomb_energies,
                                                                                 dispersion_energies);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_long_range_energy_backward(const lr::Params<T>& p, const lr::Gradients<T>& g, int64_t num_atoms,
                                              cudaStream_t stream) {
  long_range_energy_backward_kernel<T><<<thread_blocks(num_atoms), kThreads, 0, stream>>>(p, g, num_atoms);
  return cudaGetLastError();
}

#define VISKRATES_INSTANTIATE_LONG_RANGE(T)                                                                \
  template cudaError_t launch_long_range_energy<T>(const lr::Params<T>&, int64_t, T*, T*, cudaStream_t);   \
  template cudaError_t launch_long_range_energy_backward<T>(const lr::Params<T>&, const lr::Gradients<T>&, \
                                                            int64_t, cudaStream_t);
VISKRATES_INSTANTIATE_LONG_RANGE(float)
VISKRATES_INSTANTIATE_LONG_RANGE(double)
#undef VISKRATES_INSTANTIATE_LONG_RANGE

}  // namespace cuda
}  // namespace viskrates
