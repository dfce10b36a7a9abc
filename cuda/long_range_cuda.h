// Launchers of the viskrates::long_range_energy CUDA kernels (cuda/long_range.cu). Raw pointers and streams
// only, so that nvcc compiles the kernels without torch headers; the tensor glue is in cuda/long_range_cuda.cpp.
// Each launcher returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "long_range_kernel.h"

namespace viskrates {
namespace cuda {

// coulomb_energies [N], dispersion_energies [N]; one thread per receiver.
template <typename T>
cudaError_t launch_long_range_energy(const lr::Params<T>& p, int64_t num_atoms, T* coulomb_energies,
                                     T* dispersion_energies, cudaStream_t stream);

// The outputs of g (gradients of positions, charges, polarisabilities, C6 and, when g.box_partials is non-null,
// each atom's share of the box gradient) from its upstream gradients; one thread per receiver (each output
// has one writer: deterministic).
template <typename T>
cudaError_t launch_long_range_energy_backward(const lr::Params<T>& p, const lr::Gradients<T>& g, int64_t num_atoms,
                                              cudaStream_t stream);

}  // namespace cuda
}  // namespace viskrates
