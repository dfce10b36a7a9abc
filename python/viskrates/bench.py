"""``viskrates bench``: energy + forces timing of the viskrates models, fused kernels against the PyTorch reference.

For each model (SO3LR, ViSNet), system size and backend, one MD-like step is timed: the model's energy and
the forces ``-dE/dR`` by autograd, on a periodic TIP3P water box built with OpenMM's ``Modeller`` (the same
box for every backend; deterministic). Each case runs in its own Python subprocess, which reports

* ms/step: the best of ``--repeats`` timed steps after one warm-up step (best, not mean, because the
  machine may be shared; the spread is printed as the median too);
* cpu ms: the process CPU time of that best step (all threads; less sensitive than wall time to other
  processes competing for the cores, and equal to it for one thread on an idle machine);
* sys ms: the part of cpu ms spent in the kernel, mostly page faults: glibc's allocator returns large
  tensors to the system when they are freed, so every step faults its working set in again (a caching
  allocator such as tcmalloc, preloaded with ``LD_PRELOAD``, avoids it);
* µs/atom/step: ms/step per atom;
* peak RSS: the subprocess's ``ru_maxrss`` (whole process: Python, torch, the model and the steps);
  step Δ: ``ru_maxrss`` minus the resident set size just before the first step, i.e. the memory the
  steps themselves added on top of the loaded model and inputs;
* speed-up: reference time / fused time, on the fused rows.

Models: ViSNet with PyTorch Geometric's default hyperparameters (hidden 128, 6 layers, lmax 1, 32 RBF,
8 heads, cutoff 5 Å) and seeded random weights (timing does not depend on training); SO3LR with its
pretrained parameters and a long-range cutoff of min(12 Å, half the box edge minus 0.01 Å) because
periodic boxes must be twice the cutoff wide (printed in the ``cutoff`` column). A backend a model does not
offer (its constructor raises TypeError or ValueError) is reported as "not available".

Finally the CUDA resource usage ptxas reports (registers, shared memory, stack, spills) for every kernel
of ``cuda/*.cu`` is printed, compiled with ``nvcc -Xptxas -v`` for one architecture (skipped, with a
message, when nvcc or the sources are absent).

With ``--profile`` it times nothing but profiles one step of each case in this process instead
(:func:`profile_case`): the time per op category (matrix products with their multiply-add rate, SiLU with its
time per element, neighbour lists, each viskrates op, copies, the rest).

``python examples/bench.py`` runs the same thing as a script.
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

MODELS = ("so3lr", "visnet")
BACKENDS = ("reference", "fused")
DEFAULT_SIZES = (300, 1000, 3000, 10000)
# waters per nm³ that Modeller keeps in a cubic box (it drops waters clashing across the faces), so that
# a box built for N atoms holds about N
_MODELLER_WATER_DENSITY = 32.0
SO3LR_LR_CUTOFF = 12.0  # Å, the official default
# smallest box edge (Å): periodic boxes must be twice the largest cutoff wide (ViSNet 5 Å, SO3LR ≥ 4.5 Å)
MIN_BOX_EDGE = 10.2
COLUMNS = ("model", "backend", "atoms", "cutoff", "ms/step", "median ms", "cpu ms", "sys ms", "us/atom/step",
           "peak RSS MiB", "step dMiB", "speed-up")


# Peak resident memory of one case as base (GiB) + slope (MiB per atom), float32 (float64: slope doubled),
# fitted to the peak RSS this benchmark measured on 2-core AMD EPYC runs (282 to 10,212 atoms): the
# reference paths keep every edge intermediate for autograd, so they grow fastest; ViSNet's reference path
# would need ~50 GiB at 10,000 atoms.
MEMORY_MODEL = {
    ("so3lr", "reference"): (0.6, 1.0),
    ("so3lr", "fused"): (0.6, 0.25),
    ("visnet", "reference"): (1.0, 5.2),
    ("visnet", "fused"): (0.6, 2.0),
}


def estimate_memory_gib(model: str, backend: str, atoms: int, dtype: str = "float32") -> float:
    """Estimated peak memory (GiB) of a case, from :data:`MEMORY_MODEL`; a planning number, not a bound.

    Raises:
        KeyError: a (model, backend) without a memory model.
    """
    base, mib_per_atom = MEMORY_MODEL[(model, backend)]
    return base + atoms * mib_per_atom * (2.0 if dtype == "float64" else 1.0) / 1024.0


def available_memory_gib() -> Optional[float]:
    """``MemAvailable`` of /proc/meminfo in GiB (memory the kernel can give without swapping), or None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        return None
    return None


def water_box(target_atoms: int):
    """Periodic cubic TIP3P water box of about ``target_atoms`` atoms, built with OpenMM's Modeller.

    Args:
        target_atoms: wanted number of atoms; the box edge is chosen for a density of about 32 waters/nm³
            (within a few percent of the target), but at least :data:`MIN_BOX_EDGE` (about 100 atoms).

    Returns:
        ``(atomic_numbers [N] int64, positions [N, 3] float64 Å, box [3, 3] float64 Å)`` as numpy arrays
        (rows of ``box`` are the box vectors). Deterministic: Modeller tiles a pre-equilibrated water box.

    Raises:
        ValueError: target_atoms < 1.
    """
    if target_atoms < 1:
        raise ValueError(f"a water box needs at least one atom, got {target_atoms}")
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    edge = max((target_atoms / 3.0 / _MODELLER_WATER_DENSITY) ** (1.0 / 3.0), MIN_BOX_EDGE / 10.0)  # nm
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(app.ForceField("amber14/tip3p.xml"), model="tip3p",
                        boxSize=openmm.Vec3(edge, edge, edge) * unit.nanometer)
    numbers = np.array([atom.element.atomic_number for atom in modeller.topology.atoms()], dtype=np.int64)
    positions = np.array(modeller.positions.value_in_unit(unit.angstrom), dtype=np.float64)
    box = np.array([v.value_in_unit(unit.angstrom) for v in modeller.topology.getPeriodicBoxVectors()],
                   dtype=np.float64)
    return numbers, positions, box


def build_model(model: str, backend: str, box_edge: float):
    """The model of a case; returns ``(module, cutoff Å)``.

    Raises:
        TypeError, ValueError: the model's constructor does not offer ``backend`` (reported as not available).
    """
    import torch

    if model == "visnet":
        from .models.visnet import ViSNet

        torch.manual_seed(0)  # same random weights for every backend
        module = ViSNet(backend=backend)
        return module.eval(), module.cutoff
    if model == "so3lr":
        from .models.so3lr import SO3LR

        lr_cutoff = min(SO3LR_LR_CUTOFF, 0.5 * box_edge - 0.01)
        module = SO3LR(lr_cutoff=lr_cutoff) if backend == "reference" else SO3LR(lr_cutoff=lr_cutoff, backend=backend)
        return module.eval(), lr_cutoff
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def _resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(model: str, backend: str, system_path: str, threads: int, repeats: int, dtype: str) -> Dict:
    """Time one (model, backend, system) case in this process; returns a dict of the table's fields
    (``available`` False with ``reason`` when the backend does not exist for the model)."""
    import torch

    import viskrates  # noqa: F401  (loads the op library)

    torch.set_num_threads(threads)
    data = np.load(system_path)
    numbers = torch.from_numpy(data["numbers"])
    positions = torch.from_numpy(data["positions"]).to(getattr(torch, dtype))
    box = torch.from_numpy(data["box"]).to(getattr(torch, dtype))
    result = {"model": model, "backend": backend, "atoms": int(numbers.shape[0])}
    try:
        module, cutoff = build_model(model, backend, float(box[0, 0]))
    except (TypeError, ValueError) as error:
        result.update(available=False, reason=f"{type(error).__name__}: {error}")
        return result
    module = module.to(getattr(torch, dtype))
    total_charge = torch.zeros(1, dtype=positions.dtype)

    def step():
        pos = positions.clone().requires_grad_(True)
        energy = module(numbers, pos, box, None, total_charge)["energy"]
        torch.autograd.grad(energy.sum(), pos)

    rss_before = _resident_mib()
    step()  # warm-up: allocator, first-call overheads (eager models: one step suffices)
    times, cpu_times, sys_times = [], [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        sys_start = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        sys_times.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    best = min(range(repeats), key=lambda k: times[k])
    result.update(available=True, cutoff=float(cutoff), seconds=times[best], median_seconds=statistics.median(times),
                  cpu_seconds=cpu_times[best], sys_seconds=sys_times[best], peak_mib=peak, step_mib=peak - rss_before)
    return result


# Op categories of ``--profile``: torch profiler event names -> column. viskrates ops get a column each (forward and
# backward together), everything else is "rest".
PROFILE_CATEGORIES = (("matrix products", ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")),
                      ("SiLU", ("aten::silu", "aten::silu_backward")),
                      ("neighbour lists", ("viskrates::neighbor_list",)),
                      ("copies", ("aten::copy_",)))


def profile_case(model: str, backend: str, target_atoms: int, threads: int = 1, repeats: int = 3,
                 dtype: str = "float32") -> Dict:
    """Where one energy + forces step of a case spends its time: the self CPU time of every op, from
    ``torch.profiler`` (mean of ``repeats`` profiled steps after two warm-up steps), summed per category of
    :data:`PROFILE_CATEGORIES`, per viskrates op (forward and backward together) and the rest. Also the matrix
    products' multiply-add rate (the profiler's FLOP count / 2 over their time) and SiLU's time per element.

    Args:
        model, backend: as for :func:`run_case`; target_atoms: the water box (:func:`water_box`).
        threads: torch intra-op threads; repeats: profiled steps; dtype: "float32" or "float64".

    Returns:
        ``{"model", "backend", "atoms", "step_ms", "categories": {name: ms}, "gmac_per_s", "silu_ns_per_element"}``
        (ms per step; the categories add up to ``step_ms``, the profiler's self CPU total).

    Raises:
        ValueError: unknown model, or a backend the model does not offer.
    """
    import torch
    from torch.profiler import profile

    import viskrates  # noqa: F401  (loads the op library)

    torch.set_num_threads(threads)
    numbers, positions, box = water_box(target_atoms)
    module, _ = build_model(model, backend, float(box[0, 0]))
    module = module.to(getattr(torch, dtype))
    numbers = torch.from_numpy(numbers)
    positions = torch.from_numpy(positions).to(getattr(torch, dtype))
    box = torch.from_numpy(box).to(getattr(torch, dtype))
    total_charge = torch.zeros(1, dtype=positions.dtype)

    def step():
        pos = positions.clone().requires_grad_(True)
        energy = module(numbers, pos, box, None, total_charge)["energy"]
        torch.autograd.grad(energy.sum(), pos)

    for _ in range(2):
        step()
    category_of = {name: category for category, names in PROFILE_CATEGORIES for name in names}
    milliseconds: Dict[str, float] = {}
    flops = matmul_ms = silu_elements = silu_ms = 0.0
    for _ in range(repeats):
        with profile(record_shapes=True, with_flops=True) as profiler:
            step()
        for event in profiler.events():
            ms = event.self_cpu_time_total / 1000.0 / repeats
            name = event.name
            category = category_of.get(name.replace("_backward", "") if name.startswith("viskrates::") else name)
            if category is None:
                category = name.replace("_backward", "") if name.startswith("viskrates::") else "rest"
            milliseconds[category] = milliseconds.get(category, 0.0) + ms
            if category == "matrix products":
                flops += (event.flops or 0) / repeats
                matmul_ms += ms
            elif category == "SiLU" and event.input_shapes and event.input_shapes[0]:
                silu_elements += float(np.prod(event.input_shapes[0])) / repeats
                silu_ms += ms
    return {"model": model, "backend": backend, "atoms": int(numbers.shape[0]), "step_ms": sum(milliseconds.values()),
            "categories": milliseconds,
            "gmac_per_s": flops / 2.0 / (matmul_ms * 1e-3) / 1e9 if matmul_ms > 0 else float("nan"),
            "silu_ns_per_element": silu_ms * 1e6 / silu_elements if silu_elements > 0 else float("nan")}


def format_profile(result: Dict) -> List[str]:
    """Lines describing one :func:`profile_case` result: the step, then its categories, largest first."""
    lines = [f"{result['model']} {result['backend']}, {result['atoms']} atoms: {result['step_ms']:.1f} ms/step "
             f"(profiled self CPU time); matrix products {result['gmac_per_s']:.1f} GMAC/s, "
             f"SiLU {result['silu_ns_per_element']:.2f} ns/element"]
    for name, ms in sorted(result["categories"].items(), key=lambda item: -item[1]):
        lines.append(f"  {name:40s} {ms:9.1f} ms")
    return lines


def _run_case_subprocess(model: str, backend: str, system_path: str, threads: int, repeats: int,
                         dtype: str) -> Dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "viskrates.bench", "--case", json.dumps(
        {"model": model, "backend": backend, "system_path": system_path, "threads": threads, "repeats": repeats,
         "dtype": dtype})]
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"model": model, "backend": backend, "available": False, "failed": True, "reason": tail[0]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_table(results: Sequence[Dict]) -> List[str]:
    """Rows of the result table (header first), columns :data:`COLUMNS`, whitespace-aligned."""
    reference_times = {(r["model"], r["atoms"]): r["seconds"] for r in results
                       if r.get("available") and r["backend"] == "reference"}
    rows = [list(COLUMNS)]
    for r in results:
        if not r.get("available"):
            status = "skipped" if r.get("skipped") else "failed" if r.get("failed") else "not available"
            rows.append([r["model"], r["backend"], str(r.get("atoms", "-")), "-", status, "-", "-", "-", "-", "-",
                         "-", "-"])
            continue
        ref = reference_times.get((r["model"], r["atoms"]))
        speed_up = f"{ref / r['seconds']:.2f}x" if ref is not None and r["backend"] != "reference" else "-"
        rows.append([r["model"], r["backend"], str(r["atoms"]), f"{r['cutoff']:.2f}", f"{r['seconds'] * 1e3:.1f}",
                     f"{r['median_seconds'] * 1e3:.1f}", f"{r['cpu_seconds'] * 1e3:.1f}",
                     f"{r['sys_seconds'] * 1e3:.1f}",
                     f"{r['seconds'] / r['atoms'] * 1e6:.1f}",
                     f"{r['peak_mib']:.0f}", f"{r['step_mib']:.0f}", speed_up])
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS))]
    return ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]


def cuda_sources() -> Optional[str]:
    """The ``cuda/`` source folder of a source checkout (editable install), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.normpath(os.path.join(here, "..", "..", "cuda"))
    return folder if os.path.isdir(folder) else None


def _short_kernel_name(mangled: str) -> str:
    name = mangled
    demangler = shutil.which("c++filt")
    if demangler is not None:
        name = subprocess.run([demangler, mangled], capture_output=True, text=True).stdout.strip() or mangled
    # "void viskrates::cuda::(anonymous namespace)::attention_kernel<float>(...)" -> "attention_kernel<float>", and
    # the qualifiers of template arguments go too: "senders_backward_kernel<float, Dihedral<float> >"
    name = re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))
    return re.sub(r"\b\w+::", "", name).replace("void ", "")


def ptxas_report(arch: str = "sm_80") -> List[str]:
    """ptxas resource usage of every kernel in ``cuda/*.cu``: lines of a table, or a one-line message
    saying why it was skipped (no nvcc, no sources, compile error)."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        return ["ptxas: skipped, nvcc not found"]
    folder = cuda_sources()
    if folder is None:
        return ["ptxas: skipped, the CUDA sources (cuda/*.cu) are not part of this installation"]
    cpp = os.path.join(os.path.dirname(folder), "cpp")
    rows = [["file", "kernel", "registers", "smem B", "stack B", "spill st B", "spill ld B"]]
    for source in sorted(f for f in os.listdir(folder) if f.endswith(".cu")):
        command = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-Xptxas", "-v", "-I", folder, "-I", cpp, "-c",
                   os.path.join(folder, source), "-o", os.devnull]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            return [f"ptxas: skipped, nvcc failed on {source}: " + (completed.stderr.strip().splitlines() or [""])[-1]]
        kernel, stack, spill_st, spill_ld = None, "0", "0", "0"
        for line in completed.stderr.splitlines():
            match = re.search(r"Compiling entry function '(\w+)'", line)
            if match:
                kernel = _short_kernel_name(match.group(1))
                continue
            match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if match:
                stack, spill_st, spill_ld = match.groups()
                continue
            match = re.search(r"Used (\d+) registers", line)
            if match and kernel is not None:
                smem = re.search(r"(\d+) bytes smem", line)
                rows.append([source, kernel, match.group(1), smem.group(1) if smem else "0", stack, spill_st, spill_ld])
                kernel, stack, spill_st, spill_ld = None, "0", "0", "0"
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = [f"ptxas resource usage ({arch}, nvcc -O3 -Xptxas -v):"]
    lines += ["  ".join(cell.ljust(width) if k < 2 else cell.rjust(width) for k, (cell, width) in
                        enumerate(zip(row, widths))) for row in rows]
    return lines


def run_benchmark(models: Sequence[str] = MODELS, sizes: Sequence[int] = DEFAULT_SIZES,
                  backends: Sequence[str] = BACKENDS, threads: int = 1, repeats: int = 3, dtype: str = "float32",
                  ptxas: bool = True, out=None, memory_limit_gib: Optional[float] = None) -> List[Dict]:
    """Run every (model, size, backend) case in a subprocess and print the table (and the ptxas report).

    Args:
        models: subset of :data:`MODELS`.
        sizes: target atom counts of the water boxes.
        backends: subset of :data:`BACKENDS`.
        threads: torch intra-op threads per case.
        repeats: timed steps per case (after one warm-up step).
        dtype: "float32" or "float64".
        ptxas: print the ptxas resource usage of the CUDA kernels.
        out: text stream for the report (default: sys.stdout at call time).
        memory_limit_gib: a case whose estimated peak memory (:func:`estimate_memory_gib`) exceeds this is
            skipped, with the reason printed, instead of exhausting the machine's memory; default: the memory
            available when the benchmark starts (:func:`available_memory_gib`; no limit if unknown).

    Returns:
        The per-case result dicts (``memory_estimate_gib`` in each; ``skipped`` True with ``reason`` for a
        skipped case).

    Raises:
        ValueError: unknown model or backend, empty selection, threads or repeats < 1, size < 1.
    """
    for name, chosen, allowed in (("model", models, MODELS), ("backend", backends, BACKENDS),
                                  ("dtype", [dtype], ("float32", "float64"))):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise ValueError(f"unknown or no {name}(s) {bad}; choose from {', '.join(allowed)}")
    if threads < 1 or repeats < 1:
        raise ValueError(f"threads and repeats must be >= 1, got {threads} and {repeats}")
    out = sys.stdout if out is None else out
    limit = available_memory_gib() if memory_limit_gib is None else memory_limit_gib
    results = []
    print(f"viskrates bench: energy + forces per step, {dtype}, {threads} thread(s), best of {repeats} after 1 "
          f"warm-up step; periodic TIP3P water boxes (OpenMM Modeller); one subprocess per case", file=out)
    with tempfile.TemporaryDirectory(prefix="viskrates_bench_") as folder:
        for size in sizes:
            numbers, positions, box = water_box(size)
            path = os.path.join(folder, f"water_{size}.npz")
            np.savez(path, numbers=numbers, positions=positions, box=box)
            for model in models:
                for backend in backends:
                    estimate = estimate_memory_gib(model, backend, len(numbers), dtype)
                    if limit is not None and estimate > limit:
                        results.append({"model": model, "backend": backend, "atoms": len(numbers),
                                        "available": False, "skipped": True,
                                        "reason": f"estimated peak memory {estimate:.1f} GiB exceeds the "
                                                  f"{limit:.1f} GiB available (--memory-limit)"})
                    else:
                        results.append(_run_case_subprocess(model, backend, path, threads, repeats, dtype))
                    results[-1]["memory_estimate_gib"] = estimate
                    if results[-1].get("atoms") is None:
                        results[-1]["atoms"] = len(numbers)
    for line in format_table(results):
        print(line, file=out)
    for r in results:
        if not r.get("available"):
            status = "skipped" if r.get("skipped") else "failed" if r.get("failed") else "not available"
            print(f"{r['model']} {r['backend']} ({r['atoms']} atoms) {status}: {r['reason']}", file=out)
    print("estimated peak memory (GiB, limit " + ("none" if limit is None else f"{limit:.1f}") + "): "
          + ", ".join(f"{r['model']} {r['backend']} {r['atoms']}: {r['memory_estimate_gib']:.1f}" for r in results),
          file=out)
    print("ms/step: best of the repeats (wall); cpu ms: process CPU time of that step; sys ms: its kernel part "
          "(page faults); speed-up: reference ms / fused ms; peak RSS: ru_maxrss of the case's process; step dMiB: "
          "ru_maxrss minus the resident size before the first step", file=out)
    if ptxas:
        for line in ptxas_report():
            print(line, file=out)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``viskrates bench`` (shared by the CLI and examples/bench.py)."""
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="(default: all)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES),
                        help="target atom counts of the water boxes (default: %(default)s)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS, help="(default: both)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per case; with --openmm also OpenMM's (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed steps per case; with --openmm timed model calls (default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: %(default)s)")
    parser.add_argument("--no-ptxas", action="store_true", help="skip the ptxas resource report")
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GiB",
                        help="skip cases whose estimated peak memory exceeds this (default: the available memory)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, profile one step of each model, size and backend in this process: "
                             "time per op category (matrix products, SiLU, neighbour lists, each viskrates op, "
                             "copies, rest)")
    parser.add_argument("--openmm", action="store_true",
                        help="time MD steps inside OpenMM (TorchForce vs PythonForce) instead of the model alone")
    from . import bench_openmm

    bench_openmm.add_arguments(parser)


def run_from_arguments(args: argparse.Namespace) -> int:
    from . import bench_openmm

    bench_openmm.check_arguments(args)
    if args.openmm:
        return bench_openmm.run_from_arguments(args)
    if args.profile:
        for model in args.models:
            for size in args.sizes:
                for backend in args.backends:
                    print("\n".join(format_profile(profile_case(model, backend, size, args.threads, args.repeats,
                                                                 args.dtype))), flush=True)
        return 0
    run_benchmark(args.models, args.sizes, args.backends, args.threads, args.repeats, args.dtype, not args.no_ptxas,
                  memory_limit_gib=args.memory_limit)
    return 0


if __name__ == "__main__":
    # worker mode of the subprocesses: python -m viskrates.bench --case JSON
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        case = json.loads(sys.argv[2])
        print(json.dumps(run_case(**case)))
        sys.exit(0)
    main_parser = argparse.ArgumentParser(prog="python -m viskrates.bench", description=__doc__.splitlines()[0])
    add_arguments(main_parser)
    sys.exit(run_from_arguments(main_parser.parse_args()))
