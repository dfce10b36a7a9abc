// Fused ViS-MP ops (ViSNet message passing without [E, L, C] intermediates): schemas, input checks and
// the CPU launchers (at::parallel_for over receivers for the forward and the per-edge gradients, over
// senders for the gradients of the senders' features; no atomics, so results do not depend on the
// number of threads). Kernel bodies: cpp/vismp_kernel.h. Contract and pure-PyTorch references:
// python/viskrates/ops.py (vismp_attention_reference, vismp_vector_message_reference,
// vismp_edge_update_reference).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>

// Let GCC reorder the floating-point sums of the kernel bodies (cpp/vismp_kernel.h, included below) so the
// channel reductions vectorise. The order is still fixed at compile time: results stay deterministic.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("associative-math", "no-signed-zeros", "no-trapping-math")
#endif
#include "vismp.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

namespace viskrates {

VismpGraph check_vismp_graph(const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers,
                             const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges) {
  const at::Tensor* all[] = {&row_ptr, &receivers, &senders, &col_ptr, &col_edges};
  const char* names[] = {"row_ptr", "receivers", "senders", "col_ptr", "col_edges"};
  for (int k = 0; k < 5; ++k) {
    TORCH_CHECK_VALUE(all[k]->dim() == 1 && all[k]->scalar_type() == at::kLong, op, ": ", names[k],
                      " must be a 1-d int64 tensor, got ", all[k]->scalar_type(), " of shape ", all[k]->sizes());
    TORCH_CHECK_VALUE(all[k]->device() == row_ptr.device(), op, ": ", names[k], " is on ", all[k]->device(),
                      " but row_ptr on ", row_ptr.device());
  }
  VismpGraph g;
  g.num_nodes = row_ptr.size(0) - 1;
  g.num_edges = receivers.size(0);
  TORCH_CHECK_VALUE(g.num_nodes >= 0 && col_ptr.size(0) == row_ptr.size(0), op,
                    ": row_ptr and col_ptr must both have N + 1 entries, got ", row_ptr.size(0), " and ",
                    col_ptr.size(0));
  TORCH_CHECK_VALUE(senders.size(0) == g.num_edges && col_edges.size(0) == g.num_edges, op,
                    ": receivers, senders and col_edges must have one entry per edge, got ", g.num_edges, ", ",
                    senders.size(0), " and ", col_edges.size(0));
  g.row_ptr = row_ptr.contiguous();
  g.receivers = receivers.contiguous();
  g.senders = senders.contiguous();
  g.col_ptr = col_ptr.contiguous();
  g.col_edges = col_edges.contiguous();
  return g;
}

at::Tensor check_vismp_features(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                                const at::Tensor& like) {
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  for (size_t k = 0; ok && k < shape.size(); ++k) ok = shape[k] < 0 || t.size(k) == shape[k];
  TORCH_CHECK_VALUE(ok, op, ": ", name, " has shape ", t.sizes(), ", expected ", shape, " (-1: any size)");
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": ", name,
                    " must have the dtype and device of the other features (", like.scalar_type(), ", ",
                    like.device(), "), got ", t.scalar_type(), ", ", t.device());
  return t.contiguous();
}

at::Tensor check_vismp_rows(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t columns,
                            const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == rows && t.size(1) == columns, op, ": ", name, " has shape ",
                    t.sizes(), ", expected [", rows, ", ", columns, "]");
  TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": ", name,
                    " must have the dtype and device of ", like.scalar_type(), ", ", like.device(), ", got ",
                    t.scalar_type(), ", ", t.device());
  return (t.stride(1) == 1 && t.stride(0) >= columns) ? t : t.contiguous();
}

// Receivers per parallel chunk: each one costs ~degree·L·C multiply-adds.
constexpr int64_t kGrain = 8;

// The sender passes of the backward visit the edges in the transposed order (col_edges), so the per-edge rows
// they read are scattered over [E, C] arrays far larger than the caches and each row would stall on memory.
// Requesting the rows of the edge kPrefetchAhead places further on hides that latency (measured: the backward
// ops up to 30 % faster).
constexpr int64_t kPrefetchAhead = 4;

// Requests the cache lines of row[0 .. count-1].
template <typename T>
inline void prefetch_row(const T* row, int64_t count) {
#if defined(__GNUC__)
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < count * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(bytes + b);
#endif
}

VectorMessageInputs check_vector_message(const at::Tensor& row_ptr, const at::Tensor& receivers,
                                         const at::Tensor& senders, const at::Tensor& col_ptr,
                                         const at::Tensor& col_edges, const std::optional<at::Tensor>& vectors,
                                         const at::Tensor& filters, const at::Tensor& harmonics,
                                         const std::optional<at::Tensor>& weights) {
  const char* op = "viskrates::vismp_vector_message";
  VectorMessageInputs in;
  in.graph = check_vismp_graph(op, row_ptr, receivers, senders, col_ptr, col_edges);
  const int64_t n = in.graph.num_nodes, e = in.graph.num_edges;
  const bool has_vectors = vectors.has_value() && vectors->defined();
  TORCH_CHECK_VALUE(filters.is_floating_point() && filters.dim() == 2 && (!has_vectors || filters.size(1) % 2 == 0),
                    op, ": filters must be a floating-point [E, 2C] tensor (s1 | s2), or [E, C] (s2) without vectors, "
                    "got ", filters.sizes());
  in.C = has_vectors ? filters.size(1) / 2 : filters.size(1);
  // the filters keep their row stride (a view of a wider projection is not copied)
  in.filters = check_vismp_rows(op, "filters", filters, e, filters.size(1), filters);
  in.harmonics = check_vismp_features(op, "harmonics", harmonics, {e, -1}, filters);
  in.L = harmonics.size(1);
  TORCH_CHECK_VALUE(in.L >= 1 && in.L <= vismp::kMaxComponents, op, ": harmonics must have 1..",
                    vismp::kMaxComponents, " components, got ", in.L);
  if (has_vectors) in.vectors = check_vismp_features(op, "vectors", *vectors, {n, in.L, in.C}, filters);
  if (weights.has_value() && weights->defined()) {
    in.weights = check_vismp_features(op, "weights", *weights, {e}, filters);
  }
  TORCH_CHECK_VALUE(row_ptr.device() == filters.device(), op, ": the graph is on ", row_ptr.device(),
                    " but the features on ", filters.device());
  return in;
}

namespace {

at::Tensor vector_message_cpu(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                              const at::Tensor& col_ptr, const at::Tensor& col_edges,
                              const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                              const at::Tensor& harmonics, const std::optional<at::Tensor>& weights) {
  const VectorMessageInputs in =
      check_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights);
  const int64_t n = in.graph.num_nodes, L = in.L, C = in.C;
  at::Tensor out = at::empty({n, L, C}, in.filters.options());
  AT_DISPATCH_FLOATING_TYPES(in.filters.scalar_type(), "vismp_vector_message_cpu", [&] {
    const vismp::VectorMessage<scalar_t> p = vector_message_params<scalar_t>(in);
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* acc = o + i * L * C;
        std::fill(acc, acc + L * C, scalar_t(0));
        for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
          vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
            vismp::vector_message_edge<decltype(width)::value>(p, e, graph.senders[e], c0, acc + c0, C);
          });
        }
      }
    });
  });
  return out;
}

VectorMessageGrads vector_message_backward_cpu(const at::Tensor& grad, const at::Tensor& row_ptr,
                                               const at::Tensor& receivers, const at::Tensor& senders,
                                               const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                               const std::optional<at::Tensor>& vectors, const at::Tensor& filters,
                                               const at::Tensor& harmonics,
                                               const std::optional<at::Tensor>& weights) {
  const VectorMessageInputs in =
      check_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics, weights);
  const int64_t n = in.graph.num_nodes, num_edges = in.graph.num_edges, L = in.L, C = in.C;
  const at::Tensor g = check_vismp_features("viskrates::vismp_vector_message_backward", "grad", grad, {n, L, C},
                                            in.filters);
  const bool has_vectors = in.vectors.defined();
  at::Tensor grad_vectors = has_vectors ? at::empty({n, L, C}, g.options()) : at::Tensor();
  at::Tensor grad_filters = at::empty({num_edges, in.filters.size(1)}, g.options());
  at::Tensor grad_harmonics = at::empty({num_edges, L}, g.options());
  at::Tensor grad_weights = at::empty({num_edges}, g.options());
  AT_DISPATCH_FLOATING_TYPES(in.filters.scalar_type(), "vismp_vector_message_backward_cpu", [&] {
    const vismp::VectorMessage<scalar_t> p = vector_message_params<scalar_t>(in);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* gs1 = has_vectors ? grad_filters.data_ptr<scalar_t>() : nullptr;
    scalar_t* gs2 = grad_filters.data_ptr<scalar_t>() + (has_vectors ? C : 0);
    scalar_t* gy = grad_harmonics.data_ptr<scalar_t>();
    scalar_t* gw = grad_weights.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
          scalar_t* gye = gy + e * L;
          std::fill(gye, gye + L, scalar_t(0));
          gw[e] = scalar_t(0);
          vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
            vismp::vector_message_edge_backward<decltype(width)::value>(p, gp, e, i, graph.senders[e], c0, gs1,
                                                                        gs2, gye, gw + e);
          });
        }
      }
    });
    if (has_vectors) {
      scalar_t* gv = grad_vectors.data_ptr<scalar_t>();
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          scalar_t* acc = gv + j * L * C;
          std::fill(acc, acc + L * C, scalar_t(0));
          for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
            const int64_t e = graph.col_edges[k];
            if (k + kPrefetchAhead < num_edges) {
              prefetch_row(p.scale + graph.col_edges[k + kPrefetchAhead] * p.ld_filters, C);
            }
            vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
              vismp::vector_message_edge_backward_sender<decltype(width)::value>(p, gp, e, graph.receivers[e], c0,
                                                                                 acc + c0, C);
            });
          }
        }
      });
    }
  });
  return {grad_vectors, grad_filters, grad_harmonics, in.weights.defined() ? grad_weights : at::Tensor()};
}

}  // namespace

EdgeUpdateInputs check_edge_update(const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers,
                                   const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                   const std::optional<at::Tensor>& edge_features, const at::Tensor& gate,
                                   const at::Tensor& target, const at::Tensor& source, const at::Tensor& harmonics) {
  EdgeUpdateInputs in;
  in.graph = check_vismp_graph(op, row_ptr, receivers, senders, col_ptr, col_edges);
  TORCH_CHECK_VALUE(target.is_floating_point() && target.dim() == 3, op,
                    ": target must be a floating-point [N, L, C] tensor, got ", target.sizes());
  in.L = target.size(1);
  in.C = target.size(2);
  TORCH_CHECK_VALUE(in.L >= 1 && in.L <= vismp::kMaxComponents, op, ": at most ", vismp::kMaxComponents,
                    " harmonic components are supported, got ", in.L);
  in.target = check_vismp_features(op, "target", target, {in.graph.num_nodes, in.L, in.C}, target);
  in.source = check_vismp_features(op, "source", source, {in.graph.num_nodes, in.L, in.C}, target);
  in.harmonics = check_vismp_features(op, "harmonics", harmonics, {in.graph.num_edges, in.L}, target);
  in.gate = check_vismp_features(op, "gate", gate, {in.graph.num_edges, in.C}, target);
  if (edge_features.has_value()) {
    in.edge_features = check_vismp_features(op, "edge_features", *edge_features, {in.graph.num_edges, in.C}, target);
  }
  TORCH_CHECK_VALUE(row_ptr.device() == target.device(), op, ": the graph is on ", row_ptr.device(),
                    " but the features on ", target.device());
  return in;
}

namespace {

at::Tensor edge_update_cpu(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                           const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& edge_features,
                           const at::Tensor& gate, const at::Tensor& target, const at::Tensor& source,
                           const at::Tensor& harmonics) {
  const EdgeUpdateInputs in = check_edge_update("viskrates::vismp_edge_update", row_ptr, receivers, senders, col_ptr,
                                                col_edges, edge_features, gate, target, source, harmonics);
  const int64_t n = in.graph.num_nodes, C = in.C;
  at::Tensor out = at::empty({in.graph.num_edges, C}, in.target.options());
  AT_DISPATCH_FLOATING_TYPES(in.target.scalar_type(), "vismp_edge_update_cpu", [&] {
    const vismp::EdgeUpdate<scalar_t> p = edge_update_params<scalar_t>(in);
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
          vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
            vismp::update_edge<decltype(width)::value>(p, e, i, graph.senders[e], c0, o);
          });
        }
      }
    });
  });
  return out;
}

EdgeUpdateGrads edge_update_backward_cpu(const at::Tensor& grad, const at::Tensor& row_ptr, const at::Tensor& receivers,
                                         const at::Tensor& senders, const at::Tensor& col_ptr,
                                         const at::Tensor& col_edges, const at::Tensor& gate, const at::Tensor& target,
                                         const at::Tensor& source, const at::Tensor& harmonics) {
  const char* op = "viskrates::vismp_edge_update_backward";
  const EdgeUpdateInputs in = check_edge_update(op, row_ptr, receivers, senders, col_ptr, col_edges, std::nullopt, gate,
                                                target, source, harmonics);
  const int64_t n = in.graph.num_nodes, num_edges = in.graph.num_edges, L = in.L, C = in.C;
  const at::Tensor g = check_vismp_features(op, "grad", grad, {in.graph.num_edges, C}, in.target);
  at::Tensor grad_gate = at::empty({num_edges, C}, g.options());
  at::Tensor grad_target = at::empty({n, L, C}, g.options());
  at::Tensor grad_source = at::empty({n, L, C}, g.options());
  at::Tensor grad_harmonics = at::empty({in.graph.num_edges, L}, g.options());
  AT_DISPATCH_FLOATING_TYPES(in.target.scalar_type(), "vismp_edge_update_backward_cpu", [&] {
    const vismp::EdgeUpdate<scalar_t> p = edge_update_params<scalar_t>(in);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* gg = grad_gate.data_ptr<scalar_t>();
    scalar_t* gt = grad_target.data_ptr<scalar_t>();
    scalar_t* gs = grad_source.data_ptr<scalar_t>();
    scalar_t* gy = grad_harmonics.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* acc = gt + i * L * C;
        std::fill(acc, acc + L * C, scalar_t(0));
        for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
          scalar_t* gye = gy + e * L;
          std::fill(gye, gye + L, scalar_t(0));
          vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
            vismp::update_edge_backward<decltype(width)::value>(p, gp, e, i, graph.senders[e], c0, gg, acc + c0, C,
                                                                gye);
          });
        }
      }
    });
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        scalar_t* acc = gs + j * L * C;
        std::fill(acc, acc + L * C, scalar_t(0));
        for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
          const int64_t e = graph.col_edges[k];
          if (k + kPrefetchAhead < num_edges) {
            const int64_t ahead = graph.col_edges[k + kPrefetchAhead];
            prefetch_row(gp + ahead * C, C);
            prefetch_row(p.gate + ahead * C, C);
          }
          vismp::for_channel_blocks(C, [&](auto width, int64_t c0) {
            vismp::update_edge_backward_sender<decltype(width)::value>(p, gp, e, graph.receivers[e], c0, acc + c0, C);
          });
        }
      }
    });
  });
  return {grad_gate, grad_target, grad_source, grad_harmonics};
}

}  // namespace

AttentionInputs check_attention(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                                const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& query,
                                const at::Tensor& key, const at::Tensor& value, const at::Tensor& filters,
                                const at::Tensor& weights, int64_t num_heads) {
  const char* op = "viskrates::vismp_attention";
  AttentionInputs in;
  in.graph = check_vismp_graph(op, row_ptr, receivers, senders, col_ptr, col_edges);
  const int64_t n = in.graph.num_nodes, e = in.graph.num_edges;
  TORCH_CHECK_VALUE(query.is_floating_point() && query.dim() == 2, op,
                    ": query must be a floating-point [N, C] tensor, got ", query.sizes());
  in.C = query.size(1);
  in.H = num_heads;
  TORCH_CHECK_VALUE(num_heads >= 1 && in.C % num_heads == 0, op, ": num_heads (", num_heads,
                    ") must divide the number of channels (", in.C, ")");
  in.query = check_vismp_features(op, "query", query, {n, in.C}, query);
  in.key = check_vismp_features(op, "key", key, {n, in.C}, query);
  in.value = check_vismp_features(op, "value", value, {n, in.C}, query);
  in.weights = check_vismp_features(op, "weights", weights, {e}, query);
  // the filters keep their row stride (a view of a wider projection is not copied)
  in.filters = check_vismp_rows(op, "filters", filters, e, 2 * in.C, query);
  TORCH_CHECK_VALUE(row_ptr.device() == query.device(), op, ": the graph is on ", row_ptr.device(),
                    " but the features on ", query.device());
  return in;
}

namespace {

std::tuple<at::Tensor, at::Tensor> attention_cpu(const at::Tensor& row_ptr, const at::Tensor& receivers,
                                                 const at::Tensor& senders, const at::Tensor& col_ptr,
                                                 const at::Tensor& col_edges, const at::Tensor& query,
                                                 const at::Tensor& key, const at::Tensor& value,
                                                 const at::Tensor& filters, const at::Tensor& weights,
                                                 int64_t num_heads) {
  const AttentionInputs in = check_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value,
                                             filters, weights, num_heads);
  const int64_t n = in.graph.num_nodes, H = in.H;
  at::Tensor out = at::empty({in.graph.num_edges, in.C}, in.query.options());
  at::Tensor sums = at::zeros({n, in.C}, in.query.options());
  AT_DISPATCH_FLOATING_TYPES(in.query.scalar_type(), "vismp_attention_cpu", [&] {
    const vismp::Attention<scalar_t> p = attention_params<scalar_t>(in);
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* x = sums.data_ptr<scalar_t>();
    vismp::with_head_width(p.D, [&](auto width) {
      constexpr int D0 = decltype(width)::value;
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
            for (int64_t h = 0; h < H; ++h) vismp::attention_edge<D0>(p, e, i, graph.senders[e], h, o, x);
          }
        }
      });
    });
  });
  return {out, sums};
}

AttentionGrads attention_backward_cpu(const at::Tensor& grad, const at::Tensor& grad_sums, const at::Tensor& row_ptr,
                                      const at::Tensor& receivers, const at::Tensor& senders,
                                      const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& query,
                                      const at::Tensor& key, const at::Tensor& value, const at::Tensor& filters,
                                      const at::Tensor& weights, int64_t num_heads) {
  const char* op = "viskrates::vismp_attention_backward";
  const AttentionInputs in = check_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value,
                                             filters, weights, num_heads);
  const int64_t n = in.graph.num_nodes, num_edges = in.graph.num_edges, C = in.C, H = in.H;
  const at::Tensor g = check_vismp_features(op, "grad", grad, {num_edges, C}, in.query);
  const at::Tensor g_node = check_vismp_features(op, "grad_sums", grad_sums, {n, C}, in.query);
  at::Tensor grad_query = at::zeros({n, C}, g.options());
  at::Tensor grad_key = at::zeros({n, C}, g.options());
  at::Tensor grad_value = at::zeros({n, C}, g.options());
  at::Tensor grad_filters = at::empty({num_edges, 2 * C}, g.options());
  at::Tensor grad_weights = at::empty({num_edges}, g.options());
  AT_DISPATCH_FLOATING_TYPES(in.query.scalar_type(), "vismp_attention_backward_cpu", [&] {
    const vismp::Attention<scalar_t> p = attention_params<scalar_t>(in);
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* gx = g_node.data_ptr<scalar_t>();
    const vismp::Graph<scalar_t> graph = graph_pointers<scalar_t>(in.graph);
    scalar_t* gq = grad_query.data_ptr<scalar_t>();
    scalar_t* gk = grad_key.data_ptr<scalar_t>();
    scalar_t* gv = grad_value.data_ptr<scalar_t>();
    scalar_t* gdk = grad_filters.data_ptr<scalar_t>();
    scalar_t* gdv = gdk + C;
    scalar_t* gw = grad_weights.data_ptr<scalar_t>();
    vismp::with_head_width(p.D, [&](auto width) {
      constexpr int D0 = decltype(width)::value;
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          for (int64_t e = graph.row_ptr[i]; e < graph.row_ptr[i + 1]; ++e) {
            scalar_t sum = scalar_t(0);
            for (int64_t h = 0; h < H; ++h) {
              sum += vismp::attention_edge_backward<D0>(p, gp, gx, e, i, graph.senders[e], h, gq, gdk, gdv);
            }
            gw[e] = sum;
          }
        }
      });
      at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          for (int64_t k = graph.col_ptr[j]; k < graph.col_ptr[j + 1]; ++k) {
            const int64_t e = graph.col_edges[k];
            if (k + kPrefetchAhead < num_edges) {
              const int64_t ahead = graph.col_edges[k + kPrefetchAhead];
              prefetch_row(gp + ahead * C, C);
              prefetch_row(p.key_filter + ahead * p.ld_filters, C);
              prefetch_row(p.value_filter + ahead * p.ld_filters, C);
            }
            for (int64_t h = 0; h < H; ++h) {
              vismp::attention_edge_backward_sender<D0>(p, gp, gx, e, graph.receivers[e], j, h, gk, gv);
            }
          }
        }
      });
    });
  });
  return {grad_query, grad_key, grad_value, grad_filters, grad_weights};
}

}  // namespace

// Schemas (a fragment of the viskrates library defined in cpp/ops.cpp). The *_backward ops are the
// gradients the autograd wrappers (cpp/vismp_autograd.cpp) call; they are not differentiable.
TORCH_LIBRARY_FRAGMENT(viskrates, m) {
  m.def(
      "vismp_vector_message(Tensor row_ptr, Tensor receivers, Tensor senders, Tensor col_ptr, Tensor col_edges, "
      "Tensor? vectors, Tensor filters, Tensor harmonics, Tensor? weights) -> Tensor");
  m.def(
      "vismp_vector_message_backward(Tensor grad, Tensor row_ptr, Tensor receivers, Tensor senders, "
      "Tensor col_ptr, Tensor col_edges, Tensor? vectors, Tensor filters, Tensor harmonics, Tensor? weights) -> "
      "(Tensor grad_vectors, Tensor grad_filters, Tensor grad_harmonics, Tensor grad_weights)");
  m.def(
      "vismp_edge_update(Tensor row_ptr, Tensor receivers, Tensor senders, Tensor col_ptr, Tensor col_edges, "
      "Tensor edge_features, Tensor gate, Tensor target, Tensor source, Tensor harmonics) -> Tensor");
  m.def(
      "vismp_edge_update_backward(Tensor grad, Tensor row_ptr, Tensor receivers, Tensor senders, Tensor col_ptr, "
      "Tensor col_edges, Tensor gate, Tensor target, Tensor source, Tensor harmonics) -> "
      "(Tensor grad_gate, Tensor grad_target, Tensor grad_source, Tensor grad_harmonics)");
  m.def(
      "vismp_attention(Tensor row_ptr, Tensor receivers, Tensor senders, Tensor col_ptr, Tensor col_edges, "
      "Tensor query, Tensor key, Tensor value, Tensor filters, Tensor weights, int num_heads) -> "
      "(Tensor messages, Tensor sums)");
  m.def(
      "vismp_attention_backward(Tensor grad, Tensor grad_sums, Tensor row_ptr, Tensor receivers, Tensor senders, "
      "Tensor col_ptr, "
      "Tensor col_edges, Tensor query, Tensor key, Tensor value, Tensor filters, Tensor weights, int num_heads) -> "
      "(Tensor grad_query, Tensor grad_key, Tensor grad_value, Tensor grad_filters, Tensor grad_weights)");
}

TORCH_LIBRARY_IMPL(viskrates, CPU, m) {
  m.impl("vismp_vector_message", &vector_message_cpu);
  m.impl("vismp_vector_message_backward", &vector_message_backward_cpu);
  m.impl("vismp_edge_update", &edge_update_cpu);
  m.impl("vismp_edge_update_backward", &edge_update_backward_cpu);
  m.impl("vismp_attention", &attention_cpu);
  m.impl("vismp_attention_backward", &attention_backward_cpu);
}

}  // namespace viskrates
