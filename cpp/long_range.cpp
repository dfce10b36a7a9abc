// viskrates::long_range_energy (SO3LR's Coulomb and vdW-QDO pair energies per atom): schema, input checks and
// the CPU launcher (at::parallel_for over receivers; each output element has one writer and every sum runs
// over one receiver's edges in list order, so results do not depend on the number of threads). Kernel body:
// cpp/long_range_kernel.h. Contract and pure-PyTorch reference: python/viskrates/ops.py
// (long_range_energy_reference).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "long_range.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

namespace viskrates {

LongRangeInputs check_long_range(const at::Tensor& edge_vectors, const at::Tensor& row_ptr, const at::Tensor& senders,
                                 const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                 double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                 double dispersion_switch_on, double dispersion_scale) {
  const char* op = long_range_op_name();
  TORCH_CHECK_VALUE(edge_vectors.is_floating_point() && edge_vectors.dim() == 2 && edge_vectors.size(1) == 3, op,
                    ": edge_vectors must be a floating-point [E, 3] tensor, got ", edge_vectors.scalar_type(),
                    " of shape ", edge_vectors.sizes());
  LongRangeInputs in;
  in.num_edges = edge_vectors.size(0);
  TORCH_CHECK_VALUE(charges.dim() == 1, op, ": charges must be an [N] tensor, got shape ", charges.sizes());
  in.num_atoms = charges.size(0);
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.scalar_type() == at::kLong && row_ptr.size(0) == in.num_atoms + 1,
                    op, ": row_ptr must be an int64 [N+1] tensor with N = ", in.num_atoms, " (charges), got ",
                    row_ptr.scalar_type(), " of shape ", row_ptr.sizes());
  TORCH_CHECK_VALUE(senders.dim() == 1 && senders.scalar_type() == at::kLong && senders.size(0) == in.num_edges, op,
                    ": senders must be an int64 [E] tensor with E = ", in.num_edges, ", got ", senders.scalar_type(),
                    " of shape ", senders.sizes());
  const at::Tensor* index[] = {&row_ptr, &senders};
  const char* index_names[] = {"row_ptr", "senders"};
  for (int k = 0; k < 2; ++k) {
    TORCH_CHECK_VALUE(index[k]->device() == edge_vectors.device(), op, ": ", index_names[k], " is on ",
                      index[k]->device(), " but edge_vectors on ", edge_vectors.device());
  }
  const at::Tensor* atoms[] = {&charges, &polarizabilities, &c6};
  const char* atom_names[] = {"charges", "polarizabilities", "c6"};
  for (int k = 0; k < 3; ++k) {
    const at::Tensor& t = *atoms[k];
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == in.num_atoms, op, ": ", atom_names[k],
                      " must be an [N] tensor with N = ", in.num_atoms, ", got shape ", t.sizes());
    TORCH_CHECK_VALUE(t.scalar_type() == edge_vectors.scalar_type() && t.device() == edge_vectors.device(), op, ": ",
                      atom_names[k], " must have the dtype and device of edge_vectors (", edge_vectors.scalar_type(),
                      ", ", edge_vectors.device(), "), got ", t.scalar_type(), ", ", t.device());
  }
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0.0, op, ": cutoff must be finite and > 0, got ", cutoff);
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma > 0.0, op, ": sigma must be finite and > 0, got ", sigma);
  TORCH_CHECK_VALUE(std::isfinite(coulomb_constant), op, ": coulomb_constant must be finite, got ", coulomb_constant);
  TORCH_CHECK_VALUE(coulomb_switch_on >= 0.0 && coulomb_switch_on < cutoff, op,
                    ": coulomb_switch_on must lie in [0, cutoff) = [0, ", cutoff, "), got ", coulomb_switch_on);
  TORCH_CHECK_VALUE(dispersion_switch_on >= 0.0 && dispersion_switch_on < cutoff, op,
                    ": dispersion_switch_on must lie in [0, cutoff) = [0, ", cutoff, "), got ", dispersion_switch_on);
  TORCH_CHECK_VALUE(std::isfinite(dispersion_scale) && dispersion_scale > 0.0, op,
                    ": dispersion_scale must be finite and > 0, got ", dispersion_scale);
  in.edge_vectors = edge_vectors.contiguous();
  in.row_ptr = row_ptr.contiguous();
  in.senders = senders.contiguous();
  in.charges = charges.contiguous();
  in.polarizabilities = polarizabilities.contiguous();
  in.c6 = c6.contiguous();
  in.cutoff = cutoff;
  in.coulomb_constant = coulomb_constant;
  in.sigma = sigma;
  in.coulomb_switch_on = coulomb_switch_on;
  in.dispersion_switch_on = dispersion_switch_on;
  in.dispersion_scale = dispersion_scale;
  // V(r_c) and V'(r_c) of V(r) = erf(r/σ)/r, in double as in viskrates/physics/electrostatics.py
  const double x = cutoff / sigma;
  in.coulomb_shift = std::erf(x) / cutoff;
  in.coulomb_slope = (2.0 * cutoff * std::exp(-x * x) / (std::sqrt(M_PI) * sigma) - std::erf(x)) / (cutoff * cutoff);
  in.vdw_radius_factor = std::pow(lr::kFineStructure, -4.0 / 21.0);
  return in;
}

at::Tensor check_long_range_grad(const char* name, const at::Tensor& grad, const LongRangeInputs& in) {
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == in.num_atoms, "viskrates::long_range_energy_backward: ", name,
                    " has shape ", grad.sizes(), ", expected [", in.num_atoms, "]");
  TORCH_CHECK_VALUE(grad.scalar_type() == in.edge_vectors.scalar_type() && grad.device() == in.edge_vectors.device(),
                    "viskrates::long_range_energy_backward: ", name, " must have the dtype and device of edge_vectors");
  return grad.contiguous();
}

namespace {

// Receivers per task: each has hundreds of long-range edges.
constexpr int64_t kGrain = 8;

LongRangeOutputs long_range_cpu(const at::Tensor& edge_vectors, const at::Tensor& row_ptr, const at::Tensor& senders,
                                const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                double dispersion_switch_on, double dispersion_scale) {
  const LongRangeInputs in = check_long_range(edge_vectors, row_ptr, senders, charges, polarizabilities, c6, cutoff,
                                              coulomb_constant, sigma, coulomb_switch_on, dispersion_switch_on,
                                              dispersion_scale);
  at::Tensor coulomb = at::empty({in.num_atoms}, in.edge_vectors.options());
  at::Tensor dispersion = at::empty({in.num_atoms}, in.edge_vectors.options());
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "long_range_energy_cpu", [&] {
    const lr::Params<scalar_t> p = long_range_params<scalar_t>(in);
    scalar_t* ec = coulomb.data_ptr<scalar_t>();
    scalar_t* ed = dispersion.data_ptr<scalar_t>();
    at::parallel_for(0, in.num_atoms, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) lr::long_range_atom(p, i, ec, ed);
    });
  });
  return {coulomb, dispersion};
}

LongRangeGrads long_range_backward_cpu(const at::Tensor& grad_coulomb, const at::Tensor& grad_dispersion,
                                       const at::Tensor& edge_vectors, const at::Tensor& row_ptr,
                                       const at::Tensor& senders, const at::Tensor& charges,
                                       const at::Tensor& polarizabilities, const at::Tensor& c6, double cutoff,
                                       double coulomb_constant, double sigma, double coulomb_switch_on,
                                       double dispersion_switch_on, double dispersion_scale) {
  const LongRangeInputs in = check_long_range(edge_vectors, row_ptr, senders, charges, polarizabilities, c6, cutoff,
                                              coulomb_constant, sigma, coulomb_switch_on, dispersion_switch_on,
                                              dispersion_scale);
  const at::Tensor gc = check_long_range_grad("grad_coulomb", grad_coulomb, in);
  const at::Tensor gd = check_long_range_grad("grad_dispersion", grad_dispersion, in);
  at::Tensor grad_edge_vectors = at::empty({in.num_edges, 3}, in.edge_vectors.options());
  at::Tensor grad_charges = at::empty({in.num_atoms}, in.edge_vectors.options());
  at::Tensor grad_polarizabilities = at::empty({in.num_atoms}, in.edge_vectors.options());
  at::Tensor grad_c6 = at::empty({in.num_atoms}, in.edge_vectors.options());
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "long_range_energy_backward_cpu", [&] {
    const lr::Params<scalar_t> p = long_range_params<scalar_t>(in);
    const scalar_t* gcp = gc.data_ptr<scalar_t>();
    const scalar_t* gdp = gd.data_ptr<scalar_t>();
    scalar_t* gv = grad_edge_vectors.data_ptr<scalar_t>();
    scalar_t* gq = grad_charges.data_ptr<scalar_t>();
    scalar_t* ga = grad_polarizabilities.data_ptr<scalar_t>();
    scalar_t* g6 = grad_c6.data_ptr<scalar_t>();
    at::parallel_for(0, in.num_atoms, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) lr::long_range_atom_backward(p, i, gcp, gdp, gv, gq, ga, g6);
    });
  });
  return {grad_edge_vectors, grad_charges, grad_polarizabilities, grad_c6};
}

}  // namespace

// Schemas (a fragment of the viskrates library defined in cpp/ops.cpp). long_range_energy_backward is the
// gradient the autograd wrapper (cpp/long_range_autograd.cpp) calls; it is not differentiable.
TORCH_LIBRARY_FRAGMENT(viskrates, m) {
  m.def(
      "long_range_energy(Tensor edge_vectors, Tensor row_ptr, Tensor senders, Tensor charges, "
      "Tensor polarizabilities, Tensor c6, float cutoff, float coulomb_constant, float sigma, "
      "float coulomb_switch_on, float dispersion_switch_on, float dispersion_scale) -> "
      "(Tensor coulomb_energies, Tensor dispersion_energies)");
  m.def(
      "long_range_energy_backward(Tensor grad_coulomb, Tensor grad_dispersion, Tensor edge_vectors, Tensor row_ptr, "
      "Tensor senders, Tensor charges, Tensor polarizabilities, Tensor c6, float cutoff, float coulomb_constant, "
      "float sigma, float coulomb_switch_on, float dispersion_switch_on, float dispersion_scale) -> "
      "(Tensor grad_edge_vectors, Tensor grad_charges, Tensor grad_polarizabilities, Tensor grad_c6)");
}

TORCH_LIBRARY_IMPL(viskrates, CPU, m) {
  m.impl("long_range_energy", &long_range_cpu);
  m.impl("long_range_energy_backward", &long_range_backward_cpu);
}

}  // namespace viskrates
