// viskrates::neighbor_list: input validation, cell-grid construction and the CPU launcher.
// Per-operator ATen headers instead of ATen/ATen.h: parsing torch's headers dominates the build time.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include "neighbor_list.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bincount.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/floor.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/nonzero.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <string>

namespace viskrates {
namespace {

std::string format_width(double value) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.4f", value);
  return text;
}

// Cells per axis for a grid `extent` wide (perpendicular widths): as many as fit with cells at least
// `cell_min` wide, then halved along the longest axis until there are at most `max_cells` cells, so
// that a sparse system (a gas-phase molecule with a 1000 Å cutoff, atoms far apart) cannot ask for
// more memory than its atoms; larger cells stay correct, they are only less selective.
void grid_dims(const double* extent, double cell_min, double max_cells, int* n) {
  double nd[3];
  for (int k = 0; k < 3; ++k) {
    const double q = (extent[k] > 0.0 && cell_min > 0.0) ? std::floor(extent[k] / cell_min) : 1.0;
    nd[k] = std::min(std::max(q, 1.0), 1048576.0);
  }
  while (nd[0] * nd[1] * nd[2] > max_cells) {
    const int k = static_cast<int>(std::max_element(nd, nd + 3) - nd);
    nd[k] = std::max(1.0, std::floor(nd[k] / 2.0));
  }
  for (int k = 0; k < 3; ++k) n[k] = static_cast<int>(nd[k]);
}

// Smallest cell width that still catches every pair the distance test accepts: the cutoff plus the
// rounding error of the edge vectors in the positions' precision (|r| up to max_abs).
double min_cell_width(double cutoff, double max_abs, at::ScalarType dtype) {
  const double eps = dtype == at::kFloat ? std::numeric_limits<float>::epsilon() : std::numeric_limits<double>::epsilon();
  return cutoff * (1.0 + 1e-6) + 16.0 * eps * (max_abs + cutoff);
}

void check_box(const at::Tensor& box, const at::Tensor& positions, double cutoff, double* out) {
  TORCH_CHECK_VALUE(box.dim() == 2 && box.size(0) == 3 && box.size(1) == 3,
                    "box must have shape [3, 3] (rows are box vectors), got ", box.sizes());
  TORCH_CHECK_VALUE(box.scalar_type() == positions.scalar_type() && box.device() == positions.device(),
                    "box must have the dtype and device of positions (", positions.scalar_type(), ", ",
                    positions.device(), "), got ", box.scalar_type(), ", ", box.device());
  const at::Tensor host = box.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* b = host.data_ptr<double>();
  std::copy(b, b + 9, out);
  TORCH_CHECK_VALUE(std::all_of(b, b + 9, [](double x) { return std::isfinite(x); }),
                    "box contains NaN or infinite values");
  // cross products a×b, b×c, c×a of the box vectors (rows)
  auto cross = [&](int p, int q, double* c) {
    c[0] = b[3 * p + 1] * b[3 * q + 2] - b[3 * p + 2] * b[3 * q + 1];
    c[1] = b[3 * p + 2] * b[3 * q + 0] - b[3 * p + 0] * b[3 * q + 2];
    c[2] = b[3 * p + 0] * b[3 * q + 1] - b[3 * p + 1] * b[3 * q + 0];
  };
  double bc[3], ca[3], ab[3];
  cross(1, 2, bc);
  cross(2, 0, ca);
  cross(0, 1, ab);
  const double volume = std::abs(b[0] * bc[0] + b[1] * bc[1] + b[2] * bc[2]);
  TORCH_CHECK_VALUE(volume > 0.0, "box vectors are degenerate (zero volume)");
  auto norm = [](const double* v) { return std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]); };
  const double smallest = std::min({volume / norm(bc), volume / norm(ca), volume / norm(ab)});
  TORCH_CHECK_VALUE(smallest >= 2.0 * cutoff, "periodic box too small for the cutoff: its smallest perpendicular width is ",
                    format_width(smallest), " but must be at least twice the cutoff (", format_width(2.0 * cutoff),
                    ", same length unit as the positions); use a larger box (more solvent padding) or a smaller cutoff");
}

}  // namespace

NeighborListSetup setup_neighbor_list(const at::Tensor& positions, const std::optional<at::Tensor>& box, double cutoff,
                                      const std::optional<at::Tensor>& batch) {
  TORCH_CHECK_VALUE(positions.dim() == 2 && positions.size(1) == 3, "positions must have shape [N, 3], got ",
                    positions.sizes());
  TORCH_CHECK_VALUE(positions.scalar_type() == at::kFloat || positions.scalar_type() == at::kDouble,
                    "positions must be float32 or float64, got ", positions.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff >= 0.0, "cutoff must be a finite non-negative number, got ", cutoff);
  NeighborListSetup s;
  s.positions = positions.detach().contiguous();
  s.cutoff = cutoff;
  const int64_t n = positions.size(0);
  if (n > 0) {
    const at::Tensor bad = at::isfinite(s.positions).all(1).logical_not();
    if (bad.any().item<bool>()) {
      const at::Tensor atoms = at::nonzero(bad).flatten().slice(0, 0, 10).cpu();
      std::ostringstream list;
      for (int64_t k = 0; k < atoms.numel(); ++k) list << (k ? ", " : "") << atoms[k].item<int64_t>();
      TORCH_CHECK_VALUE(false, "positions contain NaN or infinite values (atoms [", list.str(), "])");
    }
  }
  if (box.has_value() && box->defined()) {
    check_box(*box, s.positions, cutoff, s.box);
    s.periodic = true;
  }
  const bool batched = batch.has_value() && batch->defined();
  TORCH_CHECK_VALUE(!(batched && s.periodic), "batched neighbour lists are supported for open boundaries only");
  int64_t num_molecules = 1;
  at::Tensor mol64;
  if (batched) {
    const at::Tensor& b = *batch;
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == n, "batch must have shape [N] = [", n,
                      "] (one molecule index per atom), got ", b.sizes());
    TORCH_CHECK_VALUE(at::isIntegralType(b.scalar_type(), /*includeBool=*/false) && b.device() == positions.device(),
                      "batch must be an integer tensor on the device of positions, got ", b.scalar_type(), " on ",
                      b.device());
    if (n > 1) {
      const at::Tensor lhs = b.slice(0, 0, n - 1), rhs = b.slice(0, 1, n);
      const at::Tensor stats = at::stack({rhs.lt(lhs).any().to(at::kLong), rhs.ne(lhs).sum()}).cpu();
      TORCH_CHECK_VALUE(stats[0].item<int64_t>() == 0, "batch must be sorted (non-decreasing molecule indices)");
      num_molecules = stats[1].item<int64_t>() + 1;
      mol64 = at::cat({at::zeros({1}, b.options().dtype(at::kLong)), at::cumsum(rhs.ne(lhs), 0)});
    } else {
      mol64 = at::zeros({n}, b.options().dtype(at::kLong));
    }
    s.mol = mol64.to(at::kInt);
  }
  if (n == 0) return s;

  // Per-molecule bounding boxes, atom counts and the largest |coordinate|, read back to the host at once.
  at::Tensor stats;
  if (s.positions.is_cpu()) {
    // plain loop: ATen's dim reductions cost milliseconds on tiny CPU tensors (thread-pool wake-ups)
    stats = at::empty({7 * num_molecules + 1}, s.positions.options().dtype(at::kDouble));
    double* st = stats.data_ptr<double>();
    std::fill(st, st + 3 * num_molecules, INFINITY);
    std::fill(st + 3 * num_molecules, st + 6 * num_molecules, -INFINITY);
    std::fill(st + 6 * num_molecules, st + 7 * num_molecules + 1, 0.0);
    const int* mol = s.mol.defined() ? s.mol.data_ptr<int>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(s.positions.scalar_type(), "neighbor_list_bounds", [&] {
      const scalar_t* pos = s.positions.data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t m = mol ? mol[i] : 0;
        for (int k = 0; k < 3; ++k) {
          const double x = static_cast<double>(pos[3 * i + k]);
          st[3 * m + k] = std::min(st[3 * m + k], x);
          st[3 * (num_molecules + m) + k] = std::max(st[3 * (num_molecules + m) + k], x);
          st[7 * num_molecules] = std::max(st[7 * num_molecules], std::abs(x));
        }
        st[6 * num_molecules + m] += 1.0;
      }
    });
  } else {
    const at::Tensor r = s.positions.to(at::kDouble);
    at::Tensor lo, hi, counts;
    if (batched) {
      const at::Tensor index = mol64.unsqueeze(1).expand({n, 3});
      lo = at::full({num_molecules, 3}, INFINITY, r.options()).scatter_reduce(0, index, r, "amin");
      hi = at::full({num_molecules, 3}, -INFINITY, r.options()).scatter_reduce(0, index, r, "amax");
      counts = at::bincount(mol64, {}, num_molecules).to(at::kDouble);
    } else {
      lo = std::get<0>(r.min(0)).unsqueeze(0);
      hi = std::get<0>(r.max(0)).unsqueeze(0);
      counts = at::full({1}, static_cast<double>(n), r.options());
    }
    stats = at::cat({lo.flatten(), hi.flatten(), counts, r.abs().max().reshape({1})}).cpu().contiguous();
  }
  const double* st = stats.data_ptr<double>();
  const double* lo_h = st;
  const double* hi_h = st + 3 * num_molecules;
  const double* count_h = st + 6 * num_molecules;
  const double max_abs = st[7 * num_molecules];
  const double cell_min = min_cell_width(cutoff, max_abs, positions.scalar_type()) / nl::kCellsPerCutoff;

  if (s.periodic) {
    const double* b = s.box;
    nl::Grid g{};
    // to_grid = box^-1 (adjugate / determinant), so g = r @ box^-1 are fractional coordinates.
    const double det = b[0] * (b[4] * b[8] - b[5] * b[7]) - b[1] * (b[3] * b[8] - b[5] * b[6]) +
                       b[2] * (b[3] * b[7] - b[4] * b[6]);
    g.to_grid[0] = (b[4] * b[8] - b[5] * b[7]) / det;
    g.to_grid[1] = (b[2] * b[7] - b[1] * b[8]) / det;
    g.to_grid[2] = (b[1] * b[5] - b[2] * b[4]) / det;
    g.to_grid[3] = (b[5] * b[6] - b[3] * b[8]) / det;
    g.to_grid[4] = (b[0] * b[8] - b[2] * b[6]) / det;
    g.to_grid[5] = (b[2] * b[3] - b[0] * b[5]) / det;
    g.to_grid[6] = (b[3] * b[7] - b[4] * b[6]) / det;
    g.to_grid[7] = (b[1] * b[6] - b[0] * b[7]) / det;
    g.to_grid[8] = (b[0] * b[4] - b[1] * b[3]) / det;
    // perpendicular width along grid axis k = 1 / |column k of box^-1|
    double widths[3];
    for (int k = 0; k < 3; ++k) {
      const double c0 = g.to_grid[k], c1 = g.to_grid[3 + k], c2 = g.to_grid[6 + k];
      widths[k] = 1.0 / std::sqrt(c0 * c0 + c1 * c1 + c2 * c2);
    }
    grid_dims(widths, cell_min, std::max(8.0, 2.0 * n), g.n);
    g.first_cell = 0;
    s.prefilter = std::min({g.n[0], g.n[1], g.n[2]}) >= 2 * nl::kCellsPerCutoff + 1;
    // both separations round positions, box vectors and their sums: a few ulps of the largest of them
    const double eps = positions.scalar_type() == at::kFloat ? std::numeric_limits<float>::epsilon()
                                                             : std::numeric_limits<double>::epsilon();
    double box_sum = 0.0;
    for (int k = 0; k < 9; ++k) box_sum += std::abs(b[k]);
    s.prefilter_cutoff = cutoff * (1.0 + 1e-6) + 32.0 * eps * (max_abs + box_sum + cutoff);
    s.grids.push_back(g);
    s.num_cells = static_cast<int64_t>(g.n[0]) * g.n[1] * g.n[2];
    return s;
  }
  int64_t first_cell = 0;
  for (int64_t m = 0; m < num_molecules; ++m) {
    nl::Grid g{};
    double extent[3];
    for (int k = 0; k < 3; ++k) {
      g.origin[k] = lo_h[3 * m + k];
      extent[k] = hi_h[3 * m + k] - lo_h[3 * m + k];
      g.to_grid[4 * k] = extent[k] > 0.0 ? 1.0 / extent[k] : 0.0;
    }
    grid_dims(extent, cell_min, std::max(8.0, 2.0 * count_h[m]), g.n);
    g.first_cell = first_cell;
    first_cell += static_cast<int64_t>(g.n[0]) * g.n[1] * g.n[2];
    s.grids.push_back(g);
  }
  s.num_cells = first_cell;
  return s;
}

at::Tensor wrapped_positions(const NeighborListSetup& s, const at::Tensor& frac) {
  const at::Tensor box = at::from_blob(const_cast<double*>(s.box), {3, 3}, at::TensorOptions().dtype(at::kDouble))
                             .to(frac.device());
  return s.positions.to(at::kDouble).sub(at::mm(at::floor(frac), box)).to(s.positions.scalar_type()).contiguous();
}

NeighborListResult empty_neighbor_list(const at::Tensor& positions) {
  const auto index = positions.options().dtype(at::kLong);
  return {at::zeros({1}, index), at::empty({0}, index), at::empty({0}, index), at::empty({0, 3}, positions.options()),
          at::empty({0, 3}, positions.options())};
}

namespace {

// Receivers per block of the CPU search (the unit of its edge buffers).
constexpr int64_t kReceiverBlock = 64;

template <typename scalar_t>
struct Edge {
  int64_t sender;
  int shift[3];
  scalar_t vec[3];
};

template <typename scalar_t>
NeighborListResult neighbor_list_cpu_impl(const NeighborListSetup& s, bool self_loops) {
  const int64_t n = s.positions.size(0);
  const scalar_t* pos = s.positions.data_ptr<scalar_t>();
  const int* mol = s.mol.defined() ? s.mol.data_ptr<int>() : nullptr;
  std::vector<double> frac(s.periodic ? 3 * n : 0);
  std::vector<int> coords(3 * n);
  std::vector<int64_t> cell(n);
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      cell[i] = nl::assign_cell(pos + 3 * i, s.grids[mol ? mol[i] : 0], s.periodic,
                                s.periodic ? frac.data() + 3 * i : nullptr, coords.data() + 3 * i);
  });
  // Counting sort of the atoms by cell; a stable scan keeps atom indices ascending within a cell.
  std::vector<int64_t> cell_start(s.num_cells + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++cell_start[cell[i] + 1];
  for (int64_t c = 0; c < s.num_cells; ++c) cell_start[c + 1] += cell_start[c];
  std::vector<int64_t> next(cell_start.begin(), cell_start.end() - 1), cell_atoms(n);
  for (int64_t i = 0; i < n; ++i) cell_atoms[next[cell[i]]++] = i;
  at::Tensor wrapped;
  if (s.prefilter) {
    wrapped = wrapped_positions(s, at::from_blob(frac.data(), {n, 3}, at::TensorOptions().dtype(at::kDouble)));
  }
  const scalar_t* wrap = s.prefilter ? wrapped.data_ptr<scalar_t>() : nullptr;
  std::vector<scalar_t> sorted_positions(3 * n);
  std::vector<double> sorted_frac(s.periodic ? 3 * n : 0);
  std::vector<scalar_t> sorted_wrapped(s.prefilter ? 3 * n : 0);
  for (int64_t p = 0; p < n; ++p) {
    const int64_t i = cell_atoms[p];
    for (int k = 0; k < 3; ++k) {
      sorted_positions[3 * p + k] = pos[3 * i + k];
      if (s.periodic) sorted_frac[3 * p + k] = frac[3 * i + k];
      if (s.prefilter) sorted_wrapped[3 * p + k] = wrap[3 * i + k];
    }
  }

  nl::SearchData<scalar_t> d{};
  d.positions = pos;
  d.frac = s.periodic ? frac.data() : nullptr;
  d.cell_coords = coords.data();
  d.mol = mol;
  d.grids = s.grids.data();
  d.cell_start = cell_start.data();
  d.cell_atoms = cell_atoms.data();
  d.sorted_positions = sorted_positions.data();
  d.sorted_frac = s.periodic ? sorted_frac.data() : nullptr;
  d.wrapped = wrap;
  d.sorted_wrapped = s.prefilter ? sorted_wrapped.data() : nullptr;
  for (int k = 0; k < 9; ++k) d.box[k] = static_cast<scalar_t>(s.box[k]);
  d.cutoff2 = static_cast<scalar_t>(s.cutoff * s.cutoff);
  d.prefilter_cutoff2 = static_cast<scalar_t>(s.prefilter_cutoff * s.prefilter_cutoff);
  d.periodic = s.periodic;
  d.self_loops = self_loops;

  // One traversal: every block of receivers collects its edges, each receiver's sorted by sender, into a buffer
  // of its own; the row offsets follow from the counts and the buffers are then copied into the outputs. (A
  // counting traversal before a filling one cost most of the search twice.)
  const int64_t num_blocks = (n + kReceiverBlock - 1) / kReceiverBlock;
  std::vector<std::vector<Edge<scalar_t>>> block_edges(num_blocks);
  const auto index_options = s.positions.options().dtype(at::kLong);
  at::Tensor row_ptr = at::empty({n + 1}, index_options);
  int64_t* rp = row_ptr.data_ptr<int64_t>();
  rp[0] = 0;
  at::parallel_for(0, num_blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    std::vector<Edge<scalar_t>> found;
    std::vector<uint64_t> order;
    for (int64_t block = block_begin; block < block_end; ++block) {
      std::vector<Edge<scalar_t>>& edges = block_edges[block];
      for (int64_t i = block * kReceiverBlock; i < std::min(n, (block + 1) * kReceiverBlock); ++i) {
        found.clear();
        auto collect = [&](int64_t j, const int* shift, const scalar_t* v) {
          found.push_back({j, {shift[0], shift[1], shift[2]}, {v[0], v[1], v[2]}});
        };
        nl::for_each_neighbor(d, i, collect);
        // canonical order (a sender occurs at most once per receiver): sorting 8-byte keys (sender, position;
        // atom indices and a receiver's edge count are below 2^32) instead of the edges themselves
        order.resize(found.size());
        for (size_t k = 0; k < found.size(); ++k) order[k] = (static_cast<uint64_t>(found[k].sender) << 32) | k;
        std::sort(order.begin(), order.end());
        for (const uint64_t key : order) edges.push_back(found[key & 0xffffffffu]);
        rp[i + 1] = static_cast<int64_t>(found.size());
      }
    }
  });
  for (int64_t i = 0; i < n; ++i) rp[i + 1] += rp[i];
  const int64_t num_edges = rp[n];

  at::Tensor receivers = at::empty({num_edges}, index_options);
  at::Tensor senders = at::empty({num_edges}, index_options);
  at::Tensor shifts = at::empty({num_edges, 3}, s.positions.options());
  at::Tensor vectors = at::empty({num_edges, 3}, s.positions.options());
  int64_t* rec = receivers.data_ptr<int64_t>();
  int64_t* snd = senders.data_ptr<int64_t>();
  scalar_t* sh = shifts.data_ptr<scalar_t>();
  scalar_t* vec = vectors.data_ptr<scalar_t>();
  at::parallel_for(0, num_blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first_receiver = block * kReceiverBlock;
      const std::vector<Edge<scalar_t>>& edges = block_edges[block];
      int64_t e = rp[first_receiver];
      for (int64_t i = first_receiver; i < std::min(n, first_receiver + kReceiverBlock); ++i) {
        for (; e < rp[i + 1]; ++e) rec[e] = i;
      }
      const int64_t offset = rp[first_receiver];
      for (size_t k = 0; k < edges.size(); ++k) {
        const int64_t out = offset + static_cast<int64_t>(k);
        snd[out] = edges[k].sender;
        for (int c = 0; c < 3; ++c) {
          sh[3 * out + c] = static_cast<scalar_t>(edges[k].shift[c]);
          vec[3 * out + c] = edges[k].vec[c];
        }
      }
      // release the block's buffer now: the buffers and the outputs together are the op's peak memory
      std::vector<Edge<scalar_t>>().swap(block_edges[block]);
    }
  });
  return {row_ptr, receivers, senders, shifts, vectors};
}

NeighborListResult neighbor_list_cpu(const at::Tensor& positions, const std::optional<at::Tensor>& box, double cutoff,
                                     const std::optional<at::Tensor>& batch, bool self_loops) {
  const NeighborListSetup s = setup_neighbor_list(positions, box, cutoff, batch);
  if (s.positions.size(0) == 0) return empty_neighbor_list(s.positions);
  return AT_DISPATCH_FLOATING_TYPES(s.positions.scalar_type(), "neighbor_list_cpu",
                                    [&] { return neighbor_list_cpu_impl<scalar_t>(s, self_loops); });
}

}  // namespace

TORCH_LIBRARY_IMPL(viskrates, CPU, m) { m.impl("neighbor_list", &neighbor_list_cpu); }

}  // namespace viskrates
