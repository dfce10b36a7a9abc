// Kernel body of viskrates::long_range_energy, SO3LR's pairwise long-range energies on a receiver-sorted
// neighbour list (DESIGN.md §4: one kernel body, two launchers; CPU: cpp/long_range.cpp, CUDA:
// cuda/long_range.cu). Equations: Kabylda et al., J. Am. Chem. Soc. (2025), as specified in
// models/so3lr/FORMULAS.md §6 (switch), §8 (electrostatics) and §9 (dispersion); pure-PyTorch reference:
// viskrates.physics.Electrostatics and viskrates.physics.QDODispersion (viskrates.ops.long_range_energy_reference).
//
// For the pair (i, j), d = |v|, each unordered pair counted once (i < j), zero for d ≥ r_c:
//   Coulomb     e_ij = ke·q_i·q_j·[V(d) − V(r_c) − (1 − f(d))·V'(r_c)·(d − r_c)],  V(d) = erf(d/σ)/d,
//               f = S(d; x_on, r_c) (the shifted force blended in by the switch);
//   dispersion  e_ij = −Eh·[C6/(ρ⁶+p⁶) + C8/(ρ⁸+p⁸) + C10/(ρ¹⁰+p¹⁰)]·S(d; r_c − damping, r_c), ρ = d/bohr,
//               vdW-QDO (Khabibrakhmanov, Fedorov, Tkatchenko, J. Chem. Theory Comput. 19, 7895 (2023)) with
//               C6, C8, C10 and p from the per-atom polarisabilities α and C6 coefficients (FORMULAS §9).
// The pair energy is assigned to its first atom i (the official per-atom split, FORMULAS §10). Edge vectors
// v = R_j − R_i + shift·box are formed from the positions, as viskrates::neighbor_list forms them, so the two
// edges of a pair have exactly opposite vectors. The list must hold every pair in both directions (as
// neighbor_list returns it): the forward uses the edges i→j with j > i, the backward all edges, so that every
// atom's gradient is a sum over its own edges (one writer per output element, no atomics, deterministic).
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace viskrates {
namespace lr {

// Constants of the dispersion term, as in viskrates/physics/dispersion.py (CODATA 2014, ASE 3.29).
constexpr double kBohr = 0.5291772105638411;     // Å
constexpr double kHartree = 27.211386024367243;  // eV
constexpr double kFineStructure = 0.007297352566206496;
// QDO fit of σ(R_vdW) and the damping length p = scale·2·2.54·α^(1/7) (FORMULAS §9).
constexpr double kSigma3 = -0.00078893, kSigma2 = 0.04125273, kSigma1 = 0.24428889, kSigma0 = -0.00433008;
constexpr double kDampingLength = 2.0 * 2.54;

// Coulomb pair kernels (Params::coulomb_kernel).
constexpr int kShiftedForce = 0;  // SO3LR's shifted force (FORMULAS §8)
constexpr int kSwitchedErf = 1;   // the PME hand-off's in-cutoff term (viskrates.physics.SwitchedErfCoulomb)

template <typename T>
struct Params {
  const T* positions;        // [N, 3] Å
  const T* box;              // [3, 3] rows are box vectors (Å), or nullptr (open boundaries)
  const int64_t* row_ptr;    // [N+1]
  const int64_t* senders;    // [E]
  const T* shifts;           // [E, 3] integer multiples of the box vectors (unused without a box)
  const T* charges;          // [N] q, e
  const T* polarizabilities; // [N] α, bohr³
  const T* c6;               // [N] C6, Eh·bohr⁶
  T cutoff;                  // r_c, Å
  T coulomb_constant;        // ke, eV·Å/e²
  T inv_sigma;               // 1/σ, 1/Å
  T coulomb_switch_on;       // x_on of the Coulomb switch, Å
  T coulomb_shift;           // V(r_c), 1/Å
  T coulomb_slope;           // V'(r_c), 1/Å²
  T dispersion_switch_on;    // r_c − damping, Å
  T dispersion_scale;        // scale of the damping length (SO3LR: 1.2)
  T vdw_radius_factor;       // α_fs^(−4/21), R_vdW = α_fs^(−4/21)·α^(1/7)
  int coulomb_kernel;        // kShiftedForce or kSwitchedErf
};

// Upstream gradients and outputs of the backward (long_range_atom_backward), all rows indexed by atom.
template <typename T>
struct Gradients {
  const T* coulomb;      // [N] dL/de_c of the per-atom Coulomb energies
  const T* dispersion;   // [N] dL/de_d of the per-atom dispersion energies
  T* positions;          // [N, 3] dL/dR
  T* charges;            // [N] dL/dq
  T* polarizabilities;   // [N] dL/dα
  T* c6;                 // [N] dL/dC6
  T* box_partials;       // [N, 3, 3] each atom's share of dL/dbox, or nullptr (not wanted)
};

// The C∞ switch S(d; x_on, x_off) = σ(1−c)/(σ(1−c) + σ(c)), σ(t) = exp(−1/t) (0 for t ≤ 0),
// c = (d − x_on)/(x_off − x_on), and dS/dd. Inside the switching region it is evaluated with one exponential
// as S = 1/(1 + exp(z)), z = 1/(1−c) − 1/c, so dS/dc = −S(1−S)·(1/(1−c)² + 1/c²). Branch-free (the formula is
// evaluated at c = 1/2 outside (0, 1) and discarded) so that the CPU launcher's edge loops vectorise; the
// region is tested on c, not d, because rounding may put c on a boundary for d just inside.
template <typename T>
VISKRATES_HD void smooth_switch(T d, T x_on, T x_off, T* s, T* ds) {
  const T width = x_off - x_on;
  const T c = (d - x_on) / width;
  const bool inside = c > T(0) && c < T(1);
  const T t = inside ? c : T(0.5);
  const T a = T(1) / (T(1) - t), b = T(1) / t;
  const T value = T(1) / (T(1) + math::exp(a - b));
  *s = inside ? value : (c <= T(0) ? T(1) : T(0));
  *ds = inside ? -value * (T(1) - value) * (a * a + b * b) / width : T(0);
}

// Coulomb pair kernel k(d) and dk/dd (d < r_c), V(d) = erf(d/σ)/d:
//   kShiftedForce: k = V(d) − V(r_c) − (1 − f)·V'(r_c)·(d − r_c), f = S(d; x_on, r_c);
//   kSwitchedErf:  k = V(d)·P(u), P = 1 − 10u³ + 15u⁴ − 6u⁵ (OpenMM's switching function), u = (d − x_on)/(r_c − x_on)
//                  clamped to [0, 1] (P' vanishes at both ends, so the clamp needs no branch in dP/dd).
template <typename T>
VISKRATES_HD void coulomb_kernel(const Params<T>& p, T d, T* k, T* dk) {
  const T x = d * p.inv_sigma;
  const T v = math::erf(x) / d;
  // V'(d) = 2·exp(−(d/σ)²)/(√π·σ·d) − V(d)/d
  const T dv = (T(1.1283791670955126) * p.inv_sigma * math::exp(-x * x) - v) / d;
  if (p.coulomb_kernel == kSwitchedErf) {
    const T width = p.cutoff - p.coulomb_switch_on;
    T u = (d - p.coulomb_switch_on) / width;
    u = u < T(0) ? T(0) : (u > T(1) ? T(1) : u);
    const T u2 = u * u, u3 = u2 * u;
    const T switch_value = T(1) - T(10) * u3 + T(15) * u3 * u - T(6) * u3 * u2;
    const T switch_slope = (T(-30) * u2 + T(60) * u3 - T(30) * u3 * u) / width;
    *k = v * switch_value;
    *dk = dv * switch_value + v * switch_slope;
    return;
  }
  T f, df;
  smooth_switch(d, p.coulomb_switch_on, p.cutoff, &f, &df);
  const T offset = d - p.cutoff;
  *k = v - p.coulomb_shift - (T(1) - f) * p.coulomb_slope * offset;
  *dk = dv - (T(1) - f) * p.coulomb_slope + df * p.coulomb_slope * offset;
}

// Dispersion energy of the pair (a, b) at distance d < r_c and, when `grad` is true, its derivatives with
// respect to d, α_a and C6_a (the ones of b follow by exchanging the roles).
template <typename T>
VISKRATES_HD T dispersion_pair(const Params<T>& p, T alpha_a, T alpha_b, T c6_a, T c6_b, T d, bool grad, T* de_dd,
                               T* de_dalpha_a, T* de_dc6_a) {
  const T alpha = T(0.5) * (alpha_a + alpha_b);
  const T denominator = alpha_a * alpha_a * c6_b + alpha_b * alpha_b * c6_a;
  const T c6 = T(2) * c6_a * c6_b * alpha_a * alpha_b / denominator;
  const T root = math::pow(alpha, T(1) / T(7));
  const T r_vdw = p.vdw_radius_factor * root;
  const T sigma = ((T(kSigma3) * r_vdw + T(kSigma2)) * r_vdw + T(kSigma1)) * r_vdw + T(kSigma0);
  // C8 = 5·C6/γ and C10 = 245/8·C6/γ² with γ = 1/(2σ²)
  const T inv_gamma = T(2) * sigma * sigma;
  const T c8_ratio = T(5) * inv_gamma;
  const T c10_ratio = T(245.0 / 8.0) * inv_gamma * inv_gamma;
  const T length = p.dispersion_scale * T(kDampingLength) * root;
  const T p2 = length * length;
  const T p6 = p2 * p2 * p2, p8 = p6 * p2, p10 = p8 * p2;
  const T rho = d / T(kBohr);
  const T rho2 = rho * rho;
  const T rho6 = rho2 * rho2 * rho2, rho8 = rho6 * rho2, rho10 = rho8 * rho2;
  const T inv6 = T(1) / (rho6 + p6), inv8 = T(1) / (rho8 + p8), inv10 = T(1) / (rho10 + p10);
  // e0 = −Eh·C6·u with u = 1/(ρ⁶+p⁶) + (C8/C6)/(ρ⁸+p⁸) + (C10/C6)/(ρ¹⁰+p¹⁰)
  const T u = inv6 + c8_ratio * inv8 + c10_ratio * inv10;
  const T e0 = -T(kHartree) * c6 * u;
  T s, ds;
  smooth_switch(d, p.dispersion_switch_on, p.cutoff, &s, &ds);
  if (grad) {
    // ∂u/∂(x⁶) type terms: ∂/∂y of 1/(y^n + p^n) is −n·y^(n−1)/(y^n + p^n)²
    const T w6 = inv6 * inv6, w8 = c8_ratio * inv8 * inv8, w10 = c10_ratio * inv10 * inv10;
    const T du_drho = -(T(6) * rho6 * w6 + T(8) * rho8 * w8 + T(10) * rho10 * w10) / rho;
    const T du_dlength = -(T(6) * p6 * w6 + T(8) * p8 * w8 + T(10) * p10 * w10) / length;
    // C8/C6 = 10σ², C10/C6 = 122.5σ⁴
    const T du_dsigma = T(20) * sigma * inv8 + T(490) * sigma * sigma * sigma * inv10;
    const T dsigma_dr = (T(3) * T(kSigma3) * r_vdw + T(2) * T(kSigma2)) * r_vdw + T(kSigma1);
    // root = α^(1/7): d root/dα = root/(7α); α = (α_a + α_b)/2
    const T du_droot = du_dlength * p.dispersion_scale * T(kDampingLength) +
                       du_dsigma * dsigma_dr * p.vdw_radius_factor;
    const T du_dalpha_a = du_droot * root / (T(7) * alpha) * T(0.5);
    // C6 = 2·C6_a·C6_b·α_a·α_b / (α_a²·C6_b + α_b²·C6_a)
    const T dc6_dalpha_a = (T(2) * c6_a * c6_b * alpha_b - c6 * T(2) * alpha_a * c6_b) / denominator;
    const T dc6_dc6_a = (T(2) * c6_b * alpha_a * alpha_b - c6 * alpha_b * alpha_b) / denominator;
    const T scale = -T(kHartree) * s;
    *de_dd = scale * c6 * du_drho / T(kBohr) + e0 * ds;
    *de_dalpha_a = scale * (dc6_dalpha_a * u + c6 * du_dalpha_a);
    *de_dc6_a = scale * dc6_dc6_a * u;
  }
  return e0 * s;
}

// Energies of the pair (i, j) at distance d < r_c: returns the dispersion energy and sets *k to the Coulomb
// kernel k(d) (without the charges). Branch-free, like every function it calls, for the CPU launcher's
// vectorised edge loops.
template <typename T>
VISKRATES_HD T pair_energy(const Params<T>& p, T d, T alpha_i, T alpha_j, T c6_i, T c6_j, T* k) {
  T dk, unused_dd, unused_dalpha, unused_dc6;
  coulomb_kernel(p, d, k, &dk);
  return dispersion_pair(p, alpha_i, alpha_j, c6_i, c6_j, d, false, &unused_dd, &unused_dalpha, &unused_dc6);
}

// Receiver i's gradient terms of its edge to j at distance d < r_c, the pair's energies weighted by the
// upstream gradients of their owner (w_coulomb includes ke): dL/dq_i, dL/dα_i, dL/dC6_i and dL/dd / d.
template <typename T>
VISKRATES_HD void pair_backward(const Params<T>& p, T d, T q_i, T q_j, T alpha_i, T alpha_j, T c6_i, T c6_j,
                                T w_coulomb, T w_dispersion, T* gq, T* galpha, T* gc6, T* gd_over_d) {
  T k, dk, de_dd, de_dalpha, de_dc6;
  coulomb_kernel(p, d, &k, &dk);
  dispersion_pair(p, alpha_i, alpha_j, c6_i, c6_j, d, true, &de_dd, &de_dalpha, &de_dc6);
  *gq = w_coulomb * q_j * k;
  *galpha = w_dispersion * de_dalpha;
  *gc6 = w_dispersion * de_dc6;
  *gd_over_d = (w_coulomb * q_i * q_j * dk + w_dispersion * de_dd) / d;
}

// Vector v = R_j − R_i + shift·box of edge e from receiver i to sender j, and its length.
template <typename T>
VISKRATES_HD T edge_vector(const Params<T>& p, int64_t i, int64_t j, int64_t e, T* v) {
  for (int a = 0; a < 3; ++a) v[a] = p.positions[3 * j + a] - p.positions[3 * i + a];
  if (p.box != nullptr) {
    const T* s = p.shifts + 3 * e;
    for (int a = 0; a < 3; ++a) v[a] = v[a] + (s[0] * p.box[a] + s[1] * p.box[3 + a] + s[2] * p.box[6 + a]);
  }
  return math::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

// Forward of receiver i: the Coulomb and dispersion energies of the pairs (i, j), j > i, within r_c. The CUDA
// launcher runs it per thread; the CPU launcher runs the same edge test and pair terms in vectorised blocks.
template <typename T>
VISKRATES_HD void long_range_atom(const Params<T>& p, int64_t i, T* coulomb_energies, T* dispersion_energies) {
  T coulomb = T(0), dispersion = T(0);
  const T q_i = p.charges[i], alpha_i = p.polarizabilities[i], c6_i = p.c6[i];
  for (int64_t e = p.row_ptr[i]; e < p.row_ptr[i + 1]; ++e) {
    const int64_t j = p.senders[e];
    if (j <= i) continue;
    T v[3];
    const T d = edge_vector(p, i, j, e, v);
    if (!(d < p.cutoff)) continue;
    T k;
    dispersion += pair_energy(p, d, alpha_i, p.polarizabilities[j], c6_i, p.c6[j], &k);
    coulomb += p.charges[j] * k;
  }
  coulomb_energies[i] = p.coulomb_constant * q_i * coulomb;
  dispersion_energies[i] = dispersion;
}

// Backward of receiver i from the upstream gradients g.coulomb, g.dispersion of the per-atom energies:
// dL/dR_i, dL/dq_i, dL/dα_i and dL/dC6_i summed over all its pairs, each pair weighted by the gradient of the
// atom that owns its energy, and (g.box_partials non-null) atom i's share of dL/dbox [3, 3] from the pairs it
// owns. Writes row i of every output of g.
template <typename T>
VISKRATES_HD void long_range_atom_backward(const Params<T>& p, const Gradients<T>& g, int64_t i) {
  T gq = T(0), galpha = T(0), gc6 = T(0);
  T gr[3] = {T(0), T(0), T(0)};
  T gbox[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  const T q_i = p.charges[i], alpha_i = p.polarizabilities[i], c6_i = p.c6[i];
  for (int64_t e = p.row_ptr[i]; e < p.row_ptr[i + 1]; ++e) {
    const int64_t j = p.senders[e];
    if (j == i) continue;
    T v[3];
    const T d = edge_vector(p, i, j, e, v);
    if (!(d < p.cutoff)) continue;
    const int64_t owner = j > i ? i : j;
    T gq_e, galpha_e, gc6_e, gd_over_d;
    pair_backward(p, d, q_i, p.charges[j], alpha_i, p.polarizabilities[j], c6_i, p.c6[j],
                  g.coulomb[owner] * p.coulomb_constant, g.dispersion[owner], &gq_e, &galpha_e, &gc6_e, &gd_over_d);
    gq += gq_e;
    galpha += galpha_e;
    gc6 += gc6_e;
    // d depends on R_i through v = R_j − R_i + shift·box
    for (int a = 0; a < 3; ++a) gr[a] -= gd_over_d * v[a];
    if (g.box_partials != nullptr && j > i) {
      const T* s = p.shifts + 3 * e;
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) gbox[3 * a + b] += s[a] * gd_over_d * v[b];
    }
  }
  for (int a = 0; a < 3; ++a) g.positions[3 * i + a] = gr[a];
  g.charges[i] = gq;
  g.polarizabilities[i] = galpha;
  g.c6[i] = gc6;
  if (g.box_partials != nullptr) {
    for (int a = 0; a < 9; ++a) g.box_partials[9 * i + a] = gbox[a];
  }
}

}  // namespace lr
}  // namespace viskrates
