"""Cost of the charge embedding: one force evaluation with ``embedding='viskrates_charge'`` vs ``'mechanical'``.

Alanine dipeptide (SO3LR, float32, PythonForce) solvated in a cubic TIP3P box (amber14, PME, cutoff 1 nm,
H-bond constraints), OpenMM's CPU platform, one thread. The two Contexts are timed alternately (median over
``--repeats`` rounds of 5 evaluations, after warm-up: TorchScript's profiling executor recompiles a module
during its first calls), and the time of each part of the charge-embedded System (force field, ML force with
the q(R) correction, CustomNonbondedForce with the q* correction) is printed too.
Usage: ``OMP_NUM_THREADS=1 python examples/bench_charge_embedding.py [--box 3.0] [--repeats 5]``.
"""
import argparse
import os
import time

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch
from openmmml import MLPotential

HERE = os.path.dirname(os.path.abspath(__file__))


def _context(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(positions)
    for _ in range(3):
        context.getState(getForces=True)
    return context


def _seconds(context, rounds, groups=-1):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(5):
            context.getState(getForces=True, getEnergy=True, groups=groups)
        times.append((time.perf_counter() - start) / 5)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=float, default=3.0, help="box edge in nm (at least 2.4 for SO3LR's 12 Å)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pdb = app.PDBFile(os.path.join(HERE, "structures", "alanine-dipeptide-implicit.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(args.box, args.box, args.box) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0,
                                     constraints=app.HBonds)
    ml_atoms = list(range(pdb.topology.getNumAtoms()))
    potential = MLPotential("so3lr")
    mechanical = _context(potential.createMixedSystem(modeller.topology, system, ml_atoms), modeller.positions)
    charge_system = potential.createMixedSystem(modeller.topology, system, ml_atoms, embedding="viskrates_charge",
                                                positions=modeller.positions)
    for force in charge_system.getForces():
        force.setForceGroup(1 if isinstance(force, openmm.PythonForce) else
                            2 if isinstance(force, openmm.CustomNonbondedForce) else 0)
    charge = _context(charge_system, modeller.positions)
    mechanical_s, charge_s = [], []
    for _ in range(args.repeats):
        mechanical_s += _seconds(mechanical, 1)
        charge_s += _seconds(charge, 1)
    parts = [float(np.median(_seconds(charge, args.repeats, {group}))) for group in (0, 1, 2)]
    print(f"alanine dipeptide (22 ML atoms) in {modeller.topology.getNumAtoms()} atoms, CPU platform, 1 thread")
    print(f"mechanical {np.median(mechanical_s) * 1e3:.1f} ms, viskrates_charge {np.median(charge_s) * 1e3:.1f} ms "
          f"per evaluation; charge/mechanical = {np.median(charge_s) / np.median(mechanical_s):.2f}")
    print(f"parts of viskrates_charge: force field {parts[0] * 1e3:.1f} ms, ML force with q(R) correction "
          f"{parts[1] * 1e3:.1f} ms, q* correction (CustomNonbondedForce) {parts[2] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
