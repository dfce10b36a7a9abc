// Kernel bodies of the fused SO3krates Euclidean attention op viskrates::euclidean_attention (DESIGN.md §4:
// one kernel body, two launchers).
//
// Frank et al., Nat. Commun. 15, 6539 (2024), eqs. 7-10, in the SO3LR variant (no softmax, constant
// normaliser n; models/so3lr/FORMULAS.md §4). For edge e from sender j to receiver i with filter row
// f = filter_index[e] and s_e = φ(d_e)/n::
//
//     α1_e,h = s_e Σ_a q1_i,h,a w1_f,h,a k1_j,h,a         Δx_i,h,a  = Σ_e α1_e,h v1_j,h,a
//     α2_e,l = s_e Σ_a q2_i,l,a w2_f,l,a k2_j,l,a         Δev_i,lm  = Σ_e α2_e,l Y_e,lm
//
// Filters are indexed per edge through filter_index so that both directions of a pair can share one row
// (the SO3krates filters depend on |r_ij| and on per-degree norms of ev_j − ev_i only, so w_ij = w_ji).
//
// Every function handles one (edge, head) pair, so the CPU launcher (cpp/euclidean_attention.cpp) loops over
// heads and the CUDA launcher (cuda/euclidean_attention.cu) gives one thread per (atom, head); the head width
// D is a template constant kD (0: the runtime p.D) so that the CPU loops over D = 32 unroll. The
// backward runs three gathering passes, each output element having exactly one writer (deterministic, no
// atomics): per receiver (query and harmonic gradients, per-edge scalars), per sender (key and value
// gradients, over the transposed graph), per filter row (filter gradients, over filter_ptr/filter_edges).
//
// Layout (row-major, contiguous): per-atom [N, H, D]; filters [P, H, D]; harmonics [E, C] with
// C = (L+1)² − 1 components ordered by degree (degree l occupies columns l² − 1 .. (l+1)² − 2), head l−1 of
// the EV branch belongs to degree l. Reference: viskrates.ops.euclidean_attention_reference.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernel_common.h"

namespace viskrates {
namespace eattn {

// Graph of the op: receiver-sorted edges (CSR row_ptr), their transpose (the edges of sender j are
// col_edges[col_ptr[j] .. col_ptr[j+1]]) and the edges of every filter row f (filter_edges[filter_ptr[f] ..
// filter_ptr[f+1]]).
struct Graph {
  const int64_t* row_ptr;       // [N + 1]
  const int64_t* receivers;     // [E]
  const int64_t* senders;       // [E]
  const int64_t* col_ptr;       // [N + 1]
  const int64_t* col_edges;     // [E]
  const int64_t* filter_ptr;    // [P + 1]
  const int64_t* filter_edges;  // [E]
};

// Calls f(std::integral_constant<int, kD>()) with kD = D for the head widths the CPU launcher specialises
// (SO3LR: 32), else kD = 0 (runtime width).
template <typename F>
inline void with_head_width(int64_t D, F&& f) {
  if (D == 32) {
    f(std::integral_constant<int, 32>());
  } else if (D == 16) {
    f(std::integral_constant<int, 16>());
  } else {
    f(std::integral_constant<int, 0>());
  }
}

template <typename T>
struct Params {
  const T* x_query;         // [N, H, D]
  const T* x_key;           // [N, H, D]
  const T* x_value;         // [N, H, D]
  const T* x_filter;        // [P, H, D]
  const T* ev_query;        // [N, L, D]
  const T* ev_key;          // [N, L, D]
  const T* ev_filter;       // [P, L, D]
  const T* harmonics;       // [E, C]
  const T* cutoff;          // [E] φ(d_e)
  const int64_t* filter_index;  // [E] filter row of every edge
  int64_t H, L, D, C;
  T inv_norm;               // 1 / n
};

// Per-edge, per-head scalars the backward passes share ([E, H] and [E, L], small).
template <typename T>
struct EdgeScalars {
  T* x_score;    // [E, H] Σ_a q1 w1 k1 (without s_e)
  T* ev_score;   // [E, L] Σ_a q2 w2 k2
  T* x_grad;     // [E, H] ∂L/∂α1
  T* ev_grad;    // [E, L] ∂L/∂α2
};

// Σ_a q_i,h,a w_f,h,a k_j,h,a for one branch.
template <int kD, typename T>
VISKRATES_HD T triple_product(const T* q, const T* w, const T* k, int64_t runtime_D) {
  const int64_t D = kD > 0 ? kD : runtime_D;
  T sum = T(0);
  for (int64_t a = 0; a < D; ++a) sum += q[a] * w[a] * k[a];
  return sum;
}

// Forward contribution of edge e (receiver i, sender j) to head h: dx_ih[a] += α1 v1_j,h,a and, for h < L,
// dev_i[c] += α2 Y_e,c over the components c of degree h + 1. dx_ih points at Δx_i,h,0; dev_i at Δev_i,0.
template <int kD, typename T>
VISKRATES_HD void forward_edge_head(const Params<T>& p, int64_t e, int64_t i, int64_t j, int64_t h, T* dx_ih,
                                    T* dev_i) {
  const int64_t D = kD > 0 ? kD : p.D;
  const int64_t f = p.filter_index[e];
  const T s = p.cutoff[e] * p.inv_norm;
  const T a1 = s * triple_product<kD>(p.x_query + (i * p.H + h) * D, p.x_filter + (f * p.H + h) * D,
                                  p.x_key + (j * p.H + h) * D, D);
  const T* v = p.x_value + (j * p.H + h) * D;
  for (int64_t a = 0; a < D; ++a) dx_ih[a] += a1 * v[a];
  if (h < p.L) {
    const T a2 = s * triple_product<kD>(p.ev_query + (i * p.L + h) * D, p.ev_filter + (f * p.L + h) * D,
                                    p.ev_key + (j * p.L + h) * D, D);
    const T* y = p.harmonics + e * p.C;
    for (int64_t c = (h + 1) * (h + 1) - 1; c < (h + 2) * (h + 2) - 1; ++c) dev_i[c] += a2 * y[c];
  }
}

// Receiver pass of the backward for edge e, head h, with upstream gradients g_dx [N, H, D], g_dev [N, C]:
// adds to the query gradients of receiver i (gq1_ih at ∂L/∂q1_i,h,0, gq2_ih at ∂L/∂q2_i,h,0), writes
// ∂L/∂Y_e,c for the components of degree h + 1 and the per-edge scalars of (e, h).
template <int kD, typename T>
VISKRATES_HD void backward_receiver_edge_head(const Params<T>& p, const T* g_dx, const T* g_dev, int64_t e,
                                              int64_t i, int64_t j, int64_t h, T* VISKRATES_RESTRICT gq1_ih,
                                              T* VISKRATES_RESTRICT gq2_ih, T* VISKRATES_RESTRICT grad_harmonics,
                                              const EdgeScalars<T>& out) {
  const int64_t D = kD > 0 ? kD : p.D;
  const int64_t f = p.filter_index[e];
  const T s = p.cutoff[e] * p.inv_norm;
  {
    const T* q = p.x_query + (i * p.H + h) * D;
    const T* w = p.x_filter + (f * p.H + h) * D;
    const T* k = p.x_key + (j * p.H + h) * D;
    const T* v = p.x_value + (j * p.H + h) * D;
    const T* g = g_dx + (i * p.H + h) * D;
    T score = T(0), ga = T(0);
    for (int64_t a = 0; a < D; ++a) {
      score += q[a] * w[a] * k[a];
      ga += g[a] * v[a];
    }
    const T gs = ga * s;
    for (int64_t a = 0; a < D; ++a) gq1_ih[a] += gs * w[a] * k[a];
    out.x_score[e * p.H + h] = score;
    out.x_grad[e * p.H + h] = ga;
  }
  if (h < p.L) {
    const T* q = p.ev_query + (i * p.L + h) * D;
    const T* w = p.ev_filter + (f * p.L + h) * D;
    const T* k = p.ev_key + (j * p.L + h) * D;
    const T score = triple_product<kD>(q, w, k, D);
    const T a2 = s * score;
    const T* y = p.harmonics + e * p.C;
    const T* g = g_dev + i * p.C;
    T ga = T(0);
    for (int64_t c = (h + 1) * (h + 1) - 1; c < (h + 2) * (h + 2) - 1; ++c) {
      ga += g[c] * y[c];
      grad_harmonics[e * p.C + c] = a2 * g[c];
    }
    const T gs = ga * s;
    for (int64_t a = 0; a < D; ++a) gq2_ih[a] += gs * w[a] * k[a];
    out.ev_score[e * p.L + h] = score;
    out.ev_grad[e * p.L + h] = ga;
  }
}

// ∂L/∂φ_e = (Σ_h ∂L/∂α1_e,h · score1_e,h + Σ_l ∂L/∂α2_e,l · score2_e,l) / n, once the receiver pass is done.
template <typename T>
VISKRATES_HD T cutoff_grad_edge(const Params<T>& p, const EdgeScalars<T>& sc, int64_t e) {
  T sum = T(0);
  for (int64_t h = 0; h < p.H; ++h) sum += sc.x_grad[e * p.H + h] * sc.x_score[e * p.H + h];
  for (int64_t l = 0; l < p.L; ++l) sum += sc.ev_grad[e * p.L + l] * sc.ev_score[e * p.L + l];
  return sum * p.inv_norm;
}

// Sender pass for edge e (receiver i, sender j), head h: adds ∂L/∂k1_j,h, ∂L/∂v1_j,h and (h < L) ∂L/∂k2_j,h.
template <int kD, typename T>
VISKRATES_HD void backward_sender_edge_head(const Params<T>& p, const T* g_dx, const EdgeScalars<T>& sc, int64_t e,
                                            int64_t i, int64_t h, T* VISKRATES_RESTRICT gk1_jh,
                                            T* VISKRATES_RESTRICT gv1_jh, T* VISKRATES_RESTRICT gk2_jh) {
  const int64_t D = kD > 0 ? kD : p.D;
  const int64_t f = p.filter_index[e];
  const T s = p.cutoff[e] * p.inv_norm;
  {
    const T* q = p.x_query + (i * p.H + h) * D;
    const T* w = p.x_filter + (f * p.H + h) * D;
    const T* g = g_dx + (i * p.H + h) * D;
    const T gs = sc.x_grad[e * p.H + h] * s;
    const T a1 = sc.x_score[e * p.H + h] * s;
    for (int64_t a = 0; a < D; ++a) {
      gk1_jh[a] += gs * q[a] * w[a];
      gv1_jh[a] += a1 * g[a];
    }
  }
  if (h < p.L) {
    const T* q = p.ev_query + (i * p.L + h) * D;
    const T* w = p.ev_filter + (f * p.L + h) * D;
    const T gs = sc.ev_grad[e * p.L + h] * s;
    for (int64_t a = 0; a < D; ++a) gk2_jh[a] += gs * q[a] * w[a];
  }
}

// Filter pass for edge e (receiver i, sender j), head h: adds its share of ∂L/∂w1_f,h (and ∂L/∂w2_f,h, h < L).
template <int kD, typename T>
VISKRATES_HD void backward_filter_edge_head(const Params<T>& p, const EdgeScalars<T>& sc, int64_t e, int64_t i,
                                            int64_t j, int64_t h, T* VISKRATES_RESTRICT gw1_fh,
                                            T* VISKRATES_RESTRICT gw2_fh) {
  const int64_t D = kD > 0 ? kD : p.D;
  const T s = p.cutoff[e] * p.inv_norm;
  {
    const T* q = p.x_query + (i * p.H + h) * D;
    const T* k = p.x_key + (j * p.H + h) * D;
    const T gs = sc.x_grad[e * p.H + h] * s;
    for (int64_t a = 0; a < D; ++a) gw1_fh[a] += gs * q[a] * k[a];
  }
  if (h < p.L) {
    const T* q = p.ev_query + (i * p.L + h) * D;
    const T* k = p.ev_key + (j * p.L + h) * D;
    const T gs = sc.ev_grad[e * p.L + h] * s;
    for (int64_t a = 0; a < D; ++a) gw2_fh[a] += gs * q[a] * k[a];
  }
}

}  // namespace eattn
}  // namespace viskrates
