// Host side of viskrates::rgc_geometry shared by the CPU launcher (cpp/rgc.cpp), the CUDA glue
// (cuda/rgc_cuda.cpp) and the autograd wrapper (cpp/rgc_autograd.cpp): input checks and kernel parameters.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "rgc_kernel.h"

namespace viskrates {

// Checked, contiguous inputs of rgc_geometry.
struct RgcInputs {
  at::Tensor edge_vectors, receivers, senders, means, betas;
  double cutoff = 0.0, alpha = 0.0;
  int64_t num_edges = 0, L = 0, K = 0;
};

// Checks shapes, dtypes, devices and the scalar arguments (c10::ValueError naming the problem).
RgcInputs check_rgc(const at::Tensor& edge_vectors, const at::Tensor& receivers, const at::Tensor& senders,
                    double cutoff, int64_t lmax, const at::Tensor& means, const at::Tensor& betas, double alpha);

// Checks an optional upstream gradient (undefined: none) of shape `shape` against the inputs; contiguous.
at::Tensor check_rgc_grad(const char* name, const at::Tensor& grad, at::IntArrayRef shape, const RgcInputs& in);

template <typename T>
rgc::Geometry<T> rgc_params(const RgcInputs& in) {
  return {in.edge_vectors.data_ptr<T>(), in.receivers.data_ptr<int64_t>(), in.senders.data_ptr<int64_t>(),
          in.means.data_ptr<T>(),        in.betas.data_ptr<T>(),           static_cast<T>(in.cutoff),
          static_cast<T>(in.alpha),      in.L,                             in.K};
}

inline const char* rgc_op_name() { return "viskrates::rgc_geometry"; }

// (harmonics [E, L], cutoff_weights [E], radial [E, K])
using RgcOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
// (grad_edge_vectors [E, 3], grad_means [K], grad_betas [K]); the basis gradients are undefined unless asked
using RgcGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

}  // namespace viskrates
