// viskrates::long_range_energy (SO3LR's Coulomb and vdW-QDO pair energies per atom): schema, input checks and
// the CPU launcher (at::parallel_for over receivers; each output element has one writer and every sum runs
// over one receiver's edges in a fixed order, so results do not depend on the number of threads). Kernel body:
// cpp/long_range_kernel.h. Contract and pure-PyTorch reference: python/viskrates/ops.py
// (long_range_energy_reference).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "long_range.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "simd_math.h"

namespace viskrates {

LongRangeInputs check_long_range(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                 const at::Tensor& row_ptr, const at::Tensor& senders, const at::Tensor& shifts,
                                 const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                 double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                 double dispersion_switch_on, double dispersion_scale,
                                 c10::string_view coulomb_kernel) {
  const char* op = long_range_op_name();
  TORCH_CHECK_VALUE(positions.is_floating_point() && positions.dim() == 2 && positions.size(1) == 3, op,
                    ": positions must be a floating-point [N, 3] tensor, got ", positions.scalar_type(), " of shape ",
                    positions.sizes());
  LongRangeInputs in;
  in.num_atoms = positions.size(0);
  in.num_edges = senders.dim() == 1 ? senders.size(0) : -1;
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.scalar_type() == at::kLong && row_ptr.size(0) == in.num_atoms + 1,
                    op, ": row_ptr must be an int64 [N+1] tensor with N = ", in.num_atoms, " (positions), got ",
                    row_ptr.scalar_type(), " of shape ", row_ptr.sizes());
  TORCH_CHECK_VALUE(senders.dim() == 1 && senders.scalar_type() == at::kLong, op,
                    ": senders must be an int64 [E] tensor, got ", senders.scalar_type(), " of shape ",
                    senders.sizes());
  const at::Tensor* index[] = {&row_ptr, &senders};
  const char* index_names[] = {"row_ptr", "senders"};
  for (int k = 0; k < 2; ++k) {
    TORCH_CHECK_VALUE(index[k]->device() == positions.device(), op, ": ", index_names[k], " is on ",
                      index[k]->device(), " but positions on ", positions.device());
  }
  const bool periodic = box.has_value() && box->defined();
  if (periodic) {
    TORCH_CHECK_VALUE(box->dim() == 2 && box->size(0) == 3 && box->size(1) == 3, op,
                      ": box must have shape [3, 3] (rows are box vectors), got ", box->sizes());
    TORCH_CHECK_VALUE(shifts.dim() == 2 && shifts.size(0) == in.num_edges && shifts.size(1) == 3, op,
                      ": shifts must be an [E, 3] tensor with E = ", in.num_edges, " (senders), got shape ",
                      shifts.sizes());
  }
  const at::Tensor* floats[] = {&charges, &polarizabilities, &c6, periodic ? &*box : &positions,
                                periodic ? &shifts : &positions};
  const char* float_names[] = {"charges", "polarizabilities", "c6", "box", "shifts"};
  for (int k = 0; k < 5; ++k) {
    const at::Tensor& t = *floats[k];
    TORCH_CHECK_VALUE(k >= 3 || (t.dim() == 1 && t.size(0) == in.num_atoms), op, ": ", float_names[k],
                      " must be an [N] tensor with N = ", in.num_atoms, ", got shape ", t.sizes());
    TORCH_CHECK_VALUE(t.scalar_type() == positions.scalar_type() && t.device() == positions.device(), op, ": ",
                      float_names[k], " must have the dtype and device of positions (", positions.scalar_type(), ", ",
                      positions.device(), "), got ", t.scalar_type(), ", ", t.device());
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
  TORCH_CHECK_VALUE(coulomb_kernel == "shifted_force" || coulomb_kernel == "switched_erf", op,
                    ": coulomb_kernel must be 'shifted_force' or 'switched_erf', got '", coulomb_kernel, "'");
  in.coulomb_kernel = coulomb_kernel == "switched_erf" ? lr::kSwitchedErf : lr::kShiftedForce;
  in.positions = positions.contiguous();
  if (periodic) in.box = box->contiguous();
  in.row_ptr = row_ptr.contiguous();
  in.senders = senders.contiguous();
  // read only with a box; without one the kernel never touches them
  in.shifts = periodic ? shifts.contiguous() : shifts;
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

namespace {

at::Tensor check_long_range_grad(const char* name, const at::Tensor& grad, const LongRangeInputs& in) {
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == in.num_atoms, "viskrates::long_range_energy_backward: ", name,
                    " has shape ", grad.sizes(), ", expected [", in.num_atoms, "]");
  TORCH_CHECK_VALUE(grad.scalar_type() == in.positions.scalar_type() && grad.device() == in.positions.device(),
                    "viskrates::long_range_energy_backward: ", name, " must have the dtype and device of positions");
  return grad.contiguous();
}

}  // namespace

LongRangeBackward long_range_backward_buffers(const LongRangeInputs& in, const at::Tensor& grad_coulomb,
                                              const at::Tensor& grad_dispersion, bool box_grad) {
  const auto options = in.positions.options();
  LongRangeBackward b;
  b.grad_coulomb = check_long_range_grad("grad_coulomb", grad_coulomb, in);
  b.grad_dispersion = check_long_range_grad("grad_dispersion", grad_dispersion, in);
  b.grad_positions = at::empty({in.num_atoms, 3}, options);
  b.grad_charges = at::empty({in.num_atoms}, options);
  b.grad_polarizabilities = at::empty({in.num_atoms}, options);
  b.grad_c6 = at::empty({in.num_atoms}, options);
  if (box_grad && in.box.defined()) b.box_partials = at::empty({in.num_atoms, 3, 3}, options);
  return b;
}

LongRangeGrads long_range_grads(const LongRangeBackward& b) {
  const at::Tensor grad_box = b.box_partials.defined() ? b.box_partials.sum(0) : at::Tensor();
  return {b.grad_positions, grad_box, b.grad_charges, b.grad_polarizabilities, b.grad_c6};
}

namespace {

// Receivers per task: each has hundreds of long-range edges.
constexpr int64_t kGrain = 8;
// Edges per block of the vectorised loops: the in-range edges of a block are gathered into arrays on the stack,
// then one `omp simd` loop evaluates their pair terms (erf, exp and pow from glibc's libmvec, see simd_math.h).
constexpr int kBlock = 64;

// Forward of receivers begin .. end-1 (lr::long_range_atom with its edge loop split into gather and pair blocks).
template <typename T>
VISKRATES_CPU_INLINE void forward_atoms(const lr::Params<T>& p, T* coulomb_energies, T* dispersion_energies,
                                        int64_t begin, int64_t end) {
  T d[kBlock], q[kBlock], alpha[kBlock], c6[kBlock];
  for (int64_t i = begin; i < end; ++i) {
    T coulomb = T(0), dispersion = T(0);
    const T alpha_i = p.polarizabilities[i], c6_i = p.c6[i];
    for (int64_t first = p.row_ptr[i]; first < p.row_ptr[i + 1]; first += kBlock) {
      const int64_t last = std::min<int64_t>(first + kBlock, p.row_ptr[i + 1]);
      int n = 0;
      for (int64_t e = first; e < last; ++e) {
        const int64_t j = p.senders[e];
        if (j <= i) continue;
        T v[3];
        const T dist = lr::edge_vector(p, i, j, e, v);
        if (!(dist < p.cutoff)) continue;
        d[n] = dist;
        q[n] = p.charges[j];
        alpha[n] = p.polarizabilities[j];
        c6[n] = p.c6[j];
        ++n;
      }
#pragma omp simd reduction(+ : coulomb, dispersion)
      for (int t = 0; t < n; ++t) {
        T k;
        dispersion += lr::pair_energy(p, d[t], alpha_i, alpha[t], c6_i, c6[t], &k);
        coulomb += q[t] * k;
      }
    }
    coulomb_energies[i] = p.coulomb_constant * p.charges[i] * coulomb;
    dispersion_energies[i] = dispersion;
  }
}

// Backward of receivers begin .. end-1 (lr::long_range_atom_backward, blocked as forward_atoms).
template <typename T>
VISKRATES_CPU_INLINE void backward_atoms(const lr::Params<T>& p, const lr::Gradients<T>& g, int64_t begin,
                                         int64_t end) {
  T d[kBlock], q[kBlock], alpha[kBlock], c6[kBlock], w_coulomb[kBlock], w_dispersion[kBlock];
  T vx[kBlock], vy[kBlock], vz[kBlock], gd_over_d[kBlock];
  int64_t owned[kBlock];  // the edge, for the pairs receiver i owns (j > i), else -1
  for (int64_t i = begin; i < end; ++i) {
    T gq = T(0), galpha = T(0), gc6 = T(0), grx = T(0), gry = T(0), grz = T(0);
    T gbox[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
    const T q_i = p.charges[i], alpha_i = p.polarizabilities[i], c6_i = p.c6[i];
    for (int64_t first = p.row_ptr[i]; first < p.row_ptr[i + 1]; first += kBlock) {
      const int64_t last = std::min<int64_t>(first + kBlock, p.row_ptr[i + 1]);
      int n = 0;
      for (int64_t e = first; e < last; ++e) {
        const int64_t j = p.senders[e];
        if (j == i) continue;
        T v[3];
        const T dist = lr::edge_vector(p, i, j, e, v);
        if (!(dist < p.cutoff)) continue;
        const int64_t owner = j > i ? i : j;
        d[n] = dist;
        q[n] = p.charges[j];
        alpha[n] = p.polarizabilities[j];
        c6[n] = p.c6[j];
        w_coulomb[n] = g.coulomb[owner] * p.coulomb_constant;
        w_dispersion[n] = g.dispersion[owner];
        vx[n] = v[0];
        vy[n] = v[1];
        vz[n] = v[2];
        owned[n] = j > i ? e : -1;
        ++n;
      }
#pragma omp simd reduction(+ : gq, galpha, gc6, grx, gry, grz)
      for (int t = 0; t < n; ++t) {
        T gq_e, galpha_e, gc6_e, gd;
        lr::pair_backward(p, d[t], q_i, q[t], alpha_i, alpha[t], c6_i, c6[t], w_coulomb[t], w_dispersion[t], &gq_e,
                          &galpha_e, &gc6_e, &gd);
        gq += gq_e;
        galpha += galpha_e;
        gc6 += gc6_e;
        // d depends on R_i through v = R_j − R_i + shift·box
        grx -= gd * vx[t];
        gry -= gd * vy[t];
        grz -= gd * vz[t];
        gd_over_d[t] = gd;
      }
      if (g.box_partials != nullptr) {
        for (int t = 0; t < n; ++t) {
          if (owned[t] < 0) continue;
          const T* s = p.shifts + 3 * owned[t];
          const T v[3] = {vx[t], vy[t], vz[t]};
          for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) gbox[3 * a + b] += s[a] * gd_over_d[t] * v[b];
        }
      }
    }
    g.positions[3 * i] = grx;
    g.positions[3 * i + 1] = gry;
    g.positions[3 * i + 2] = grz;
    g.charges[i] = gq;
    g.polarizabilities[i] = galpha;
    g.c6[i] = gc6;
    if (g.box_partials != nullptr) {
      for (int a = 0; a < 9; ++a) g.box_partials[9 * i + a] = gbox[a];
    }
  }
}

// One compiled copy per instruction set, chosen at load time (simd_math.h): on AVX-512 the pair loops run 16 floats
// (8 doubles) wide.
VISKRATES_CPU_CLONES void forward_range(const lr::Params<float>& p, float* ec, float* ed, int64_t begin, int64_t end) {
  forward_atoms(p, ec, ed, begin, end);
}
VISKRATES_CPU_CLONES void forward_range(const lr::Params<double>& p, double* ec, double* ed, int64_t begin,
                                        int64_t end) {
  forward_atoms(p, ec, ed, begin, end);
}
VISKRATES_CPU_CLONES void backward_range(const lr::Params<float>& p, const lr::Gradients<float>& g, int64_t begin,
                                         int64_t end) {
  backward_atoms(p, g, begin, end);
}
VISKRATES_CPU_CLONES void backward_range(const lr::Params<double>& p, const lr::Gradients<double>& g, int64_t begin,
                                         int64_t end) {
  backward_atoms(p, g, begin, end);
}

LongRangeOutputs long_range_cpu(const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                const at::Tensor& row_ptr, const at::Tensor& senders, const at::Tensor& shifts,
                                const at::Tensor& charges, const at::Tensor& polarizabilities, const at::Tensor& c6,
                                double cutoff, double coulomb_constant, double sigma, double coulomb_switch_on,
                                double dispersion_switch_on, double dispersion_scale,
                                c10::string_view coulomb_kernel) {
  const LongRangeInputs in = check_long_range(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6,
                                              cutoff, coulomb_constant, sigma, coulomb_switch_on,
                                              dispersion_switch_on, dispersion_scale, coulomb_kernel);
  at::Tensor coulomb = at::empty({in.num_atoms}, in.positions.options());
  at::Tensor dispersion = at::empty({in.num_atoms}, in.positions.options());
  AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "long_range_energy_cpu", [&] {
    const lr::Params<scalar_t> p = long_range_params<scalar_t>(in);
    scalar_t* ec = coulomb.data_ptr<scalar_t>();
    scalar_t* ed = dispersion.data_ptr<scalar_t>();
    at::parallel_for(0, in.num_atoms, kGrain,
                     [&](int64_t begin, int64_t end) { forward_range(p, ec, ed, begin, end); });
  });
  return {coulomb, dispersion};
}

LongRangeGrads long_range_backward_cpu(const at::Tensor& grad_coulomb, const at::Tensor& grad_dispersion,
                                       const at::Tensor& positions, const std::optional<at::Tensor>& box,
                                       const at::Tensor& row_ptr, const at::Tensor& senders, const at::Tensor& shifts,
                                       const at::Tensor& charges, const at::Tensor& polarizabilities,
                                       const at::Tensor& c6, double cutoff, double coulomb_constant, double sigma,
                                       double coulomb_switch_on, double dispersion_switch_on, double dispersion_scale,
                                       c10::string_view coulomb_kernel, bool box_grad) {
  const LongRangeInputs in = check_long_range(positions, box, row_ptr, senders, shifts, charges, polarizabilities, c6,
                                              cutoff, coulomb_constant, sigma, coulomb_switch_on,
                                              dispersion_switch_on, dispersion_scale, coulomb_kernel);
  const LongRangeBackward b = long_range_backward_buffers(in, grad_coulomb, grad_dispersion, box_grad);
  AT_DISPATCH_FLOATING_TYPES(in.positions.scalar_type(), "long_range_energy_backward_cpu", [&] {
    const lr::Params<scalar_t> p = long_range_params<scalar_t>(in);
    const lr::Gradients<scalar_t> g = long_range_gradients<scalar_t>(b);
    at::parallel_for(0, in.num_atoms, kGrain,
                     [&](int64_t begin, int64_t end) { backward_range(p, g, begin, end); });
  });
  return long_range_grads(b);
}

}  // namespace

// Schemas (a fragment of the viskrates library defined in cpp/ops.cpp). long_range_energy_backward is the
// gradient the autograd wrapper (cpp/long_range_autograd.cpp) calls; it is not differentiable.
TORCH_LIBRARY_FRAGMENT(viskrates, m) {
  m.def(
      "long_range_energy(Tensor positions, Tensor? box, Tensor row_ptr, Tensor senders, Tensor shifts, Tensor charges, "
      "Tensor polarizabilities, Tensor c6, float cutoff, float coulomb_constant, float sigma, "
      "float coulomb_switch_on, float dispersion_switch_on, float dispersion_scale, "
      "str coulomb_kernel=\"shifted_force\") -> (Tensor coulomb_energies, Tensor dispersion_energies)");
  m.def(
      "long_range_energy_backward(Tensor grad_coulomb, Tensor grad_dispersion, Tensor positions, Tensor? box, "
      "Tensor row_ptr, Tensor senders, Tensor shifts, Tensor charges, Tensor polarizabilities, Tensor c6, "
      "float cutoff, float coulomb_constant, float sigma, float coulomb_switch_on, float dispersion_switch_on, "
      "float dispersion_scale, str coulomb_kernel, bool box_grad) -> (Tensor grad_positions, Tensor grad_box, "
      "Tensor grad_charges, "
      "Tensor grad_polarizabilities, Tensor grad_c6)");
}

TORCH_LIBRARY_IMPL(viskrates, CPU, m) {
  m.impl("long_range_energy", &long_range_cpu);
  m.impl("long_range_energy_backward", &long_range_backward_cpu);
}

}  // namespace viskrates
