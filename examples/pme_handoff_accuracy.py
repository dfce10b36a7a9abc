"""Accuracy and energy conservation of the PME hand-off of SO3LR's charges in full-ML periodic systems.

For each system (a periodic TIP3P-built water box and chignolin solvated in such a box, SO3LR on every
atom, float64) it prints the energy and force error against the exact periodic electrostatics of the
model's own charges (:func:`viskrates.physics.ewald.ewald_erf_energy`, forces with the chain rule through
the position-dependent charges) of

* the hand-off (:func:`viskrates.openmm.add_pme_handoff`, evaluated by OpenMM) at q = q* (the positions
  where q* was taken) and after the atoms moved (a random displacement, so that q ≠ q*), and
* SO3LR's own shifted-force, truncated electrostatics (the official MD convention).

Force errors are per-atom vector norms ``|F − F_exact|``: rms over atoms and maximum; "rms |F|" is the rms
norm of the exact force. With ``--nve-ps`` it then runs NVE (velocity Verlet, ``--timestep`` fs, OpenMM
Reference platform, float64) of the water box with the hand-off and prints the drift of the total energy
in kJ/mol/ps/atom (slope of a least-squares line), its standard deviation, and the hand-off error at the
final positions (q* from the start of the run).

    python examples/pme_handoff_accuracy.py                      # table only (water box and chignolin)
    python examples/pme_handoff_accuracy.py --systems water --water-box 1.25 --lr-cutoff 6 --nve-ps 2 \
        --minimize-iterations 50 --no-table                       # NVE, 2 ps of 192 atoms: ~1.5 h on 1 core

Chignolin (5AWL, charge −2 e) is solvated without counter-ions (SO3LR has no sodium); the cell's charge is
compensated by the uniform neutralising background both the reference and OpenMM's PME use.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

import viskrates  # noqa: F401  (loads the op library; import before openmm, see viskrates/__init__.py)
import openmm
import openmm.app as app
import openmm.unit as unit
from viskrates.models import SO3LR
from viskrates.openmm import add_pme_handoff, topology_atomic_numbers
from viskrates.physics.ewald import ewald_erf_energy
from viskrates.simulate import prepare_structure
from viskrates.units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

HERE = os.path.dirname(os.path.abspath(__file__))
CHIGNOLIN = os.path.join(HERE, "structures", "5awl_chignolin_protonated.pdb")
# eV/Å -> kJ/mol/nm
FORCE_UNIT = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM


def solvated_box(edge_nm: float, solute: str = None):
    """TIP3P water (Modeller.addSolvent, no ions) in a cubic box of ``edge_nm``, around ``solute`` (a
    protonated PDB file, centred) if given, minimised with amber14/TIP3P.
    Returns (topology, positions [N, 3] nm, box [3, 3] nm, net charge e)."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    charge = 0.0
    if solute is None:
        modeller = app.Modeller(app.Topology(), [])
    else:
        topology, positions = prepare_structure(solute, fix=False, ph=7.0)
        system = forcefield.createSystem(topology)
        nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        charge = round(sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                           for i in range(system.getNumParticles())))
        xyz = np.array(positions.value_in_unit(unit.nanometer))
        modeller = app.Modeller(topology, (xyz - xyz.mean(axis=0) + edge_nm / 2.0) * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(edge_nm, edge_nm, edge_nm) * unit.nanometer,
                        neutralize=False)
    # addSolvent tiles a water box, which leaves close contacts across the new box faces: minimise them away
    # with the force field (rigid TIP3P, PME), as for the official reference water boxes
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                     constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return modeller.topology, np.array(positions), np.eye(3) * edge_nm, float(charge)


def reference_energy_forces(model, numbers, positions_nm, box_nm, total_charge):
    """SO3LR with exact periodic electrostatics, and SO3LR as is (shifted-force electrostatics).

    Returns ``(E_exact kJ/mol, F_exact [N, 3] kJ/mol/nm, E_own, F_own, charges [N] e)``."""
    R = torch.tensor(positions_nm * NM_TO_ANGSTROM, dtype=torch.float64, requires_grad=True)
    box = torch.tensor(box_nm * NM_TO_ANGSTROM, dtype=torch.float64)
    out = model(torch.tensor(numbers), R, box, None, torch.tensor([total_charge], dtype=torch.float64))
    own = out["energy"].sum()
    (own_grad,) = torch.autograd.grad(own, R, retain_graph=True)
    exact = own - out["energy_elec"].sum() + ewald_erf_energy(out["partial_charges"], R, box, model.electrostatics.sigma)
    (exact_grad,) = torch.autograd.grad(exact, R)
    return (float(exact.detach()) * EV_TO_KJ_PER_MOL, -exact_grad.numpy() * FORCE_UNIT, float(own.detach()) * EV_TO_KJ_PER_MOL,
            -own_grad.numpy() * FORCE_UNIT, out["partial_charges"].detach().numpy())


def handoff_context(topology, numbers, positions_nm, box_nm, model, total_charge, integrator):
    """A Reference-platform Context of the full-ML System with the hand-off (q* taken at ``positions_nm``)."""
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_nm])
    handoff = add_pme_handoff(system, model, numbers, positions_nm, total_charge=total_charge)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    return context, handoff


def energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def force_errors(forces, reference):
    norms = np.linalg.norm(forces - reference, axis=1)
    return float(np.sqrt(np.mean(norms ** 2))), float(norms.max())


def accuracy_rows(name, topology, reference_positions, states, box, charge, model):
    """Rows ``(system, atoms, positions, method, ΔE, rms ΔF, max ΔF, rms |F|, rms |q − q*|)`` of the table, with
    q* taken at ``reference_positions`` and errors evaluated at each ``(label, positions)`` of ``states``."""
    numbers = topology_atomic_numbers(topology)
    context, handoff = handoff_context(topology, numbers, reference_positions, box, model, charge,
                                       openmm.VerletIntegrator(1e-3))
    rows = []
    for state, xyz in states:
        context.setPositions(xyz)
        energy, forces = energy_forces(context)
        exact, exact_forces, own, own_forces, charges = reference_energy_forces(model, numbers, xyz, box, charge)
        rms_force = float(np.sqrt(np.mean(np.sum(exact_forces ** 2, axis=1))))
        dq = float(np.sqrt(np.mean((charges - handoff.charges) ** 2)))
        rows.append((name, len(numbers), state, "hand-off", energy - exact, *force_errors(forces, exact_forces),
                     rms_force, dq))
        rows.append((name, len(numbers), state, "SO3LR shifted force", own - exact,
                     *force_errors(own_forces, exact_forces), rms_force, dq))
    return rows


def print_rows(rows):
    print("| system | atoms | positions | electrostatics | ΔE (kJ/mol) | rms ΔF | max ΔF | rms abs F | rms abs(q − q*) (e) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, atoms, state, method, de, rms, worst, rms_force, dq in rows:
        print(f"| {name} | {atoms} | {state} | {method} | {de:.3g} | {rms:.3g} | {worst:.3g} | {rms_force:.0f} | {dq:.3g} |")
    print("(forces in kJ/mol/nm; errors against the exact periodic sum of the model's charges)")
    sys.stdout.flush()


def run_nve(topology, positions, box, model, picoseconds, timestep_fs, minimize_iterations, seed):
    """NVE of the full-ML System with the hand-off; returns a dict of drift, fluctuation and final state."""
    numbers = topology_atomic_numbers(topology)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    context, handoff = handoff_context(topology, numbers, positions, box, model, 0.0, integrator)
    if minimize_iterations:
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)
        handoff.refresh_charges(context)  # the run starts exact (q = q*), as the README recommends
    start_positions = np.array(context.getState(getPositions=True).getPositions(asNumpy=True)
                               .value_in_unit(unit.nanometer))
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    steps = int(round(picoseconds * 1000.0 / timestep_fs))
    block = max(1, int(round(10.0 / timestep_fs)))  # one sample every 10 fs
    times, totals, temperatures = [], [], []
    dof = 3 * len(numbers) - 3
    start = time.perf_counter()
    done = 0
    while True:
        state = context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        times.append(state.getTime().value_in_unit(unit.picosecond))
        totals.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) + kinetic)
        temperatures.append(2.0 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin)))
        if done >= steps:
            break
        integrator.step(min(block, steps - done))
        done += min(block, steps - done)
        if len(times) % 20 == 0:
            print(f"  NVE {times[-1]:.2f} ps, total energy {totals[-1]:.3f} kJ/mol, T {temperatures[-1]:.0f} K, "
                  f"{(time.perf_counter() - start) / done:.2f} s/step", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    times, totals = np.array(times), np.array(totals)
    slope = np.polyfit(times, totals, 1)[0]
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return {"atoms": len(numbers), "steps": steps, "drift": slope / len(numbers), "std": float(np.std(totals)),
            "temperature": float(np.mean(temperatures)), "seconds_per_step": elapsed / steps,
            "start_positions": start_positions, "final_positions": np.array(final)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["water", "chignolin"], choices=["water", "chignolin"])
    parser.add_argument("--water-box", type=float, default=1.87, help="water box edge in nm (default: %(default)s)")
    parser.add_argument("--chignolin-box", type=float, default=3.0, help="box edge around chignolin, nm (default: %(default)s)")
    parser.add_argument("--lr-cutoff", type=float, default=9.0, help="SO3LR lr_cutoff in Å, ≤ box/2 (default: %(default)s)")
    parser.add_argument("--displacement", type=float, default=0.05,
                        help="rms random displacement per coordinate, Å, for the q ≠ q* rows (default: %(default)s)")
    parser.add_argument("--nve-ps", type=float, default=0.0, help="NVE length of the water box in ps (0: no NVE)")
    parser.add_argument("--timestep", type=float, default=0.5, help="NVE time step in fs (default: %(default)s)")
    parser.add_argument("--minimize-iterations", type=int, default=20, help="before NVE (default: %(default)s)")
    parser.add_argument("--no-table", action="store_true", help="skip the accuracy table")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = SO3LR(lr_cutoff=args.lr_cutoff, backend="fused").double()

    systems = {}
    if "water" in args.systems:
        systems["water box"] = solvated_box(args.water_box)
    if "chignolin" in args.systems and not args.no_table:
        systems["chignolin in water"] = solvated_box(args.chignolin_box, CHIGNOLIN)
    print(f"SO3LR float64, lr_cutoff {args.lr_cutoff} Å, {args.threads} thread(s)")
    if not args.no_table:
        rows = []
        for name, (topology, positions, box, charge) in systems.items():
            start = time.perf_counter()
            moved = positions + np.random.default_rng(args.seed).normal(
                0.0, args.displacement / NM_TO_ANGSTROM, positions.shape)
            rows += accuracy_rows(f"{name} ({box[0, 0]:.2f} nm, {charge:+.0f} e)", topology, positions,
                                  [("q = q*", positions), (f"moved {args.displacement} Å", moved)], box, charge, model)
            print(f"  {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        print_rows(rows)
    if args.nve_ps > 0:
        if "water box" not in systems:
            parser.error("--nve-ps runs the water box: include 'water' in --systems")
        topology, positions, box, _ = systems["water box"]
        result = run_nve(topology, positions, box, model, args.nve_ps, args.timestep, args.minimize_iterations,
                         args.seed)
        print(f"NVE water box: {result['atoms']} atoms, {args.nve_ps} ps at {args.timestep} fs ({result['steps']} steps), "
              f"mean T {result['temperature']:.0f} K: drift {result['drift']:.2e} kJ/mol/ps/atom, "
              f"std of the total energy {result['std']:.3f} kJ/mol, {result['seconds_per_step']:.2f} s/step")
        rows = accuracy_rows("water box", topology, result["start_positions"],
                             [(f"after {args.nve_ps} ps NVE", result["final_positions"])], box, 0.0, model)
        print("hand-off error at the end of the NVE run, with q* still from the start:")
        print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
