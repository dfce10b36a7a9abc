// Host side of viskrates::neighbor_list shared by the CPU and CUDA launchers: input validation (the
// ValueErrors of viskrates.ops.neighbor_list_reference) and the construction of the cell grids.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

#include "neighbor_list_kernel.h"

namespace viskrates {

using NeighborListResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Validated inputs and cell grids of one neighbour-list call.
struct NeighborListSetup {
  at::Tensor positions;          // [N, 3] contiguous, on the input device
  at::Tensor mol;                // [N] int32 molecule of each atom (batched calls only, else undefined)
  std::vector<nl::Grid> grids;   // one per molecule, or one for the periodic box
  int64_t num_cells = 0;
  bool periodic = false;
  double box[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};  // row-major, rows are box vectors
  double cutoff = 0.0;
  // for_each_neighbor's prefilter applies (periodic, at least 2·kCellsPerCutoff + 1 cells per axis) with this
  // radius: the cutoff plus a bound on the rounding difference of the prefilter's separations
  bool prefilter = false;
  double prefilter_cutoff = 0.0;
};

// Positions wrapped into the box, positions - floor(frac) @ box, in the positions' dtype and on their device
// (frac [N, 3] double: the unwrapped fractional coordinates of nl::assign_cell); for the prefilter.
at::Tensor wrapped_positions(const NeighborListSetup& s, const at::Tensor& frac);

// Checks the inputs (raising c10::ValueError, i.e. Python ValueError, with the reference's messages)
// and builds the grids. Synchronises with the device once to read the bounding boxes.
NeighborListSetup setup_neighbor_list(const at::Tensor& positions, const std::optional<at::Tensor>& box, double cutoff,
                                      const std::optional<at::Tensor>& batch);

// Outputs of a call without atoms.
NeighborListResult empty_neighbor_list(const at::Tensor& positions);

}  // namespace viskrates
