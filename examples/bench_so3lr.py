"""Time SO3LR energy + forces with the reference and the fused backends on periodic water boxes.

The pretrained SO3LR model (lr_cutoff 12 Å, or half the box width for boxes thinner than 24 Å; the column
``lr`` says which). Water boxes are built on a cubic grid (3.1 Å spacing, ~1 g/cm³, all molecules equally
oriented), so sizes are 3·n³ atoms (default n = 5, 7, 10, 15: 375, 1029, 3000, 10125 atoms). Every case runs
in its own subprocess, so the peak resident memory (ru_maxrss) is that of one backend and size. Prints the
best of ``--repeats`` steps in ms (wall clock), µs per atom per step, the reference/fused time ratio, the
ratio of the CPU times (process_time, summed over threads; less sensitive to other load on the machine) and
the peak memory; asserts nothing.

Usage: python examples/bench_so3lr.py [--threads 2] [--sizes 5 7 10 15] [--dtype float32] [--repeats 3]
       [--max-reference-atoms 20000]
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def water_box(n_side: int, spacing: float = 3.1):
    """Periodic cubic box of 3·n_side³ atoms: one rigid water per grid point."""
    grid = np.arange(n_side) * spacing
    oxygens = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    positions = np.stack([oxygens, oxygens + [0.9572, 0.0, 0.0], oxygens + [-0.2400, 0.9266, 0.0]], 1).reshape(-1, 3)
    numbers = np.tile([8, 1, 1], len(oxygens))
    return torch.tensor(numbers), torch.tensor(positions), torch.eye(3, dtype=torch.float64) * (n_side * spacing)


def long_range_cutoff(n_side: int, spacing: float = 3.1) -> float:
    return min(12.0, 0.5 * n_side * spacing - 1e-6)


def worker(n_side: int, backend: str, threads: int, dtype_name: str, repeats: int) -> None:
    """Time one (size, backend) case and print a JSON line."""
    import viskrates  # noqa: F401  (loads the op library)
    from viskrates.models import SO3LR

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    numbers, positions, box = water_box(n_side)
    positions, box = positions.to(dtype), box.to(dtype)
    lr = long_range_cutoff(n_side)
    model = SO3LR(lr_cutoff=lr, backend=backend).to(dtype)

    def step():
        pos = positions.clone().requires_grad_(True)
        energy = model(numbers, pos, box)["energy"]
        torch.autograd.grad(energy.sum(), pos)

    step()  # warm-up (allocator, thread pool)
    best = best_cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"atoms": len(numbers), "lr": lr, "seconds": best, "cpu_seconds": best_cpu,
                      "peak_mib": peak_mib}))


def run_case(args, n_side: int, backend: str):
    cmd = [sys.executable, __file__, "--worker", str(n_side), backend, "--threads", str(args.threads), "--dtype",
           args.dtype, "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1:] or ["failed"]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 7, 10, 15], help="waters per box edge")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-reference-atoms", type=int, default=20000,
                        help="skip the reference backend above this size (its memory grows with [E, 128] tensors)")
    parser.add_argument("--worker", nargs=2, metavar=("N_SIDE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1], args.threads, args.dtype, args.repeats)
        return
    print(f"SO3LR energy+forces, {args.dtype}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'atoms':>6} {'lr/Å':>5} | {'ref ms':>9} {'µs/atom':>8} {'MiB':>6} | {'fused ms':>9} {'µs/atom':>8} "
          f"{'MiB':>6} | {'ref/fused':>9} {'cpu ratio':>9}")
    for n_side in args.sizes:
        atoms = 3 * n_side ** 3
        fused, error = run_case(args, n_side, "fused")
        if fused is None:
            print(f"{atoms:>6} fused failed: {error}")
            continue
        ref = None
        if atoms <= args.max_reference_atoms:
            ref, error = run_case(args, n_side, "reference")
        ref_cols = (f"{ref['seconds'] * 1e3:>9.1f} {ref['seconds'] * 1e6 / atoms:>8.1f} {ref['peak_mib']:>6.0f}"
                    if ref else f"{'-':>9} {'-':>8} {'-':>6}")
        ratio = (f"{ref['seconds'] / fused['seconds']:>9.2f} {ref['cpu_seconds'] / fused['cpu_seconds']:>9.2f}"
                 if ref else f"{'-':>9} {'-':>9}")
        print(f"{atoms:>6} {fused['lr']:>5.1f} | {ref_cols} | {fused['seconds'] * 1e3:>9.1f} "
              f"{fused['seconds'] * 1e6 / atoms:>8.1f} {fused['peak_mib']:>6.0f} | {ratio}", flush=True)


if __name__ == "__main__":
    main()
