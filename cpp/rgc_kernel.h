// Kernel body of viskrates::rgc_geometry, ViSNet's runtime geometry calculation (RGC) per edge
// (DESIGN.md §4: one kernel body, two launchers; CPU: cpp/rgc.cpp, CUDA: cuda/rgc.cu).
//
// For an edge e = (j → i) with vector v = R_j − R_i (+ shift), d = |v|, u = v/d:
//   harmonics  Y_e = PyG ViSNet's real spherical harmonics of u, degrees 1..lmax (L = 3 or 8 components),
//   cutoff     φ_e = ½(cos(πd/r_c) + 1) for d < r_c, else 0,
//   radial     ρ_e[k] = φ_e · exp(−β_k (exp(−α d) − μ_k)²) (ExpNormal basis times the cutoff), 0 where that is
//              subnormal (zero_subnormal; such entries also get zero gradient).
// Self-loops (i = j) have Y = 0, φ = 1 and ρ[k] = exp(−β_k (1 − μ_k)²), independent of v (zero gradient).
// Everything is linear in the number of edges: the per-atom inner products of the angle term and the
// vector rejections of the dihedral term are evaluated inside the vismp_* kernels, from these Y.
// Equations: Wang et al., Nat. Commun. 15, 313 (2024), "runtime geometry calculation"; PyG's Sphere,
// CosineCutoff and ExpNormalSmearing; reference: viskrates.ops.rgc_geometry_reference.
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace viskrates {
namespace rgc {

// Components of the harmonics for lmax 1 and 2.
VISKRATES_HD int64_t num_components(int64_t lmax) { return (lmax + 1) * (lmax + 1) - 1; }

template <typename T>
struct Geometry {
  const T* edge_vectors;     // [E, 3]
  const int64_t* receivers;  // [E]
  const int64_t* senders;    // [E]
  const T* means;            // [K] μ
  const T* betas;            // [K] β
  T cutoff, alpha;           // r_c, α
  int64_t L, K;
};

// Distance, unit vector, φ and dφ/dd of edge e; returns false for a self-loop (d = 0, u = 0, φ = 1).
template <typename T>
VISKRATES_HD bool edge_frame(const Geometry<T>& p, int64_t e, T* d, T* u, T* phi, T* dphi) {
  if (p.receivers[e] == p.senders[e]) {
    *d = T(0);
    u[0] = u[1] = u[2] = T(0);
    *phi = T(1);
    *dphi = T(0);
    return false;
  }
  const T* v = p.edge_vectors + 3 * e;
  const T dist = math::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  *d = dist;
  for (int a = 0; a < 3; ++a) u[a] = v[a] / dist;
  if (dist < p.cutoff) {
    const T w = T(3.14159265358979323846) / p.cutoff;
    *phi = T(0.5) * (math::cos(dist * w) + T(1));
    *dphi = T(-0.5) * w * math::sin(dist * w);
  } else {
    *phi = T(0);
    *dphi = T(0);
  }
  return true;
}

// ViSNet's harmonics of the unit vector u (zeros for a self-loop's u = 0): y[0..2] = (x, y, z) and, for
// L = 8, y[3..7] = (√3xz, √3xy, y² − (x² + z²)/2, √3yz, (√3/2)(z² − x²)).
template <typename T>
VISKRATES_HD void harmonics_of(const T* u, int64_t L, T* y) {
  const T x = u[0], yy = u[1], z = u[2];
  y[0] = x;
  y[1] = yy;
  y[2] = z;
  if (L == 8) {
    const T s3 = T(1.7320508075688772);
    y[3] = s3 * x * z;
    y[4] = s3 * x * yy;
    y[5] = yy * yy - T(0.5) * (x * x + z * z);
    y[6] = s3 * yy * z;
    y[7] = T(0.5) * s3 * (z * z - x * x);
  }
}

// Writes Y_e [L], φ_e and ρ_e [K] of edge e.
template <typename T>
VISKRATES_HD void geometry_edge(const Geometry<T>& p, int64_t e, T* harmonics, T* cutoff_weights, T* radial) {
  T d, u[3], phi, dphi;
  edge_frame(p, e, &d, u, &phi, &dphi);
  harmonics_of(u, p.L, harmonics + e * p.L);
  cutoff_weights[e] = phi;
  const T q = math::exp(-p.alpha * d);
  T* rho = radial + e * p.K;
  for (int64_t k = 0; k < p.K; ++k) {
    const T s = q - p.means[k];
    rho[k] = zero_subnormal(phi * math::exp(-p.betas[k] * s * s));
  }
}

// dL/dv_e [3] of edge e from the upstream gradients of Y (gy [E, L]), φ (gphi [E]) and ρ (grho [E, K]);
// any of them may be nullptr (no gradient). Self-loops get 0.
template <typename T>
VISKRATES_HD void geometry_edge_backward(const Geometry<T>& p, int64_t e, const T* gy, const T* gphi, const T* grho,
                                         T* grad_edge_vectors) {
  T* gv = grad_edge_vectors + 3 * e;
  T d, u[3], phi, dphi;
  if (!edge_frame(p, e, &d, u, &phi, &dphi)) {
    gv[0] = gv[1] = gv[2] = T(0);
    return;
  }
  T gu[3] = {T(0), T(0), T(0)};
  if (gy != nullptr) {
    const T* g = gy + e * p.L;
    gu[0] = g[0];
    gu[1] = g[1];
    gu[2] = g[2];
    if (p.L == 8) {
      const T s3 = T(1.7320508075688772);
      const T x = u[0], y = u[1], z = u[2];
      gu[0] += s3 * (z * g[3] + y * g[4]) - x * g[5] - s3 * x * g[7];
      gu[1] += s3 * (x * g[4] + z * g[6]) + T(2) * y * g[5];
      gu[2] += s3 * (x * g[3] + y * g[6]) - z * g[5] + s3 * z * g[7];
    }
  }
  T gd = gphi != nullptr ? gphi[e] * dphi : T(0);
  if (grho != nullptr) {
    const T* g = grho + e * p.K;
    const T q = math::exp(-p.alpha * d);
    T sum = T(0);
    for (int64_t k = 0; k < p.K; ++k) {
      const T s = q - p.means[k];
      const T b = math::exp(-p.betas[k] * s * s);
      if (zero_subnormal(phi * b) == T(0)) continue;  // ρ_k was set to 0
      // dρ_k/dd = φ'·b_k + φ·b_k·2αβ_k·s_k·exp(−αd)
      sum += g[k] * b * (dphi + phi * T(2) * p.alpha * p.betas[k] * s * q);
    }
    gd += sum;
  }
  // u = v/d: dL/dv = (gu − (gu·u)u)/d + gd·u
  const T gu_u = gu[0] * u[0] + gu[1] * u[1] + gu[2] * u[2];
  for (int a = 0; a < 3; ++a) gv[a] = (gu[a] - gu_u * u[a]) / d + gd * u[a];
}

// Edge e's contributions to dL/dμ_k and dL/dβ_k from grho [E, K]: ρ_k = φ·exp(−β_k s_k²), s_k = exp(−αd) − μ_k.
template <typename T>
VISKRATES_HD void geometry_edge_basis_grad(const Geometry<T>& p, int64_t e, int64_t k, const T* grho, T* gmean,
                                           T* gbeta) {
  T d, u[3], phi, dphi;
  edge_frame(p, e, &d, u, &phi, &dphi);
  const T s = math::exp(-p.alpha * d) - p.means[k];
  const T rho = zero_subnormal(phi * math::exp(-p.betas[k] * s * s));
  const T grho_b = grho[e * p.K + k] * rho;
  *gmean += grho_b * T(2) * p.betas[k] * s;
  *gbeta -= grho_b * s * s;
}

}  // namespace rgc
}  // namespace viskrates
