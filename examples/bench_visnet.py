"""Time ViSNet energy + forces with the reference and the fused backends on periodic water boxes.

PyTorch Geometric's default hyperparameters (hidden 128, 6 layers, lmax 1, 32 RBF, 8 heads, cutoff 5 Å),
randomly initialised weights (timing does not depend on training). Water boxes are built on a cubic grid
(3.1 Å spacing, ~1 g/cm³), so sizes are 3·n³ atoms. Prints ms per step, µs per atom per step and the
reference/fused time ratio; asserts nothing.

Usage: python examples/bench_visnet.py [--threads 2] [--sizes 5 7 10] [--script] [--dtype float32] [--repeats 5]
"""
import argparse
import time

import numpy as np
import torch

import viskrates  # noqa: F401  (loads the op library)
from viskrates.models.visnet import ViSNet


def water_box(n_side: int, spacing: float = 3.1):
    """Periodic cubic box of 3·n_side³ atoms: one rigid water per grid point, all molecules equally oriented."""
    grid = np.arange(n_side) * spacing
    oxygens = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    hydrogen_1 = oxygens + [0.9572, 0.0, 0.0]
    hydrogen_2 = oxygens + [-0.2400, 0.9266, 0.0]
    positions = np.stack([oxygens, hydrogen_1, hydrogen_2], 1).reshape(-1, 3)
    numbers = np.tile([8, 1, 1], len(oxygens))
    return torch.tensor(numbers), torch.tensor(positions), torch.eye(3, dtype=torch.float64) * (n_side * spacing)


def time_step(model, numbers, positions, box, repeats: int) -> float:
    def step():
        pos = positions.clone().requires_grad_(True)
        energy = model(numbers, pos, box)["energy"]
        torch.autograd.grad(energy.sum(), pos)

    step()  # warm-up (TorchScript profiling runs, allocator)
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 7, 10], help="waters per box edge")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--script", action="store_true", help="time torch.jit.script-ed models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    reference = ViSNet().to(dtype).eval()
    fused = ViSNet(backend="fused").to(dtype).eval()
    fused.load_state_dict(reference.state_dict())
    if args.script:
        reference, fused = torch.jit.script(reference), torch.jit.script(fused)
    print(f"ViSNet (hidden 128, 6 layers, lmax 1, 32 rbf, cutoff 5), {args.dtype}, {args.threads} thread(s), "
          f"best of {args.repeats}")
    print(f"{'atoms':>6} {'edges':>8} {'reference ms':>13} {'fused ms':>9} {'ref us/atom':>12} "
          f"{'fused us/atom':>14} {'speed-up':>9}")
    for n_side in args.sizes:
        numbers, positions, box = water_box(n_side)
        positions, box = positions.to(dtype), box.to(dtype)
        edges = viskrates.ops.neighbor_list(positions, reference.cutoff, box, None, True)[1].shape[0]
        t_ref = time_step(reference, numbers, positions, box, args.repeats)
        t_fused = time_step(fused, numbers, positions, box, args.repeats)
        n = len(numbers)
        print(f"{n:>6} {edges:>8} {t_ref * 1e3:>13.1f} {t_fused * 1e3:>9.1f} {t_ref / n * 1e6:>12.1f} "
              f"{t_fused / n * 1e6:>14.1f} {t_ref / t_fused:>8.2f}x")


if __name__ == "__main__":
    main()
