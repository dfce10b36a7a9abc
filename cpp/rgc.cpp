// viskrates::rgc_geometry (ViSNet's runtime geometry calculation per edge): schema, input checks and the CPU
// launcher (at::parallel_for over edges; each output element has one writer, so results do not depend on
// the number of threads). Kernel body: cpp/rgc_kernel.h. Contract and pure-PyTorch reference:
// python/viskrates/ops.py (rgc_geometry_reference).
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "rgc.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

namespace viskrates {

RgcInputs check_rgc(const at::Tensor& edge_vectors, const at::Tensor& receivers, const at::Tensor& senders,
                    double cutoff, int64_t lmax, const at::Tensor& means, const at::Tensor& betas, double alpha) {
  const char* op = rgc_op_name();
  TORCH_CHECK_VALUE(edge_vectors.is_floating_point() && edge_vectors.dim() == 2 && edge_vectors.size(1) == 3, op,
                    ": edge_vectors must be a floating-point [E, 3] tensor, got ", edge_vectors.scalar_type(),
                    " of shape ", edge_vectors.sizes());
  RgcInputs in;
  in.num_edges = edge_vectors.size(0);
  const at::Tensor* index[] = {&receivers, &senders};
  const char* index_names[] = {"receivers", "senders"};
  for (int k = 0; k < 2; ++k) {
    const at::Tensor& t = *index[k];
    TORCH_CHECK_VALUE(t.dim() == 1 && t.scalar_type() == at::kLong && t.size(0) == in.num_edges, op, ": ",
                      index_names[k], " must be an int64 [E] tensor with E = ", in.num_edges, ", got ",
                      t.scalar_type(), " of shape ", t.sizes());
    TORCH_CHECK_VALUE(t.device() == edge_vectors.device(), op, ": ", index_names[k], " is on ", t.device(),
                      " but edge_vectors on ", edge_vectors.device());
  }
  TORCH_CHECK_VALUE(lmax == 1 || lmax == 2, op, ": lmax must be 1 or 2 (ViSNet's harmonics), got ", lmax);
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0.0, op, ": cutoff must be finite and > 0, got ", cutoff);
  TORCH_CHECK_VALUE(std::isfinite(alpha), op, ": alpha must be finite, got ", alpha);
  TORCH_CHECK_VALUE(means.dim() == 1 && betas.dim() == 1 && means.size(0) == betas.size(0), op,
                    ": means and betas must be [K] tensors of the same length, got ", means.sizes(), " and ",
                    betas.sizes());
  const at::Tensor* basis[] = {&means, &betas};
  const char* basis_names[] = {"means", "betas"};
  for (int k = 0; k < 2; ++k) {
    const at::Tensor& t = *basis[k];
    TORCH_CHECK_VALUE(t.scalar_type() == edge_vectors.scalar_type() && t.device() == edge_vectors.device(), op,
                      ": ", basis_names[k], " must have the dtype and device of edge_vectors (",
                      edge_vectors.scalar_type(), ", ", edge_vectors.device(), "), got ", t.scalar_type(), ", ",
                      t.device());
  }
  in.edge_vectors = edge_vectors.contiguous();
  in.receivers = receivers.contiguous();
  in.senders = senders.contiguous();
  in.means = means.contiguous();
  in.betas = betas.contiguous();
  in.cutoff = cutoff;
  in.alpha = alpha;
  in.L = rgc::num_components(lmax);
  in.K = means.size(0);
  return in;
}

at::Tensor check_rgc_grad(const char* name, const at::Tensor& grad, at::IntArrayRef shape, const RgcInputs& in) {
  if (!grad.defined()) return grad;
  TORCH_CHECK_VALUE(grad.sizes() == shape, "viskrates::rgc_geometry_backward: ", name, " has shape ", grad.sizes(),
                    ", expected ", shape);
  TORCH_CHECK_VALUE(grad.scalar_type() == in.edge_vectors.scalar_type() && grad.device() == in.edge_vectors.device(),
                    "viskrates::rgc_geometry_backward: ", name, " must have the dtype and device of edge_vectors");
  return grad.contiguous();
}

namespace {

// Edges per task: each edge is a few dozen flops plus K exponentials.
constexpr int64_t kGrain = 256;

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

RgcOutputs geometry_cpu(const at::Tensor& edge_vectors, const at::Tensor& receivers, const at::Tensor& senders,
                        double cutoff, int64_t lmax, const at::Tensor& means, const at::Tensor& betas, double alpha) {
  const RgcInputs in = check_rgc(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
  at::Tensor harmonics = at::empty({in.num_edges, in.L}, in.edge_vectors.options());
  at::Tensor weights = at::empty({in.num_edges}, in.edge_vectors.options());
  at::Tensor radial = at::empty({in.num_edges, in.K}, in.edge_vectors.options());
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "rgc_geometry_cpu", [&] {
    const rgc::Geometry<scalar_t> p = rgc_params<scalar_t>(in);
    scalar_t* y = harmonics.data_ptr<scalar_t>();
    scalar_t* w = weights.data_ptr<scalar_t>();
    scalar_t* rho = radial.data_ptr<scalar_t>();
    at::parallel_for(0, in.num_edges, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) rgc::geometry_edge(p, e, y, w, rho);
    });
  });
  return {harmonics, weights, radial};
}

RgcGrads geometry_backward_cpu(const std::optional<at::Tensor>& grad_harmonics,
                               const std::optional<at::Tensor>& grad_cutoff_weights,
                               const std::optional<at::Tensor>& grad_radial, const at::Tensor& edge_vectors,
                               const at::Tensor& receivers, const at::Tensor& senders, double cutoff, int64_t lmax,
                               const at::Tensor& means, const at::Tensor& betas, double alpha, bool basis_grad) {
  const RgcInputs in = check_rgc(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
  const int64_t E = in.num_edges, K = in.K;
  const at::Tensor gy = check_rgc_grad("grad_harmonics", grad_harmonics.value_or(at::Tensor()), {E, in.L}, in);
  const at::Tensor gw = check_rgc_grad("grad_cutoff_weights", grad_cutoff_weights.value_or(at::Tensor()), {E}, in);
  const at::Tensor gr = check_rgc_grad("grad_radial", grad_radial.value_or(at::Tensor()), {E, K}, in);
  at::Tensor grad_edge_vectors = at::empty({E, 3}, in.edge_vectors.options());
  at::Tensor grad_means, grad_betas;
  if (basis_grad) {
    grad_means = at::empty({K}, in.edge_vectors.options());
    grad_betas = at::empty({K}, in.edge_vectors.options());
  }
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "rgc_geometry_backward_cpu", [&] {
    const rgc::Geometry<scalar_t> p = rgc_params<scalar_t>(in);
    const scalar_t* gyp = data_or_null<scalar_t>(gy);
    const scalar_t* gwp = data_or_null<scalar_t>(gw);
    const scalar_t* grp = data_or_null<scalar_t>(gr);
    scalar_t* gv = grad_edge_vectors.data_ptr<scalar_t>();
    at::parallel_for(0, E, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) rgc::geometry_edge_backward(p, e, gyp, gwp, grp, gv);
    });
    if (basis_grad) {
      scalar_t* gm = grad_means.data_ptr<scalar_t>();
      scalar_t* gb = grad_betas.data_ptr<scalar_t>();
      // one basis function per task, edges summed in order: deterministic
      at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          scalar_t m = scalar_t(0), b = scalar_t(0);
          if (grp != nullptr) {
            for (int64_t e = 0; e < E; ++e) rgc::geometry_edge_basis_grad(p, e, k, grp, &m, &b);
          }
          gm[k] = m;
          gb[k] = b;
        }
      });
    }
  });
  return {grad_edge_vectors, grad_means, grad_betas};
}

}  // namespace

// Schemas (a fragment of the viskrates library defined in cpp/ops.cpp). rgc_geometry_backward is the gradient
// the autograd wrapper (cpp/rgc_autograd.cpp) calls; it is not differentiable.
TORCH_LIBRARY_FRAGMENT(viskrates, m) {
  m.def(
      "rgc_geometry(Tensor edge_vectors, Tensor receivers, Tensor senders, float cutoff, int lmax, Tensor means, "
      "Tensor betas, float alpha) -> (Tensor harmonics, Tensor cutoff_weights, Tensor radial)");
  m.def(
      "rgc_geometry_backward(Tensor? grad_harmonics, Tensor? grad_cutoff_weights, Tensor? grad_radial, "
      "Tensor edge_vectors, Tensor receivers, Tensor senders, float cutoff, int lmax, Tensor means, Tensor betas, "
      "float alpha, bool basis_grad) -> (Tensor grad_edge_vectors, Tensor grad_means, Tensor grad_betas)");
}

TORCH_LIBRARY_IMPL(viskrates, CPU, m) {
  m.impl("rgc_geometry", &geometry_cpu);
  m.impl("rgc_geometry_backward", &geometry_backward_cpu);
}

}  // namespace viskrates
