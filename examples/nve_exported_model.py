"""NVE molecular dynamics of one molecule with a model written by ``viskrates export``; prints the energy drift.

    python examples/nve_exported_model.py model.pt examples/data/rmd17_aspirin.xyz.gz --energy-unit kcal/mol

The first structure of the data file is the start; velocities are drawn at ``--temperature`` (Maxwell-Boltzmann,
centre-of-mass motion removed) and the velocity-Verlet run (OpenMM ``VerletIntegrator``, float64 model) reports
the total energy every ``--report`` steps, its drift (linear fit, kJ/mol/ps and meV/atom/ps) and fluctuation.
"""
import argparse
import time

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from openmmml import MLPotential

from viskrates.train import load_exported, read_extxyz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="exported model (viskrates export)")
    parser.add_argument("data", help="extended XYZ with the starting structure (first frame)")
    parser.add_argument("--energy-unit", default="eV", help="energy unit of the data file (default eV)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K, initial velocities")
    parser.add_argument("--report", type=int, default=20, help="steps between energy reports")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    _, metadata = load_exported(args.model)
    structure = read_extxyz(args.data, args.energy_unit)[0]
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for z in structure.atomic_numbers:
        topology.addAtom(app.Element.getByAtomicNumber(int(z)).symbol, app.Element.getByAtomicNumber(int(z)), residue)
    system = MLPotential(metadata["model"]["name"], modelPath=args.model).createSystem(topology, precision="double")
    integrator = openmm.VerletIntegrator(args.timestep * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(structure.positions * 0.1)  # Å -> nm
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    times, energies = [], []
    start = time.monotonic()
    for step in range(0, args.steps + 1, args.report):
        if step:
            integrator.step(args.report)
        state = context.getState(getEnergy=True)
        energies.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        times.append(step * args.timestep / 1000.0)
    wall = time.monotonic() - start
    times, energies = np.array(times), np.array(energies)
    slope = np.polyfit(times, energies, 1)[0]
    n = len(structure.atomic_numbers)
    ev = 96.48533212331002
    print(f"{n} atoms, {args.steps} steps of {args.timestep} fs ({times[-1]:.3f} ps) in {wall:.0f} s")
    print(f"total energy drift {slope:.4f} kJ/mol/ps = {1000 * slope / ev / n:.4f} meV/atom/ps; "
          f"fluctuation (std) {energies.std():.4f} kJ/mol; max |E - E0| {np.abs(energies - energies[0]).max():.4f} kJ/mol")


if __name__ == "__main__":
    main()
