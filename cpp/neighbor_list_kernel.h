// Kernel bodies of viskrates::neighbor_list (DESIGN.md §4: one kernel body, two launchers).
//
// Everything here is per-atom or per-receiver arithmetic shared verbatim by the CPU launcher
// (cpp/neighbor_list.cpp, at::parallel_for over atoms) and the CUDA launcher (cuda/neighbor_list.cu,
// one thread per atom), so the CPU tests exercise the arithmetic the GPU runs. The header is plain
// C++ without torch so that nvcc compiles it quickly.
//
// Cell list: each molecule (open boundaries) or the periodic box gets a grid whose cells are at least
// cutoff / kCellsPerCutoff wide perpendicular to each face, so every neighbour of an atom lies in the
// block of (2·kCellsPerCutoff + 1)³ cells around its own cell. Grid coordinates are g = (r - origin) @ to_grid: for a periodic box
// to_grid = box^-1 (g = fractional coordinates), for open boundaries it scales the molecule's bounding
// box to the unit cube.
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace viskrates {
namespace nl {

// Cell grid of one molecule (open boundaries) or of the periodic box.
struct Grid {
  double origin[3];
  double to_grid[9];   // row-major 3x3
  int n[3];            // cells along each grid axis (>= 1)
  int64_t first_cell;  // index of this grid's cell (0, 0, 0) in the global cell array
};

// Read-only inputs of the per-receiver search. Atom data are also stored in cell order (sorted_*) so
// that the inner loop over the atoms of a cell reads contiguous memory.
template <typename scalar_t>
struct SearchData {
  const scalar_t* positions;         // [N, 3]
  const double* frac;                // [N, 3] unwrapped grid coordinates (periodic only, else nullptr)
  const int* cell_coords;            // [N, 3] cell of each atom within its grid
  const int* mol;                    // [N] grid (molecule) of each atom, nullptr: all atoms use grid 0
  const Grid* grids;                 // [B]
  const int64_t* cell_start;         // [num_cells + 1] CSR of cell_atoms
  const int64_t* cell_atoms;         // [N] atoms ordered by cell, ascending atom index within a cell
  const scalar_t* sorted_positions;  // [N, 3] positions[cell_atoms]
  const double* sorted_frac;         // [N, 3] frac[cell_atoms] (periodic only)
  // Positions wrapped into the box, r - floor(frac) @ box (wrapped [N, 3], sorted_wrapped [N, 3] in cell order),
  // for the prefilter of for_each_neighbor; nullptr (no prefilter) unless the box is periodic with at least
  // 2·kCellsPerCutoff + 1 cells along every axis.
  const scalar_t* wrapped;
  const scalar_t* sorted_wrapped;
  scalar_t box[9];            // row-major, rows are box vectors (periodic only)
  scalar_t cutoff2;           // cutoff², rounded to scalar_t like the reference's comparison
  scalar_t prefilter_cutoff2; // (cutoff + bound on the prefilter's rounding difference)²
  bool periodic;
  bool self_loops;
};

// Grid coordinates and cell of atom i. frac (periodic only) receives the unwrapped fractional
// coordinates, from which the minimum-image shifts are computed; coords receives the cell within the
// grid. Returns the global cell index.
template <typename scalar_t>
VISKRATES_HD int64_t assign_cell(const scalar_t* r, const Grid& grid, bool periodic, double* frac, int* coords) {
  double g[3];
  for (int k = 0; k < 3; ++k) {
    g[k] = 0.0;
    for (int l = 0; l < 3; ++l) g[k] += (static_cast<double>(r[l]) - grid.origin[l]) * grid.to_grid[l * 3 + k];
  }
  for (int k = 0; k < 3; ++k) {
    double w = g[k];
    if (periodic) {
      frac[k] = g[k];
      w = g[k] - math::floor(g[k]);  // wrap into the home cell
    }
    // Clamping catches w == 1 (the far face of a bounding box, or rounding of a tiny negative wrap).
    int c = static_cast<int>(math::floor(w * grid.n[k]));
    c = c < 0 ? 0 : (c >= grid.n[k] ? grid.n[k] - 1 : c);
    coords[k] = c;
  }
  return grid.first_cell + (static_cast<int64_t>(coords[0]) * grid.n[1] + coords[1]) * grid.n[2] + coords[2];
}

// Cells per cutoff along each axis. With one (cells a cutoff wide) a periodic box narrower than four
// cutoffs has at most 3 cells per axis and every atom searches the whole box: O(N²) for SO3LR's 12 Å
// long-range list up to ~10,000 atoms of water. Half-cutoff cells search 125 cells of (rc/2)³, i.e.
// 15.6 rc³ instead of 27 rc³ at most, and only (5/7)³ of a 3.5-cutoff box.
constexpr int kCellsPerCutoff = 2;

// Neighbour cells of cell c along one axis with n cells: offsets first .. first+count-1 from c.
// Periodic grids wrap; with fewer than 2·kCellsPerCutoff + 1 cells the wrapped offsets would repeat cells
// (and pairs), so each cell is visited once. Open grids stop at the faces.
VISKRATES_HD void neighbor_cell_range(int c, int n, bool periodic, int* first, int* count) {
  const int reach = kCellsPerCutoff;
  if (periodic) {
    *first = n >= 2 * reach + 1 ? -reach : 0;
    *count = n >= 2 * reach + 1 ? 2 * reach + 1 : n;
  } else {
    const int lo = c > reach ? c - reach : 0;
    const int hi = c + reach < n ? c + reach : n - 1;
    *first = lo - c;
    *count = hi - lo + 1;
  }
}

// Nearest integer (halves away from zero), branch-free: rint() is a library call on baseline x86-64 and
// a sign branch mispredicts for random separations. Halves never matter: such images are at least
// half a box width (>= cutoff) away.
VISKRATES_HD int nearest_int(double x) { return static_cast<int>(x + math::copysign(0.5, x)); }

// Tests the pair (receiver at ri, fi; sender at rj, fj). For a periodic box the only image that can be
// within the cutoff is the one with every fractional component of the separation in (-1/2, 1/2)
// (because the box is at least 2·cutoff wide), i.e. shift = -round(f_j - f_i). Writes the shift and the
// edge vector r_j - r_i + shift @ box; returns whether |edge vector|² < cutoff².
template <typename scalar_t>
VISKRATES_HD bool test_pair(const SearchData<scalar_t>& d, const scalar_t* ri, const double* fi, const scalar_t* rj,
                            const double* fj, int* shift, scalar_t* vec) {
  if (d.periodic) {
    for (int k = 0; k < 3; ++k) shift[k] = -nearest_int(fj[k] - fi[k]);
    for (int k = 0; k < 3; ++k) {
      const scalar_t image = static_cast<scalar_t>(shift[0]) * d.box[k] + static_cast<scalar_t>(shift[1]) * d.box[3 + k] +
                             static_cast<scalar_t>(shift[2]) * d.box[6 + k];
      vec[k] = (rj[k] - ri[k]) + image;
    }
  } else {
    for (int k = 0; k < 3; ++k) {
      shift[k] = 0;
      vec[k] = rj[k] - ri[k];
    }
  }
  const scalar_t d2 = vec[0] * vec[0] + vec[1] * vec[1] + vec[2] * vec[2];
  return d2 < d.cutoff2;
}

// Calls visit(j, shift, vec) for every neighbour j of receiver i (and for i itself with a zero shift
// when self loops are requested). The order of the calls follows the cells, not the canonical order;
// the launchers sort each receiver's edges by sender (a sender occurs at most once per receiver).
// Prefilter (d.sorted_wrapped set): with at least 2·kCellsPerCutoff + 1 cells per axis every neighbour cell is
// visited once, with the image its wrap around the grid implies, and that is the only image of its atoms that can
// be within the cutoff; the separation of wrapped positions plus that image costs six additions, where test_pair
// (the minimum image from fractional coordinates in double) costs several times more. Only candidates within
// the slightly larger prefilter radius reach test_pair, so the accepted edges, shifts and vectors are
// exactly those of test_pair alone; at SO3LR's 12 Å cutoff three quarters of the candidates are rejected early.
template <typename scalar_t, typename Visit>
VISKRATES_HD void for_each_neighbor(const SearchData<scalar_t>& d, int64_t i, Visit& visit) {
  const Grid& grid = d.grids[d.mol != nullptr ? d.mol[i] : 0];
  const int* c = d.cell_coords + 3 * i;
  const scalar_t* ri = d.positions + 3 * i;
  const double* fi = d.periodic ? d.frac + 3 * i : nullptr;
  int first[3], count[3];
  for (int k = 0; k < 3; ++k) neighbor_cell_range(c[k], grid.n[k], d.periodic, &first[k], &count[k]);
  int shift[3];
  scalar_t vec[3];
  const bool prefilter = d.sorted_wrapped != nullptr;
  for (int a = 0; a < count[0]; ++a) {
    const int ua = c[0] + first[0] + a;
    const int ca = (ua + grid.n[0]) % grid.n[0];
    for (int b = 0; b < count[1]; ++b) {
      const int ub = c[1] + first[1] + b;
      const int cb = (ub + grid.n[1]) % grid.n[1];
      for (int e = 0; e < count[2]; ++e) {
        const int uc = c[2] + first[2] + e;
        const int cc = (uc + grid.n[2]) % grid.n[2];
        const int64_t cell = grid.first_cell + (static_cast<int64_t>(ca) * grid.n[1] + cb) * grid.n[2] + cc;
        // prefilter: the cell's image (its wrap around the grid, -1, 0 or 1 box vectors per axis) minus the
        // receiver's wrapped position, so that a candidate's separation is sorted_wrapped + offset
        scalar_t offset[3] = {scalar_t(0), scalar_t(0), scalar_t(0)};
        if (prefilter) {
          const int wrap[3] = {ua < 0 ? -1 : (ua >= grid.n[0] ? 1 : 0), ub < 0 ? -1 : (ub >= grid.n[1] ? 1 : 0),
                               uc < 0 ? -1 : (uc >= grid.n[2] ? 1 : 0)};
          for (int k = 0; k < 3; ++k) {
            offset[k] = static_cast<scalar_t>(wrap[0]) * d.box[k] + static_cast<scalar_t>(wrap[1]) * d.box[3 + k] +
                        static_cast<scalar_t>(wrap[2]) * d.box[6 + k] - d.wrapped[3 * i + k];
          }
        }
        for (int64_t p = d.cell_start[cell]; p < d.cell_start[cell + 1]; ++p) {
          const int64_t j = d.cell_atoms[p];
          if (j == i) {
            // Other images of atom i are at least one box width (>= 2·cutoff) away.
            if (d.self_loops) {
              shift[0] = shift[1] = shift[2] = 0;
              vec[0] = vec[1] = vec[2] = scalar_t(0);
              visit(j, shift, vec);
            }
            continue;
          }
          if (prefilter) {
            const scalar_t* w = d.sorted_wrapped + 3 * p;
            const scalar_t x = w[0] + offset[0], y = w[1] + offset[1], z = w[2] + offset[2];
            if (!(x * x + y * y + z * z < d.prefilter_cutoff2)) continue;
          }
          if (test_pair(d, ri, fi, d.sorted_positions + 3 * p, d.periodic ? d.sorted_frac + 3 * p : nullptr, shift, vec))
            visit(j, shift, vec);
        }
      }
    }
  }
}

}  // namespace nl
}  // namespace viskrates
