// Tensor glue of the viskrates::long_range_energy CUDA op (compiled by the C++ compiler): input checks from
// cpp/long_range.cpp, kernels from cuda/long_range.cu.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "long_range.h"
#include "long_range_cuda.h"

namespace viskrates {
namespace {

LongRangeOutputs long_range_cuda(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                 const at::Tensor& row_ptr, const at::Tensor& senders, const at::Tensor& shifts,
                                 const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                 double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                 double dispersion_switch_on, double dispersion_scale,
                                 c10::string_view coulomb_kernel) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const LongRangeInputs in = check_long_range(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6,
                                              cutoff, coulomb_constant, sigma, coulomb_switch_on,
                                              dispersion_switch_on, dispersion_scale, coulomb_kernel);
  at::Tensor coulomb = at::empty({in.num_atoms}, in.positions.options());
  at::Tensor dispersion = at::empty({in.num_atoms}, in.positions.options());
  if (in.num_atoms == 0) return {coulomb, dispersion};
  AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "long_range_energy_cuda", [&] {
    const cudaStream_t stream = stream_of(positions);
    check_launch(cuda::launch_long_range_energy<scalar_t>(long_range_params<scalar_t>(in), in.num_atoms,
                                                          coulomb.data_ptr<scalar_t>(),
                                                          dispersion.data_ptr<scalar_t>(), stream),
                 long_range_op_name());
  });
  return {coulomb, dispersion};
}

LongRangeGrads long_range_backward_cuda(const at::Tensor& grad_coulomb, const at::Tensor& grad_dispersion,
                                        const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                        const at::Tensor& row_ptr, const at::Tensor& senders,
                                        const at::Tensor& shifts, const at::Tensor& charges,
                                        const at::Tensor& polarizabilities, const at::Tensor& c6, double cutoff,
                                        double coulomb_constant, double sigma, double coulomb_switch_on,
                                        double dispersion_switch_on, double dispersion_scale,
                                        c10::string_view coulomb_kernel, bool box_grad) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const LongRangeInputs in = check_long_range(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6,
                                              cutoff, coulomb_constant, sigma, coulomb_switch_on,
                                              dispersion_switch_on, dispersion_scale, coulomb_kernel);
  const LongRangeBackward b = long_range_backward_buffers(in, grad_coulomb, grad_dispersion, box_grad);
  if (in.num_atoms > 0) {
    AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "long_range_energy_backward_cuda", [&] {
      const cudaStream_t stream = stream_of(positions);
      check_launch(cuda::launch_long_range_energy_backward<scalar_t>(long_range_params<scalar_t>(in),
                                                                     long_range_gradients<scalar_t>(b), in.num_atoms,
                                                                     stream),
                   "viskrates::long_range_energy_backward");
    });
  }
  return long_range_grads(b);
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CUDA, m) {
  m.impl("long_range_energy", &long_range_cuda);
  m.impl("long_range_energy_backward", &long_range_backward_cuda);
}

}  // namespace viskrates
