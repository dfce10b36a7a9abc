// Host side of the fused ViS-MP ops shared by the CPU launchers (cpp/vismp.cpp), the CUDA glue
// (cuda/vismp_cuda.cpp) and the autograd wrappers (cpp/vismp_autograd.cpp): input checks and
// contiguous views of the inputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "vismp_kernel.h"

namespace viskrates {

// Graph tensors (int64, contiguous) of a receiver-sorted edge list and its transpose.
struct VismpGraph {
  at::Tensor row_ptr, receivers, senders, col_ptr, col_edges;
  int64_t num_nodes = 0;
  int64_t num_edges = 0;
};

// The graph as the kernel bodies take it (raw pointers of a checked VismpGraph; both launchers use this).
template <typename T>
vismp::Graph<T> graph_pointers(const VismpGraph& g) {
  return {g.row_ptr.data_ptr<int64_t>(), g.receivers.data_ptr<int64_t>(), g.senders.data_ptr<int64_t>(),
          g.col_ptr.data_ptr<int64_t>(), g.col_edges.data_ptr<int64_t>()};
}

// Checks the shapes, dtypes and devices of the graph tensors (c10::ValueError) and makes them contiguous.
VismpGraph check_vismp_graph(const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers,
                             const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges);

// Checks a floating-point feature tensor: `shape` gives the expected sizes (-1: any), the dtype and device
// must be those of `like`. Returns it contiguous.
at::Tensor check_vismp_features(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                                const at::Tensor& like);

// Checks a floating-point [rows, columns] tensor like check_vismp_features, but keeps a row stride >= columns
// (unit column stride), so column blocks of a wider tensor are read in place; copies other layouts.
at::Tensor check_vismp_rows(const char* op, const char* name, const at::Tensor& t, int64_t rows, int64_t columns,
                            const at::Tensor& like);

// Checked inputs of vismp_vector_message (vectors and weights may be undefined): contiguous, except the
// filters, which may be row-strided (check_vismp_rows): [E, 2C] = (s1 | s2), or [E, C] = s2 without vectors.
struct VectorMessageInputs {
  VismpGraph graph;
  at::Tensor vectors, filters, harmonics, weights;
  int64_t L = 0, C = 0;
};

VectorMessageInputs check_vector_message(const at::Tensor& row_ptr, const at::Tensor& receivers,
                                         const at::Tensor& senders, const at::Tensor& col_ptr,
                                         const at::Tensor& col_edges, const std::optional<at::Tensor>& vectors,
                                         const at::Tensor& filters, const at::Tensor& harmonics,
                                         const std::optional<at::Tensor>& weights);

// Raw pointers and sizes of checked inputs, as the kernel bodies take them (both launchers use these); the
// filter gradient is one contiguous tensor of the filters' shape.
template <typename T>
vismp::VectorMessage<T> vector_message_params(const VectorMessageInputs& in) {
  const T* filters = in.filters.data_ptr<T>();
  return {in.vectors.defined() ? in.vectors.data_ptr<T>() : nullptr,
          filters,
          in.vectors.defined() ? filters + in.C : filters,
          in.harmonics.data_ptr<T>(),
          in.weights.defined() ? in.weights.data_ptr<T>() : nullptr,
          in.L,
          in.C,
          in.filters.stride(0),
          in.filters.size(1)};
}

// Checked, contiguous inputs of vismp_edge_update (edge_features undefined in the backward, which does not read it).
struct EdgeUpdateInputs {
  VismpGraph graph;
  at::Tensor edge_features, gate, target, source, harmonics;
  int64_t L = 0, C = 0;
};

EdgeUpdateInputs check_edge_update(const char* op, const at::Tensor& row_ptr, const at::Tensor& receivers,
                                   const at::Tensor& senders, const at::Tensor& col_ptr, const at::Tensor& col_edges,
                                   const std::optional<at::Tensor>& edge_features, const at::Tensor& gate,
                                   const at::Tensor& target, const at::Tensor& source, const at::Tensor& harmonics);

template <typename T>
vismp::EdgeUpdate<T> edge_update_params(const EdgeUpdateInputs& in) {
  return {in.target.data_ptr<T>(),
          in.source.data_ptr<T>(),
          in.harmonics.data_ptr<T>(),
          in.edge_features.defined() ? in.edge_features.data_ptr<T>() : nullptr,
          in.gate.data_ptr<T>(),
          in.L,
          in.C};
}

// Checked inputs of vismp_attention: query, key, value contiguous; the edge filters [E, 2C] = (dk | dv) may be
// row-strided (unit column stride).
struct AttentionInputs {
  VismpGraph graph;
  at::Tensor query, key, value, filters, weights;
  int64_t C = 0, H = 0;
};

AttentionInputs check_attention(const at::Tensor& row_ptr, const at::Tensor& receivers, const at::Tensor& senders,
                                const at::Tensor& col_ptr, const at::Tensor& col_edges, const at::Tensor& query,
                                const at::Tensor& key, const at::Tensor& value, const at::Tensor& filters,
                                const at::Tensor& weights, int64_t num_heads);

// The filter gradient is one contiguous [E, 2C] tensor.
template <typename T>
vismp::Attention<T> attention_params(const AttentionInputs& in) {
  const T* filters = in.filters.data_ptr<T>();
  return {in.query.data_ptr<T>(), in.key.data_ptr<T>(),    in.value.data_ptr<T>(), filters,
          filters + in.C,         in.weights.data_ptr<T>(), in.C,                   in.C / in.H,
          in.filters.stride(0),   2 * in.C};
}

// (grad_query, grad_key, grad_value, grad_filters, grad_weights)
using AttentionGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// (grad_vectors, grad_filters, grad_harmonics, grad_weights)
using VectorMessageGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// (grad_gate, grad_target, grad_source, grad_harmonics)
using EdgeUpdateGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

}  // namespace viskrates
