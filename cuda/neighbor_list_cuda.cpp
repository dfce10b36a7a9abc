// Tensor glue of the CUDA neighbour list (compiled by the C++ compiler): validation and grids from
// cpp/neighbor_list.cpp, kernels from cuda/neighbor_list.cu, sorting and prefix sums from ATen.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstring>

#include "cuda_glue.h"
#include "neighbor_list.h"
#include "neighbor_list_cuda.h"

namespace viskrates {
namespace {

template <typename scalar_t>
NeighborListResult neighbor_list_cuda_impl(const NeighborListSetup& s, bool self_loops) {
  const int64_t n = s.positions.size(0);
  const at::Device device = s.positions.device();
  const cudaStream_t stream = stream_of(s.positions);
  const auto index_options = s.positions.options().dtype(at::kLong);

  const int64_t grid_bytes = static_cast<int64_t>(s.grids.size() * sizeof(nl::Grid));
  at::Tensor grids_host = at::empty({grid_bytes}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(grids_host.data_ptr(), s.grids.data(), grid_bytes);
  const at::Tensor grids = grids_host.to(device);
  const auto* grids_ptr = reinterpret_cast<const nl::Grid*>(grids.data_ptr());

  const at::Tensor frac = at::empty({s.periodic ? n : 0, 3}, s.positions.options().dtype(at::kDouble));
  const at::Tensor coords = at::empty({n, 3}, s.positions.options().dtype(at::kInt));
  const at::Tensor cell = at::empty({n}, index_options);
  const int* mol = s.mol.defined() ? s.mol.data_ptr<int>() : nullptr;
  check_launch(cuda::launch_assign_cells<scalar_t>(s.positions.data_ptr<scalar_t>(), mol, grids_ptr, s.periodic, n,
                                                   s.periodic ? frac.data_ptr<double>() : nullptr,
                                                   coords.data_ptr<int>(), cell.data_ptr<int64_t>(), stream),
               "viskrates::neighbor_list (assign_cells)");
  // atoms by cell, ascending atom index within a cell (stable sort)
  const at::Tensor cell_atoms = std::get<1>(at::sort(cell, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const at::Tensor cell_start =
      at::cat({at::zeros({1}, index_options), at::cumsum(at::bincount(cell, {}, s.num_cells), 0)});

  const at::Tensor sorted_positions = s.positions.index_select(0, cell_atoms);
  const at::Tensor sorted_frac = s.periodic ? frac.index_select(0, cell_atoms) : frac;
  const at::Tensor wrapped = s.prefilter ? wrapped_positions(s, frac) : at::Tensor();
  const at::Tensor sorted_wrapped = s.prefilter ? wrapped.index_select(0, cell_atoms) : at::Tensor();

  nl::SearchData<scalar_t> d{};
  d.positions = s.positions.data_ptr<scalar_t>();
  d.frac = s.periodic ? frac.data_ptr<double>() : nullptr;
  d.cell_coords = coords.data_ptr<int>();
  d.mol = mol;
  d.grids = grids_ptr;
  d.cell_start = cell_start.data_ptr<int64_t>();
  d.cell_atoms = cell_atoms.data_ptr<int64_t>();
  d.sorted_positions = sorted_positions.data_ptr<scalar_t>();
  d.sorted_frac = s.periodic ? sorted_frac.data_ptr<double>() : nullptr;
  d.wrapped = s.prefilter ? wrapped.data_ptr<scalar_t>() : nullptr;
  d.sorted_wrapped = s.prefilter ? sorted_wrapped.data_ptr<scalar_t>() : nullptr;
  for (int k = 0; k < 9; ++k) d.box[k] = static_cast<scalar_t>(s.box[k]);
  d.cutoff2 = static_cast<scalar_t>(s.cutoff * s.cutoff);
  d.prefilter_cutoff2 = static_cast<scalar_t>(s.prefilter_cutoff * s.prefilter_cutoff);
  d.periodic = s.periodic;
  d.self_loops = self_loops;

  const at::Tensor counts = at::empty({n}, index_options);
  check_launch(cuda::launch_count_edges<scalar_t>(d, n, counts.data_ptr<int64_t>(), stream),
               "viskrates::neighbor_list (count_edges)");
  const at::Tensor row_ptr = at::cat({at::zeros({1}, index_options), at::cumsum(counts, 0)});
  const int64_t num_edges = row_ptr[n].item<int64_t>();

  at::Tensor receivers = at::empty({num_edges}, index_options);
  at::Tensor senders = at::empty({num_edges}, index_options);
  at::Tensor shifts = at::empty({num_edges, 3}, s.positions.options());
  at::Tensor vectors = at::empty({num_edges, 3}, s.positions.options());
  if (num_edges > 0) {
    check_launch(cuda::launch_fill_edges<scalar_t>(d, n, row_ptr.data_ptr<int64_t>(), receivers.data_ptr<int64_t>(),
                                                   senders.data_ptr<int64_t>(), shifts.data_ptr<scalar_t>(),
                                                   vectors.data_ptr<scalar_t>(), stream),
                 "viskrates::neighbor_list (fill_edges)");
    // Canonical order. Receivers are already grouped; a sender occurs at most once per receiver, so the
    // key receiver·N + sender is unique and a plain sort suffices.
    const at::Tensor order = std::get<1>(at::sort(receivers.mul(n).add(senders)));
    senders = senders.index_select(0, order);
    shifts = shifts.index_select(0, order);
    vectors = vectors.index_select(0, order);
  }
  return {row_ptr, receivers, senders, shifts, vectors};
}

NeighborListResult neighbor_list_cuda(const at::Tensor& positions, const std::optional<at::Tensor>& box, double cutoff,
                                      const std::optional<at::Tensor>& batch, bool self_loops) {
  // Dispatch picks this kernel when any input is on a CUDA device; setup rejects mixed devices.
  const c10::cuda::OptionalCUDAGuard guard(positions.is_cuda() ? std::optional<at::Device>(positions.device())
                                                               : std::nullopt);
  const NeighborListSetup s = setup_neighbor_list(positions, box, cutoff, batch);
  if (s.positions.size(0) == 0) return empty_neighbor_list(s.positions);
  return AT_DISPATCH_FLOATING_TYPES(s.positions.scalar_type(), "neighbor_list_cuda",
                                    [&] { return neighbor_list_cuda_impl<scalar_t>(s, self_loops); });
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CUDA, m) { m.impl("neighbor_list", &neighbor_list_cuda); }

}  // namespace viskrates
