// Kernel bodies of the fused ViS-MP ops viskrates::vismp_attention, viskrates::vismp_vector_message and
// viskrates::vismp_edge_update (DESIGN.md §4: one kernel body, two launchers).
//
// Each function handles one edge e and W consecutive channels (W a template constant): the CPU launcher
// (cpp/vismp.cpp) walks a receiver's edges in blocks of 16 channels, so the innermost loops run over
// contiguous channels and vectorise; the CUDA launcher (cuda/vismp.cu) gives each lane of a warp one
// channel at a time (W = 1) and reduces the cross-channel partial sums (harmonics and weight gradients)
// with warp shuffles. Edge data are
// receiver-sorted (CSR row_ptr); the gradients of the senders' features are gathered in a second pass
// over the transposed graph (col_ptr, col_edges: the edges of each sender), so every output element is
// written by exactly one thread: deterministic, no atomics.
//
// Shapes (row-major, contiguous): per-atom vectors [N, L, C]; per-edge scalars [E, C]; harmonics [E, L].
// Equations: Wang et al., Nat. Commun. 15, 313 (2024), ViS-MP (README "Equations" §3), as PyG computes them;
// reference implementations: viskrates.ops.vismp_*_reference. The attention bodies work per (edge, head)
// with runtime head width; both launchers call them per head.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernel_common.h"

namespace viskrates {
namespace vismp {

// Largest number of harmonic components: lmax = 2 gives (2 + 1)² − 1 = 8.
constexpr int kMaxComponents = 8;

// Calls f(std::integral_constant<int, D0>()) with D0 = D for the common attention head widths, so the CPU
// launcher's channel loops have compile-time bounds and vectorise; D0 = 0 (runtime width) otherwise.
template <typename F>
inline void with_head_width(int64_t D, F&& f) {
  switch (D) {
    case 8: f(std::integral_constant<int, 8>()); break;
    case 16: f(std::integral_constant<int, 16>()); break;
    case 32: f(std::integral_constant<int, 32>()); break;
    default: f(std::integral_constant<int, 0>()); break;
  }
}

// Channel block of the CPU launcher.
constexpr int kChannelBlock = 16;

// Calls f(std::integral_constant<int, W>(), c0) over the channels 0 .. C-1: blocks of kChannelBlock, then
// single channels for the rest.
template <typename F>
inline void for_channel_blocks(int64_t C, F&& f) {
  int64_t c0 = 0;
  for (; c0 + kChannelBlock <= C; c0 += kChannelBlock) f(std::integral_constant<int, kChannelBlock>(), c0);
  for (; c0 < C; ++c0) f(std::integral_constant<int, 1>(), c0);
}

template <typename T>
struct Graph {
  const int64_t* row_ptr;    // [N + 1] edges of receiver i: row_ptr[i] .. row_ptr[i+1]
  const int64_t* receivers;  // [E]
  const int64_t* senders;    // [E]
  const int64_t* col_ptr;    // [N + 1] edges of sender j: col_edges[col_ptr[j] .. col_ptr[j+1]]
  const int64_t* col_edges;  // [E] edge indices grouped by sender
};

// ---- vector messages: V_i[m, c] = Σ_{e→i} w_e (v̂_j[m, c]·s1_e[c] + s2_e[c]·Y_e[m]) ----------------------

template <typename T>
struct VectorMessage {
  const T* vectors;    // [N, L, C] v̂, or nullptr when v̂ = 0 (first layer)
  const T* scale;      // [E, ld_filters] s1
  const T* shift;      // [E, ld_filters] s2
  const T* harmonics;  // [E, L] Y
  const T* weights;    // [E] w, or nullptr for w = 1
  int64_t L, C;
  int64_t ld_filters;  // row stride of the filter tensor whose column blocks s1 and s2 are
  int64_t ld_grad;     // row stride of dL/ds1 and dL/ds2 (column blocks of one gradient tensor)
};

// The bodies below handle the W channels c0 .. c0+W-1 of one edge; W is a compile-time constant so that
// the CPU launcher's blocks of 16 channels vectorise, while a CUDA lane takes W = 1.

// acc[m * ld + w] += message of edge e (sender j), channel c0 + w.
template <int W, typename T>
VISKRATES_HD void vector_message_edge(const VectorMessage<T>& p, int64_t e, int64_t j, int64_t c0,
                                      T* VISKRATES_RESTRICT acc, int64_t ld) {
  const T wt = p.weights != nullptr ? p.weights[e] : T(1);
  const T* s1 = p.scale + e * p.ld_filters + c0;
  const T* s2 = p.shift + e * p.ld_filters + c0;
  const T* y = p.harmonics + e * p.L;
  for (int64_t m = 0; m < p.L; ++m) {
    T* a = acc + m * ld;
    const T ym = y[m];
    if (p.vectors != nullptr) {
      const T* v = p.vectors + (j * p.L + m) * p.C + c0;
      for (int w = 0; w < W; ++w) a[w] += wt * (v[w] * s1[w] + s2[w] * ym);
    } else {
      for (int w = 0; w < W; ++w) a[w] += wt * (s2[w] * ym);
    }
  }
}

// Receiver pass of the backward for edge e (receiver i, sender j), upstream gradient g = dL/dV [N, L, C]:
// writes dL/ds1_e, dL/ds2_e for channels c0 .. c0+W-1 (grad_scale may be nullptr when v̂ = 0) and adds
// these channels' share of dL/dY_e[m] to gy[m] and of dL/dw_e to *gw.
template <int W, typename T>
VISKRATES_HD void vector_message_edge_backward(const VectorMessage<T>& p, const T* g, int64_t e, int64_t i, int64_t j,
                                               int64_t c0, T* VISKRATES_RESTRICT grad_scale,
                                               T* VISKRATES_RESTRICT grad_shift, T* VISKRATES_RESTRICT gy,
                                               T* VISKRATES_RESTRICT gw) {
  const T wt = p.weights != nullptr ? p.weights[e] : T(1);
  const T* s1 = p.scale + e * p.ld_filters + c0;
  const T* s2 = p.shift + e * p.ld_filters + c0;
  const T* y = p.harmonics + e * p.L;
  T d1[W], d2[W];
  for (int w = 0; w < W; ++w) d1[w] = d2[w] = T(0);
  for (int64_t m = 0; m < p.L; ++m) {
    const T* gm = g + (i * p.L + m) * p.C + c0;
    const T ym = y[m];
    T sum = T(0);
    for (int w = 0; w < W; ++w) {
      d2[w] += gm[w] * ym;
      sum += gm[w] * s2[w];
    }
    gy[m] += wt * sum;
    if (p.vectors != nullptr) {
      const T* v = p.vectors + (j * p.L + m) * p.C + c0;
      for (int w = 0; w < W; ++w) d1[w] += gm[w] * v[w];
    }
  }
  T partial_w = T(0);
  for (int w = 0; w < W; ++w) {
    if (grad_scale != nullptr) grad_scale[e * p.ld_grad + c0 + w] = wt * d1[w];
    grad_shift[e * p.ld_grad + c0 + w] = wt * d2[w];
    partial_w += d1[w] * s1[w] + d2[w] * s2[w];
  }
  *gw += partial_w;
}

// Sender pass: acc[m * ld + w] += dL/dv̂_j[m, c0 + w] contribution of edge e (receiver i).
template <int W, typename T>
VISKRATES_HD void vector_message_edge_backward_sender(const VectorMessage<T>& p, const T* g, int64_t e, int64_t i,
                                                      int64_t c0, T* VISKRATES_RESTRICT acc, int64_t ld) {
  const T wt = p.weights != nullptr ? p.weights[e] : T(1);
  const T* s1 = p.scale + e * p.ld_filters + c0;
  for (int64_t m = 0; m < p.L; ++m) {
    T* a = acc + m * ld;
    const T* gm = g + (i * p.L + m) * p.C + c0;
    for (int w = 0; w < W; ++w) a[w] += wt * (gm[w] * s1[w]);
  }
}

// ---- edge update: f'_e[c] = f_e[c] + gate_e[c]·r_e[c], with the dihedral term -----------------------------------
// r_e[c] = Σ_m t_i[m,c]·s_j[m,c] − (t_i·Y)(s_j·Y)(2 − Y·Y) (the channel-wise inner product of the vector rejections
// of t_i = W_trg v̂_i and s_j = W_src v̂_j from Y_e, expanded as in viskrates.nn.vismp.rejection_inner_product). For
// lmax = 2 (L = 8) Y·Y = 2 for every edge, so the correction vanishes identically and only t·s is evaluated, as the
// reference does. The gate (SiLU of a projection of f, computed by torch) and the residual are applied here so that
// r never exists as an [E, C] tensor and the update costs no elementwise passes over [E, C] tensors.

template <typename T>
struct EdgeUpdate {
  const T* target;         // [N, L, C] t
  const T* source;         // [N, L, C] s
  const T* harmonics;      // [E, L] Y
  const T* edge_features;  // [E, C] f (read by the forward only)
  const T* gate;           // [E, C]
  int64_t L, C;
};

template <typename T>
VISKRATES_HD bool dihedral_has_rejection(const EdgeUpdate<T>& p) {
  return p.L < kMaxComponents;
}

template <typename T>
VISKRATES_HD T dihedral_excess(const EdgeUpdate<T>& p, int64_t e) {
  const T* y = p.harmonics + e * p.L;
  T yy = T(0);
  for (int64_t m = 0; m < p.L; ++m) yy += y[m] * y[m];
  return T(2) - yy;
}

// ty[w] = (t_i·Y_e)[c0 + w], sy[w] = (s_j·Y_e)[c0 + w] (t, s already offset to the atom and channel c0).
template <int W, typename T>
VISKRATES_HD void dihedral_projections(const EdgeUpdate<T>& p, const T* y, const T* t, const T* s, T* ty, T* sy) {
  for (int w = 0; w < W; ++w) ty[w] = sy[w] = T(0);
  for (int64_t m = 0; m < p.L; ++m) {
    for (int w = 0; w < W; ++w) {
      ty[w] += t[m * p.C + w] * y[m];
      sy[w] += s[m * p.C + w] * y[m];
    }
  }
}

// r[w] = r_e[c0 + w] for edge e (receiver i, sender j); with the rejection correction (L < 8) also the
// projections ty, sy and the excess 2 − Y·Y the backward reuses.
template <int W, typename T>
VISKRATES_HD void dihedral_value(const EdgeUpdate<T>& p, int64_t e, int64_t i, int64_t j, int64_t c0, T* r, T* ty,
                                 T* sy, T* excess) {
  const T* t = p.target + i * p.L * p.C + c0;
  const T* s = p.source + j * p.L * p.C + c0;
  for (int w = 0; w < W; ++w) r[w] = T(0);
  for (int64_t m = 0; m < p.L; ++m) {
    for (int w = 0; w < W; ++w) r[w] += t[m * p.C + w] * s[m * p.C + w];
  }
  if (!dihedral_has_rejection(p)) return;
  *excess = dihedral_excess(p, e);
  dihedral_projections<W>(p, p.harmonics + e * p.L, t, s, ty, sy);
  for (int w = 0; w < W; ++w) r[w] -= ty[w] * sy[w] * *excess;
}

// out[e * C + c0 + w] = f'_e[c0 + w].
template <int W, typename T>
VISKRATES_HD void update_edge(const EdgeUpdate<T>& p, int64_t e, int64_t i, int64_t j, int64_t c0, T* out) {
  T r[W], ty[W], sy[W], excess;
  dihedral_value<W>(p, e, i, j, c0, r, ty, sy, &excess);
  const T* f = p.edge_features + e * p.C + c0;
  const T* gate = p.gate + e * p.C + c0;
  for (int w = 0; w < W; ++w) out[e * p.C + c0 + w] = f[w] + gate[w] * r[w];
}

// Receiver pass of the backward, upstream gradient g = dL/df' [E, C] (dL/df = g needs no kernel): writes
// dL/dgate_e = g·r for channels c0 .. c0+W-1 (grad_gate [E, C]), adds edge e's contribution to dL/dt_i[m, c0 + w]
// into acc[m * ld + w] and these channels' share of dL/dY_e[m] to gy[m].
template <int W, typename T>
VISKRATES_HD void update_edge_backward(const EdgeUpdate<T>& p, const T* g, int64_t e, int64_t i, int64_t j, int64_t c0,
                                       T* VISKRATES_RESTRICT grad_gate, T* VISKRATES_RESTRICT acc, int64_t ld,
                                       T* VISKRATES_RESTRICT gy) {
  const T* t = p.target + i * p.L * p.C + c0;
  const T* s = p.source + j * p.L * p.C + c0;
  const T* ge = g + e * p.C + c0;
  const T* gate = p.gate + e * p.C + c0;
  T r[W], ty[W], sy[W], excess;
  dihedral_value<W>(p, e, i, j, c0, r, ty, sy, &excess);
  T gc[W];  // dL/dr
  for (int w = 0; w < W; ++w) {
    grad_gate[e * p.C + c0 + w] = ge[w] * r[w];
    gc[w] = ge[w] * gate[w];
  }
  if (!dihedral_has_rejection(p)) {
    for (int64_t m = 0; m < p.L; ++m) {
      T* a = acc + m * ld;
      const T* sm = s + m * p.C;
      for (int w = 0; w < W; ++w) a[w] += gc[w] * sm[w];
    }
    return;
  }
  const T* y = p.harmonics + e * p.L;
  T gsy[W], gty[W];
  T ab = T(0);  // Σ_c g·(t·Y)(s·Y), for the Y dependence of the excess 2 − Y·Y
  for (int w = 0; w < W; ++w) {
    gsy[w] = gc[w] * excess * sy[w];
    gty[w] = gc[w] * excess * ty[w];
    ab += gc[w] * ty[w] * sy[w];
  }
  for (int64_t m = 0; m < p.L; ++m) {
    T* a = acc + m * ld;
    const T* tm = t + m * p.C;
    const T* sm = s + m * p.C;
    const T ym = y[m];
    T sum = T(0);
    for (int w = 0; w < W; ++w) {
      a[w] += gc[w] * sm[w] - gsy[w] * ym;
      sum += tm[w] * gsy[w] + gty[w] * sm[w];
    }
    gy[m] += T(2) * ab * ym - sum;
  }
}

// Sender pass: acc[m * ld + w] += dL/ds_j[m, c0 + w] contribution of edge e (receiver i).
template <int W, typename T>
VISKRATES_HD void update_edge_backward_sender(const EdgeUpdate<T>& p, const T* g, int64_t e, int64_t i, int64_t c0,
                                              T* VISKRATES_RESTRICT acc, int64_t ld) {
  const T* t = p.target + i * p.L * p.C + c0;
  const T* ge = g + e * p.C + c0;
  const T* gate = p.gate + e * p.C + c0;
  T gc[W];  // dL/dr
  for (int w = 0; w < W; ++w) gc[w] = ge[w] * gate[w];
  if (!dihedral_has_rejection(p)) {
    for (int64_t m = 0; m < p.L; ++m) {
      T* a = acc + m * ld;
      for (int w = 0; w < W; ++w) a[w] += gc[w] * t[m * p.C + w];
    }
    return;
  }
  const T* y = p.harmonics + e * p.L;
  const T excess = dihedral_excess(p, e);
  T gty[W];
  for (int w = 0; w < W; ++w) gty[w] = T(0);
  for (int64_t m = 0; m < p.L; ++m) {
    for (int w = 0; w < W; ++w) gty[w] += t[m * p.C + w] * y[m];
  }
  for (int w = 0; w < W; ++w) gty[w] *= gc[w] * excess;
  for (int64_t m = 0; m < p.L; ++m) {
    T* a = acc + m * ld;
    const T ym = y[m];
    for (int w = 0; w < W; ++w) a[w] += gc[w] * t[m * p.C + w] - gty[w] * ym;
  }
}

// ---- attention messages: m_e[c] = val_j[c]·dv_e[c]·(SiLU(S_e[h])·w_e), S_e[h] = Σ_{c∈h} q_i[c]·k_j[c]·dk_e[c] ----
// (README "Equations" §3 "Message"; heads are consecutive blocks of D = C/H channels), and their sums per receiver
// X_i = Σ_e m_e, which the layer's output projection takes (so no separate scatter of [E, C] messages and, in the
// backward, no gather of dL/dX onto the edges: g_node below). One call handles one edge and one head; the edge
// filters may be row-strided views (ld_*) of a wider projection. D0 > 0 is the head width D as a compile-time
// constant (CPU launcher), D0 = 0 reads it from p.D (CUDA launcher).

template <typename T>
struct Attention {
  const T* query;         // [N, C] q
  const T* key;           // [N, C] k
  const T* value;         // [N, C] val
  const T* key_filter;    // [E, ld_filters] dk
  const T* value_filter;  // [E, ld_filters] dv
  const T* weights;       // [E] w (the cosine cutoff φ)
  int64_t C, D;
  int64_t ld_filters;      // row stride of the filter tensor whose column blocks dk and dv are
  int64_t ld_grad_filter;  // row stride of dL/ddk and dL/ddv (column blocks of one gradient tensor)
};

template <int D0, typename T>
VISKRATES_HD T attention_score(const Attention<T>& p, int64_t e, int64_t i, int64_t j, int64_t h) {
  const int64_t D = D0 > 0 ? D0 : p.D;
  const T* q = p.query + i * p.C + h * D;
  const T* k = p.key + j * p.C + h * D;
  const T* dk = p.key_filter + e * p.ld_filters + h * D;
  T score = T(0);
  for (int64_t d = 0; d < D; ++d) score += q[d] * k[d] * dk[d];
  return score;
}

template <typename T>
VISKRATES_HD T sigmoid(T x) {
  return T(1) / (T(1) + math::exp(-x));
}

// out[e * C + c] = m_e[c] for the channels of head h, and sum[i * C + c] += m_e[c].
template <int D0, typename T>
VISKRATES_HD void attention_edge(const Attention<T>& p, int64_t e, int64_t i, int64_t j, int64_t h,
                                  T* VISKRATES_RESTRICT out, T* VISKRATES_RESTRICT sum) {
  const int64_t D = D0 > 0 ? D0 : p.D;
  const T score = attention_score<D0>(p, e, i, j, h);
  const T a = score * sigmoid(score) * p.weights[e];
  const T* v = p.value + j * p.C + h * D;
  const T* dv = p.value_filter + e * p.ld_filters + h * D;
  T* o = out + e * p.C + h * D;
  T* x = sum + i * p.C + h * D;
  for (int64_t d = 0; d < D; ++d) {
    const T m = (v[d] * dv[d]) * a;
    o[d] = m;
    x[d] += m;
  }
}

// The upstream gradients of edge e (receiver i) are g[e] = dL/dm_e [E, C] and g_node[i] = dL/dX_i [N, C]: m_e
// reaches the loss directly and through X_i.

// Upstream gradient of the attention coefficient of (edge e, head h) and its chain factors:
// returns dL/dS and sets *a = SiLU(S)·w, *silu = SiLU(S), *grad_a = dL/dA.
template <int D0, typename T>
VISKRATES_HD T attention_grad_score(const Attention<T>& p, const T* g, const T* g_node, int64_t e, int64_t i, int64_t j,
                                    int64_t h, T* a, T* silu, T* grad_a) {
  const int64_t D = D0 > 0 ? D0 : p.D;
  const T score = attention_score<D0>(p, e, i, j, h);
  const T sig = sigmoid(score);
  const T w = p.weights[e];
  *silu = score * sig;
  *a = *silu * w;
  const T* v = p.value + j * p.C + h * D;
  const T* dv = p.value_filter + e * p.ld_filters + h * D;
  const T* ge = g + e * p.C + h * D;
  const T* gx = g_node + i * p.C + h * D;
  T ga = T(0);
  for (int64_t d = 0; d < D; ++d) ga += (ge[d] + gx[d]) * v[d] * dv[d];
  *grad_a = ga;
  return ga * w * sig * (T(1) + score * (T(1) - sig));
}

// Receiver pass of the backward for (edge e, head h): writes dL/ddk_e and dL/ddv_e (rows of stride ld_grad_filter)
// for the head's channels, adds dL/dq_i to grad_query[i] and returns this head's share of dL/dw_e.
template <int D0, typename T>
VISKRATES_HD T attention_edge_backward(const Attention<T>& p, const T* g, const T* g_node, int64_t e, int64_t i,
                                       int64_t j, int64_t h, T* VISKRATES_RESTRICT grad_query,
                                       T* VISKRATES_RESTRICT grad_key_filter, T* VISKRATES_RESTRICT grad_value_filter) {
  const int64_t D = D0 > 0 ? D0 : p.D;
  T a, silu, grad_a;
  const T grad_score = attention_grad_score<D0>(p, g, g_node, e, i, j, h, &a, &silu, &grad_a);
  const int64_t c0 = h * D;
  const T* q = p.query + i * p.C + c0;
  const T* k = p.key + j * p.C + c0;
  const T* v = p.value + j * p.C + c0;
  const T* dk = p.key_filter + e * p.ld_filters + c0;
  const T* ge = g + e * p.C + c0;
  const T* gx = g_node + i * p.C + c0;
  T* gq = grad_query + i * p.C + c0;
  for (int64_t d = 0; d < D; ++d) {
    grad_value_filter[e * p.ld_grad_filter + c0 + d] = (ge[d] + gx[d]) * v[d] * a;
    grad_key_filter[e * p.ld_grad_filter + c0 + d] = grad_score * q[d] * k[d];
    gq[d] += grad_score * k[d] * dk[d];
  }
  return grad_a * silu;
}

// Sender pass for (edge e, head h): adds dL/dk_j and dL/dval_j to grad_key[j], grad_value[j].
template <int D0, typename T>
VISKRATES_HD void attention_edge_backward_sender(const Attention<T>& p, const T* g, const T* g_node, int64_t e,
                                                 int64_t i, int64_t j, int64_t h, T* VISKRATES_RESTRICT grad_key,
                                                 T* VISKRATES_RESTRICT grad_value) {
  const int64_t D = D0 > 0 ? D0 : p.D;
  T a, silu, grad_a;
  const T grad_score = attention_grad_score<D0>(p, g, g_node, e, i, j, h, &a, &silu, &grad_a);
  const int64_t c0 = h * D;
  const T* q = p.query + i * p.C + c0;
  const T* dk = p.key_filter + e * p.ld_filters + c0;
  const T* dv = p.value_filter + e * p.ld_filters + c0;
  const T* ge = g + e * p.C + c0;
  const T* gx = g_node + i * p.C + c0;
  T* gk = grad_key + j * p.C + c0;
  T* gv = grad_value + j * p.C + c0;
  for (int64_t d = 0; d < D; ++d) {
    gk[d] += grad_score * q[d] * dk[d];
    gv[d] += (ge[d] + gx[d]) * dv[d] * a;
  }
}

}  // namespace vismp
}  // namespace viskrates
