// Shared by the tensor glue of the CUDA launchers (cuda/*_cuda.cpp, compiled by the C++ compiler).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace viskrates {

// Raises (c10::Error naming `what`) when a launcher returns an error. Launches are asynchronous: this catches
// what fails at launch (a configuration the GPU cannot run, no kernel image for its architecture), not faults
// inside a running kernel.
inline void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, what, ": kernel launch failed: ", cudaGetErrorString(status));
}

// torch's current stream on the device of t: kernels launched on it are ordered with torch's own work there.
inline cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

}  // namespace viskrates
