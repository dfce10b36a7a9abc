// Tensor glue of the viskrates::rgc_geometry CUDA op (compiled by the C++ compiler): input checks from
// cpp/rgc.cpp, kernels from cuda/rgc.cu.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_glue.h"
#include "rgc.h"
#include "rgc_cuda.h"

namespace viskrates {
namespace {

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

RgcOutputs geometry_cuda(const at::Tensor& edge_vectors, const at::Tensor& receivers, const at::Tensor& senders,
                         double cutoff, int64_t lmax, const at::Tensor& means, const at::Tensor& betas, double alpha) {
  const c10::cuda::CUDAGuard guard(edge_vectors.device());
  const RgcInputs in = check_rgc(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
  at::Tensor harmonics = at::empty({in.num_edges, in.L}, in.edge_vectors.options());
  at::Tensor weights = at::empty({in.num_edges}, in.edge_vectors.options());
  at::Tensor radial = at::empty({in.num_edges, in.K}, in.edge_vectors.options());
  if (in.num_edges == 0) return {harmonics, weights, radial};
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "rgc_geometry_cuda", [&] {
    const cudaStream_t stream = stream_of(edge_vectors);
    check_launch(cuda::launch_rgc_geometry<scalar_t>(rgc_params<scalar_t>(in), in.num_edges,
                                                     harmonics.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(),
                                                     radial.data_ptr<scalar_t>(), stream),
                 rgc_op_name());
  });
  return {harmonics, weights, radial};
}

RgcGrads geometry_backward_cuda(const std::optional<at::Tensor>& grad_harmonics,
                                const std::optional<at::Tensor>& grad_cutoff_weights,
                                const std::optional<at::Tensor>& grad_radial, const at::Tensor& edge_vectors,
                                const at::Tensor& receivers, const at::Tensor& senders, double cutoff, int64_t lmax,
                                const at::Tensor& means, const at::Tensor& betas, double alpha, bool basis_grad) {
  const c10::cuda::CUDAGuard guard(edge_vectors.device());
  const RgcInputs in = check_rgc(edge_vectors, receivers, senders, cutoff, lmax, means, betas, alpha);
  const int64_t E = in.num_edges, K = in.K;
  const at::Tensor gy = check_rgc_grad("grad_harmonics", grad_harmonics.value_or(at::Tensor()), {E, in.L}, in);
  const at::Tensor gw = check_rgc_grad("grad_cutoff_weights", grad_cutoff_weights.value_or(at::Tensor()), {E}, in);
  const at::Tensor gr = check_rgc_grad("grad_radial", grad_radial.value_or(at::Tensor()), {E, K}, in);
  at::Tensor grad_edge_vectors = at::empty({E, 3}, in.edge_vectors.options());
  at::Tensor grad_means, grad_betas;
  if (basis_grad) {
    // zero when there is no radial gradient or no edge (the kernel is then not launched)
    grad_means = at::zeros({K}, in.edge_vectors.options());
    grad_betas = at::zeros({K}, in.edge_vectors.options());
  }
  if (E == 0) return {grad_edge_vectors, grad_means, grad_betas};
  AT_DISPATCH_FLOATING_TYPES(in.edge_vectors.scalar_type(), "rgc_geometry_backward_cuda", [&] {
    const cudaStream_t stream = stream_of(edge_vectors);
    check_launch(cuda::launch_rgc_geometry_backward<scalar_t>(
                     rgc_params<scalar_t>(in), E, data_or_null<scalar_t>(gy), data_or_null<scalar_t>(gw),
                     data_or_null<scalar_t>(gr), grad_edge_vectors.data_ptr<scalar_t>(),
                     basis_grad ? grad_means.data_ptr<scalar_t>() : nullptr,
                     basis_grad ? grad_betas.data_ptr<scalar_t>() : nullptr, stream),
                 "viskrates::rgc_geometry_backward");
  });
  return {grad_edge_vectors, grad_means, grad_betas};
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CUDA, m) {
  m.impl("rgc_geometry", &geometry_cuda);
  m.impl("rgc_geometry_backward", &geometry_backward_cuda);
}

}  // namespace viskrates
