"""Speed of the two OpenMM backends of a viskrates force: PythonForce vs openmm-torch's TorchForce.

Times one force evaluation (median after warm-up: TorchScript's profiling executor recompiles a module
during its first calls) of SO3LR on alanine dipeptide, on OpenMM's CPU platform, one thread, and prints the
ratio. Usage: ``python examples/bench_openmm_backends.py [--double] [--repeats N]``.
"""
import argparse
import os
import time

import numpy as np
import openmm
import openmm.app as app
import torch

from viskrates.models import SO3LR
from viskrates.openmm import create_force, topology_atomic_numbers, torchforce_unavailable_reason

HERE = os.path.dirname(os.path.abspath(__file__))


def time_backend(model, pdb, backend, repeats):
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(model, topology_atomic_numbers(pdb.topology), backend=backend))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(pdb.positions)
    for _ in range(5):
        context.getState(getForces=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        context.getState(getForces=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double", action="store_true", help="evaluate SO3LR in float64")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    reason = torchforce_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"TorchForce unavailable: {reason}")
    torch.set_num_threads(1)
    model = SO3LR().to(torch.float64 if args.double else torch.float32)
    pdb = app.PDBFile(os.path.join(HERE, "structures", "alanine-dipeptide-implicit.pdb"))
    python_s = time_backend(model, pdb, "python", args.repeats)
    torch_s = time_backend(model, pdb, "torch", args.repeats)
    print(f"SO3LR, alanine dipeptide (22 atoms), {'float64' if args.double else 'float32'}, CPU platform, 1 thread")
    print(f"PythonForce {python_s * 1e3:.1f} ms, TorchForce {torch_s * 1e3:.1f} ms per evaluation; "
          f"PythonForce/TorchForce = {python_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
