// Fused SO3krates Euclidean attention (viskrates::euclidean_attention): schema, input checks and the CPU
// launcher (at::parallel_for over receivers for the forward and the receiver pass of the backward, over
// senders and filter rows for the other gradients; every output element has one writer, so results do not
// depend on the number of threads). Kernel bodies: cpp/euclidean_attention_kernel.h. Contract and
// pure-PyTorch reference: python/viskrates/ops.py (euclidean_attention_reference).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>

#if defined(__GNUC__) && !defined(__clang__)
// Let GCC vectorise the head-dimension sums of the kernel bodies; the order is fixed at compile time, so
// results stay deterministic.
#pragma GCC optimize("associative-math", "no-signed-zeros", "no-trapping-math")
#endif
#include "euclidean_attention.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace viskrates {

namespace {

at::Tensor check_index(const char* op, const char* name, const at::Tensor& t, int64_t size, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.scalar_type() == at::kLong, op, ": ", name,
                    " must be a 1-d int64 tensor, got ", t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK_VALUE(size < 0 || t.size(0) == size, op, ": ", name, " must have ", size, " entries, got ", t.size(0));
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but row_ptr on ",
                    like.device());
  return t.contiguous();
}

at::Tensor check_features(const char* op, const char* name, const at::Tensor& t, std::initializer_list<int64_t> shape,
                          const at::Tensor& like) {
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  int64_t k = 0;
  for (int64_t s : shape) {
    if (!ok) break;
    ok = t.size(k++) == s;
  }
  TORCH_CHECK_VALUE(ok, op, ": ", name, " has shape ", t.sizes(), ", expected ", at::IntArrayRef(shape));
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": ", name,
                    " must have the dtype and device of x_query (", like.scalar_type(), ", ", like.device(),
                    "), got ", t.scalar_type(), ", ", t.device());
  return t.contiguous();
}

}  // namespace

EuclideanAttentionInputs check_euclidean_attention(
    const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
    const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& filter_index,
    const at::Tensor& filter_ptr, const at::Tensor& filter_edges, const at::Tensor& x_query, const at::Tensor& x_key,
    const at::Tensor& x_value, const at::Tensor& x_filter, const at::Tensor& ev_query, const at::Tensor& ev_key,
    const at::Tensor& ev_filter, const at::Tensor& harmonics, const at::Tensor& cutoff_values, double normalization) {
  EuclideanAttentionInputs in;
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.size(0) >= 1, op, ": row_ptr must be a 1-d tensor of N + 1 entries");
  TORCH_CHECK_VALUE(filter_ptr.dim() == 1 && filter_ptr.size(0) >= 1, op,
                    ": filter_ptr must be a 1-d tensor of P + 1 entries");
  TORCH_CHECK_VALUE(receivers.dim() == 1, op, ": receivers must be 1-d, got shape ", receivers.sizes());
  in.N = row_ptr.size(0) - 1;
  in.E = receivers.size(0);
  in.P = filter_ptr.size(0) - 1;
  in.row_ptr = check_index(op, "row_ptr", row_ptr, in.N + 1, row_ptr);
  in.receivers = check_index(op, "receivers", receivers, in.E, row_ptr);
  in.senders = check_index(op, "senders", senders, in.E, row_ptr);
  in.col_ptr = check_index(op, "col_ptr", col_ptr, in.N + 1, row_ptr);
  in.col_edges = check_index(op, "col_edges", col_edges, in.E, row_ptr);
  in.filter_index = check_index(op, "filter_index", filter_index, in.E, row_ptr);
  in.filter_ptr = check_index(op, "filter_ptr", filter_ptr, in.P + 1, row_ptr);
  in.filter_edges = check_index(op, "filter_edges", filter_edges, in.E, row_ptr);

  TORCH_CHECK_VALUE(x_query.is_floating_point() && x_query.dim() == 3, op,
                    ": x_query must be a floating-point [N, H, D] tensor, got ", x_query.scalar_type(), " of shape ",
                    x_query.sizes());
  TORCH_CHECK_VALUE(ev_query.dim() == 3, op, ": ev_query must be an [N, L, D] tensor, got shape ", ev_query.sizes());
  in.H = x_query.size(1);
  in.D = x_query.size(2);
  in.L = ev_query.size(1);
  TORCH_CHECK_VALUE(in.L >= 1 && in.L <= in.H, op, ": the EV branch needs 1 <= L <= H heads (one per degree), got L = ",
                    in.L, ", H = ", in.H);
  in.C = (in.L + 1) * (in.L + 1) - 1;
  in.x_query = check_features(op, "x_query", x_query, {in.N, in.H, in.D}, x_query);
  in.x_key = check_features(op, "x_key", x_key, {in.N, in.H, in.D}, x_query);
  in.x_value = check_features(op, "x_value", x_value, {in.N, in.H, in.D}, x_query);
  in.x_filter = check_features(op, "x_filter", x_filter, {in.P, in.H, in.D}, x_query);
  in.ev_query = check_features(op, "ev_query", ev_query, {in.N, in.L, in.D}, x_query);
  in.ev_key = check_features(op, "ev_key", ev_key, {in.N, in.L, in.D}, x_query);
  in.ev_filter = check_features(op, "ev_filter", ev_filter, {in.P, in.L, in.D}, x_query);
  in.harmonics = check_features(op, "harmonics", harmonics, {in.E, in.C}, x_query);
  in.cutoff_values = check_features(op, "cutoff_values", cutoff_values, {in.E}, x_query);
  TORCH_CHECK_VALUE(row_ptr.device() == x_query.device(), op, ": the graph is on ", row_ptr.device(),
                    " but the features on ", x_query.device());
  TORCH_CHECK_VALUE(std::isfinite(normalization) && normalization > 0, op,
                    ": normalization must be a positive finite number, got ", normalization);
  in.normalization = normalization;
  return in;
}

namespace {

// Receivers (or senders, filter rows) per parallel chunk: each costs ~degree·H·D multiply-adds.
constexpr int64_t kGrain = 8;

std::tuple<at::Tensor, at::Tensor> euclidean_attention_cpu(
    const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders, const at::Tensor& col_ptr,
    const at::Tensor& col_edges, const at::Tensor& filter_index, const at::Tensor& filter_ptr,
    const at::Tensor& filter_edges, const at::Tensor& x_query, const at::Tensor& x_key, const at::Tensor& x_value,
    const at::Tensor& x_filter, const at::Tensor& ev_query, const at::Tensor& ev_key, const at::Tensor& ev_filter,
    const at::Tensor& harmonics, const at::Tensor& cutoff_values, double normalization) {
  const EuclideanAttentionInputs in = check_euclidean_attention(
      "viskrates::euclidean_attention", row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr,
      filter_edges, x_query, x_key, x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values,
      normalization);
  at::Tensor dx = at::empty({in.N, in.H, in.D}, in.x_query.options());
  at::Tensor dev = at::empty({in.N, in.C}, in.x_query.options());
  AT_DISPATCH_FLOATING_TYPES(in.x_query.scalar_type(), "euclidean_attention_cpu", [&] {
    const eattn::Params<scalar_t> p = euclidean_attention_params<scalar_t>(in);
    const eattn::Graph g = euclidean_attention_graph(in);
    scalar_t* out_x = dx.data_ptr<scalar_t>();
    scalar_t* out_ev = dev.data_ptr<scalar_t>();
    const int64_t HD = in.H * in.D, C = in.C;
    eattn::with_head_width(in.D, [&](auto width) {
      constexpr int kD = decltype(width)::value;
      at::parallel_for(0, in.N, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* dx_i = out_x + i * HD;
          scalar_t* dev_i = out_ev + i * C;
          std::fill(dx_i, dx_i + HD, scalar_t(0));
          std::fill(dev_i, dev_i + C, scalar_t(0));
          for (int64_t e = g.row_ptr[i]; e < g.row_ptr[i + 1]; ++e) {
            for (int64_t h = 0; h < p.H; ++h) {
              eattn::forward_edge_head<kD>(p, e, i, g.senders[e], h, dx_i + h * p.D, dev_i);
            }
          }
        }
      });
    });
  });
  return {dx, dev};
}

EuclideanAttentionGrads euclidean_attention_backward_cpu(
    const at::Tensor& grad_dx, const at::Tensor& grad_dev, const at::Tensor& row_ptr, const at::Tensor& receivers,
    const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& filter_index,
    const at::Tensor& filter_ptr, const at::Tensor& filter_edges, const at::Tensor& x_query, const at::Tensor& x_key,
    const at::Tensor& x_value, const at::Tensor& x_filter, const at::Tensor& ev_query, const at::Tensor& ev_key,
    const at::Tensor& ev_filter, const at::Tensor& harmonics, const at::Tensor& cutoff_values, double normalization) {
  const char* op = "viskrates::euclidean_attention_backward";
  const EuclideanAttentionInputs in = check_euclidean_attention(
      op, row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges, x_query, x_key,
      x_value, x_filter, ev_query, ev_key, ev_filter, harmonics, cutoff_values, normalization);
  const at::Tensor g_dx = check_features(op, "grad_dx", grad_dx, {in.N, in.H, in.D}, in.x_query);
  const at::Tensor g_dev = check_features(op, "grad_dev", grad_dev, {in.N, in.C}, in.x_query);
  const auto opts = in.x_query.options();
  at::Tensor gxq = at::empty({in.N, in.H, in.D}, opts), gxk = at::empty({in.N, in.H, in.D}, opts);
  at::Tensor gxv = at::empty({in.N, in.H, in.D}, opts), gxw = at::empty({in.P, in.H, in.D}, opts);
  at::Tensor geq = at::empty({in.N, in.L, in.D}, opts), gek = at::empty({in.N, in.L, in.D}, opts);
  at::Tensor gew = at::empty({in.P, in.L, in.D}, opts);
  at::Tensor gy = at::empty({in.E, in.C}, opts), gcut = at::empty({in.E}, opts);
  at::Tensor scratch = at::empty({2 * in.E * (in.H + in.L)}, opts);
  AT_DISPATCH_FLOATING_TYPES(in.x_query.scalar_type(), "euclidean_attention_backward_cpu", [&] {
    const eattn::Params<scalar_t> p = euclidean_attention_params<scalar_t>(in);
    const eattn::Graph g = euclidean_attention_graph(in);
    const int64_t E = in.E, H = in.H, L = in.L, D = in.D;
    scalar_t* base = scratch.data_ptr<scalar_t>();
    const eattn::EdgeScalars<scalar_t> sc{base, base + E * H, base + E * (H + L), base + E * (2 * H + L)};
    const scalar_t* gdx = g_dx.data_ptr<scalar_t>();
    const scalar_t* gdev = g_dev.data_ptr<scalar_t>();
    scalar_t *pxq = gxq.data_ptr<scalar_t>(), *pxk = gxk.data_ptr<scalar_t>(), *pxv = gxv.data_ptr<scalar_t>();
    scalar_t *pxw = gxw.data_ptr<scalar_t>(), *peq = geq.data_ptr<scalar_t>(), *pek = gek.data_ptr<scalar_t>();
    scalar_t *pew = gew.data_ptr<scalar_t>(), *py = gy.data_ptr<scalar_t>(), *pcut = gcut.data_ptr<scalar_t>();
    eattn::with_head_width(D, [&](auto width) {
      constexpr int kD = decltype(width)::value;
      at::parallel_for(0, in.N, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          std::fill(pxq + i * H * D, pxq + (i + 1) * H * D, scalar_t(0));
          std::fill(peq + i * L * D, peq + (i + 1) * L * D, scalar_t(0));
          for (int64_t e = g.row_ptr[i]; e < g.row_ptr[i + 1]; ++e) {
            for (int64_t h = 0; h < H; ++h) {
              eattn::backward_receiver_edge_head<kD>(p, gdx, gdev, e, i, g.senders[e], h, pxq + (i * H + h) * D,
                                                 h < L ? peq + (i * L + h) * D : nullptr, py, sc);
            }
            pcut[e] = eattn::cutoff_grad_edge(p, sc, e);
          }
        }
      });
      at::parallel_for(0, in.N, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          std::fill(pxk + j * H * D, pxk + (j + 1) * H * D, scalar_t(0));
          std::fill(pxv + j * H * D, pxv + (j + 1) * H * D, scalar_t(0));
          std::fill(pek + j * L * D, pek + (j + 1) * L * D, scalar_t(0));
          for (int64_t k = g.col_ptr[j]; k < g.col_ptr[j + 1]; ++k) {
            const int64_t e = g.col_edges[k];
            for (int64_t h = 0; h < H; ++h) {
              eattn::backward_sender_edge_head<kD>(p, gdx, sc, e, g.receivers[e], h, pxk + (j * H + h) * D,
                                               pxv + (j * H + h) * D, h < L ? pek + (j * L + h) * D : nullptr);
            }
          }
        }
      });
      at::parallel_for(0, in.P, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t f = begin; f < end; ++f) {
          std::fill(pxw + f * H * D, pxw + (f + 1) * H * D, scalar_t(0));
          std::fill(pew + f * L * D, pew + (f + 1) * L * D, scalar_t(0));
          for (int64_t k = g.filter_ptr[f]; k < g.filter_ptr[f + 1]; ++k) {
            const int64_t e = g.filter_edges[k];
            for (int64_t h = 0; h < H; ++h) {
              eattn::backward_filter_edge_head<kD>(p, sc, e, g.receivers[e], g.senders[e], h, pxw + (f * H + h) * D,
                                               h < L ? pew + (f * L + h) * D : nullptr);
            }
          }
        }
      });
    });
  });
  return {gxq, gxk, gxv, gxw, geq, gek, gew, gy, gcut};
}

}  // namespace

// Schema (a fragment of the viskrates library defined in cpp/ops.cpp). The _backward op is the gradient the
// autograd wrapper (cpp/euclidean_attention_autograd.cpp) calls; it is not differentiable.
TORCH_LIBRARY_FRAGMENT(viskrates, m) {
  m.def(
      "euclidean_attention(Tensor row_ptr, Tensor receivers, Tensor senders, Tensor col_ptr, Tensor col_edges, "
      "Tensor filter_index, Tensor filter_ptr, Tensor filter_edges, Tensor x_query, Tensor x_key, Tensor x_value, "
      "Tensor x_filter, Tensor ev_query, Tensor ev_key, Tensor ev_filter, Tensor harmonics, Tensor cutoff_values, "
      "float normalization) -> (Tensor dx, Tensor dev)");
  m.def(
      "euclidean_attention_backward(Tensor grad_dx, Tensor grad_dev, Tensor row_ptr, Tensor receivers, "
      "Tensor senders, Tensor col_ptr, Tensor col_edges, Tensor filter_index, Tensor filter_ptr, "
      "Tensor filter_edges, Tensor x_query, Tensor x_key, Tensor x_value, Tensor x_filter, Tensor ev_query, "
      "Tensor ev_key, Tensor ev_filter, Tensor harmonics, Tensor cutoff_values, float normalization) -> "
      "(Tensor grad_x_query, Tensor grad_x_key, Tensor grad_x_value, Tensor grad_x_filter, Tensor grad_ev_query, "
      "Tensor grad_ev_key, Tensor grad_ev_filter, Tensor grad_harmonics, Tensor grad_cutoff_values)");
}

TORCH_LIBRARY_IMPL(viskrates, CPU, m) {
  m.impl("euclidean_attention", &euclidean_attention_cpu);
  m.impl("euclidean_attention_backward", &euclidean_attention_backward_cpu);
}

}  // namespace viskrates
