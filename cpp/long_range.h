// Host side of viskrates::long_range_energy shared by the CPU launcher (cpp/long_range.cpp), the CUDA glue
// (cuda/long_range_cuda.cpp) and the autograd wrapper (cpp/long_range_autograd.cpp): input checks and kernel
// parameters.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "long_range_kernel.h"

namespace viskrates {

// Checked, contiguous inputs of long_range_energy and the derived constants of the kernel.
struct LongRangeInputs {
  at::Tensor positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6;  // box undefined: open
  int64_t num_atoms = 0, num_edges = 0;
  double cutoff = 0.0, coulomb_constant = 0.0, sigma = 0.0, coulomb_switch_on = 0.0, dispersion_switch_on = 0.0;
  double dispersion_scale = 0.0, coulomb_shift = 0.0, coulomb_slope = 0.0, vdw_radius_factor = 0.0;
  int coulomb_kernel = lr::kShiftedForce;
};

// Checks shapes, dtypes, devices and the scalar arguments (c10::ValueError naming the problem).
LongRangeInputs check_long_range(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                 const at::Tensor& row_ptr, const at::Tensor& senders, const at::Tensor& shifts,
                                 const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                 double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                 double dispersion_switch_on, double dispersion_scale,
                                 c10::string_view coulomb_kernel);

template <typename T>
lr::Params<T> long_range_params(const LongRangeInputs& in) {
  return {in.positions.data_ptr<T>(),
          in.box.defined() ? in.box.data_ptr<T>() : nullptr,
          in.row_ptr.data_ptr<int64_t>(),
          in.senders.data_ptr<int64_t>(),
          in.shifts.data_ptr<T>(),
          in.charges.data_ptr<T>(),
          in.polarizabilities.data_ptr<T>(),
          in.c6.data_ptr<T>(),
          static_cast<T>(in.cutoff),
          static_cast<T>(in.coulomb_constant),
          static_cast<T>(1.0 / in.sigma),
          static_cast<T>(in.coulomb_switch_on),
          static_cast<T>(in.coulomb_shift),
          static_cast<T>(in.coulomb_slope),
          static_cast<T>(in.dispersion_switch_on),
          static_cast<T>(in.dispersion_scale),
          static_cast<T>(in.vdw_radius_factor),
          in.coulomb_kernel};
}

inline const char* long_range_op_name() { return "viskrates::long_range_energy"; }

// (coulomb_energies [N], dispersion_energies [N])
using LongRangeOutputs = std::tuple<at::Tensor, at::Tensor>;
// (grad_positions [N, 3], grad_box [3, 3] (undefined unless asked), grad_charges [N],
//  grad_polarizabilities [N], grad_c6 [N])
using LongRangeGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Checked, contiguous upstream gradients of long_range_energy_backward and its outputs, allocated: what the
// CPU and CUDA launchers hand to the kernel body (long_range_gradients) and return (long_range_grads).
struct LongRangeBackward {
  at::Tensor grad_coulomb, grad_dispersion;                 // [N] upstream
  at::Tensor grad_positions;                                // [N, 3]
  at::Tensor grad_charges, grad_polarizabilities, grad_c6;  // [N]
  at::Tensor box_partials;  // [N, 3, 3] each atom's share of dL/dbox; undefined unless box_grad with a box
};

// Checks the upstream gradients (c10::ValueError unless [N] with the dtype and device of positions) and
// allocates the outputs; every row of them is written by the kernel body.
LongRangeBackward long_range_backward_buffers(const LongRangeInputs& in, const at::Tensor& grad_coulomb,
                                              const at::Tensor& grad_dispersion, bool box_grad);

template <typename T>
lr::Gradients<T> long_range_gradients(const LongRangeBackward& b) {
  return {b.grad_coulomb.data_ptr<T>(),
          b.grad_dispersion.data_ptr<T>(),
          b.grad_positions.data_ptr<T>(),
          b.grad_charges.data_ptr<T>(),
          b.grad_polarizabilities.data_ptr<T>(),
          b.grad_c6.data_ptr<T>(),
          b.box_partials.defined() ? b.box_partials.data_ptr<T>() : nullptr};
}

// The op's result; dL/dbox is the sum of the per-atom shares in atom order (one reduction, deterministic).
LongRangeGrads long_range_grads(const LongRangeBackward& b);

}  // namespace viskrates
