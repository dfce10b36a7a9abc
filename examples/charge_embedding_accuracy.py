"""Accuracy of the ``viskrates_charge`` ML/MM embedding against the exact periodic Coulomb energy of q(R).

    OMP_NUM_THREADS=1 python examples/charge_embedding_accuracy.py [--waters-ml 2] [--trials 3]

System: the first ``--waters-ml`` waters (nearest to water 0) of a 1.8 nm box of TIP3P water (amber14, flexible,
PME 0.8 nm, tolerance 1e-6) are the ML region (SO3LR, lr_cutoff 8 Å), float64. q* are the model's charges at
the initial positions; the ML atoms are then displaced randomly (``--displacement`` nm per coordinate), so that
q(R) ≠ q*.

Reference ("exact"): the same Hamiltonian with the exact periodic 1/r Coulomb energy between q(R) and the MM
charges (and the ML region's images), ``E_MM-only + E_SO3LR + E_LJ(ML–MM) + E_Coul[q(R)]`` (Ewald sum of
:func:`viskrates.physics.ewald.ewald_erf_energy` plus a real-space erfc sum), forces by autograd including the
chain rule through q(R). Printed: energy and force errors of the embedding before and after
``refresh_charges`` (q* = q(R)), and, for scale, how much the forces differ from the mechanical embedding
(force-field charges for the ML–MM Coulomb energy). With ``--nve-steps`` it also runs NVE dynamics (rigid MM
water, Reference platform, fixed q*) of the force field alone, the mechanical and the charge embedding and
prints drift and fluctuation of the total energy.
"""
import argparse
import copy

import numpy as np
import openmm
import openmm.unit as unit
import torch
from openmmml import MLPotential

from viskrates.models import SO3LR
from viskrates.openmm import water_box_with_ml_waters
from viskrates.physics import COULOMB_CONSTANT
from viskrates.physics.ewald import ewald_erf_energy
from viskrates.units import EV_TO_KJ_PER_MOL

LR_CUTOFF = 8.0
CUTOFF = 0.8
BOX = 1.8
KJ_NM = unit.kilojoule_per_mole / unit.nanometer


def _context(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(KJ_NM))


def _minimum_image(d):
    return d - torch.round(d / BOX) * BOX


def exact_energy_forces(system, so3lr, numbers, ml_atoms, positions, sigma=2.6):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of the reference Hamiltonian (module docstring)."""
    ml = set(ml_atoms)
    mm_atoms = [i for i in range(len(positions)) if i not in ml]
    mm_only = copy.deepcopy(system)
    nonbonded = next(f for f in mm_only.getForces() if isinstance(f, openmm.NonbondedForce))
    params = [nonbonded.getParticleParameters(i) for i in range(system.getNumParticles())]
    charges = torch.tensor([p[0].value_in_unit(unit.elementary_charge) for p in params], dtype=torch.float64)
    sigmas = torch.tensor([p[1].value_in_unit(unit.nanometer) for p in params], dtype=torch.float64)
    epsilons = torch.tensor([p[2].value_in_unit(unit.kilojoule_per_mole) for p in params], dtype=torch.float64)
    for i in ml_atoms:
        nonbonded.setParticleParameters(i, 0.0, 1.0, 0.0)
    for force in mm_only.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for b in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(b)
                if i in ml:
                    force.setBondParameters(b, i, j, length, 0.0)
        if isinstance(force, openmm.HarmonicAngleForce):
            for a in range(force.getNumAngles()):
                i, j, k, angle, _ = force.getAngleParameters(a)
                if j in ml:
                    force.setAngleParameters(a, i, j, k, angle, 0.0)
    e_mm, f_mm = _energy_forces(_context(mm_only, positions))

    R = torch.tensor(positions, requires_grad=True)
    box = torch.eye(3, dtype=torch.float64) * BOX
    ml_index = torch.tensor(ml_atoms)
    mm_index = torch.tensor(mm_atoms)
    out = so3lr(torch.tensor(numbers), R[ml_index] * 10.0, box * 10.0, None, torch.zeros(1, dtype=torch.float64))
    q_ml = out["partial_charges"]
    e_ml = out["energy"].sum() * EV_TO_KJ_PER_MOL

    r = torch.linalg.vector_norm(_minimum_image(R[mm_index].unsqueeze(0) - R[ml_index].unsqueeze(1)), dim=-1)
    s = 0.5 * (sigmas[ml_index].unsqueeze(1) + sigmas[mm_index].unsqueeze(0))
    eps = torch.sqrt(epsilons[ml_index].unsqueeze(1) * epsilons[mm_index].unsqueeze(0))
    lj = torch.where(r < CUTOFF, 4.0 * eps * ((s / r) ** 12 - (s / r) ** 6), torch.zeros_like(r)).sum()

    def periodic_coulomb(q):
        reciprocal = ewald_erf_energy(q, R * 10.0, box * 10.0, sigma=sigma, tolerance=1e-14)
        d = torch.linalg.vector_norm(_minimum_image(R.unsqueeze(0) - R.unsqueeze(1)), dim=-1) * 10.0
        d = d + torch.eye(len(q), dtype=torch.float64) * 1e6
        real = 0.5 * COULOMB_CONSTANT * (q.unsqueeze(0) * q.unsqueeze(1) * torch.special.erfc(d / sigma) / d).sum()
        return (reciprocal + real) * EV_TO_KJ_PER_MOL

    with_ml = charges.clone().index_put((ml_index,), q_ml)
    without_ml = charges.clone().index_fill(0, ml_index, 0.0)
    d_ml = torch.linalg.vector_norm(_minimum_image(R[ml_index].unsqueeze(0) - R[ml_index].unsqueeze(1)), dim=-1)
    d_ml = d_ml + torch.eye(len(ml_atoms), dtype=torch.float64) * 1e6
    same_cell = 0.5 * COULOMB_CONSTANT * EV_TO_KJ_PER_MOL / 10.0 * (q_ml.unsqueeze(0) * q_ml.unsqueeze(1) / d_ml).sum()
    coulomb = periodic_coulomb(with_ml) - periodic_coulomb(without_ml) - same_cell
    energy = e_ml + lj + coulomb
    (grad,) = torch.autograd.grad(energy, R)
    return e_mm + float(energy), f_mm - grad.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waters-ml", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--displacement", type=float, default=0.01, help="nm, rms per coordinate")
    parser.add_argument("--nve-steps", type=int, default=0,
                        help="then run this many velocity-Verlet steps (0.5 fs, 300 K start, q* fixed) of the force "
                             "field, the mechanical and the charge embedding, and print the energy drift")
    args = parser.parse_args()
    torch.set_num_threads(1)

    topology, system, positions, _, ml_atoms = water_box_with_ml_waters(BOX, CUTOFF, ml_waters=args.waters_ml)
    numbers = [8, 1, 1] * args.waters_ml
    so3lr = SO3LR(lr_cutoff=LR_CUTOFF).double()
    potential = MLPotential("so3lr", lrCutoff=LR_CUTOFF)
    info = potential.createMixedSystem(topology, system, ml_atoms, embedding="viskrates_charge",
                                       precision="double", returnInfo=True, positions=positions)
    embedding = info["chargeEmbedding"]
    context = _context(info["system"], positions)
    mechanical = _context(potential.createMixedSystem(topology, system, ml_atoms, precision="double"),
                          positions)
    print(f"{len(positions)} atoms, ML region {len(ml_atoms)} atoms, rc {CUTOFF} nm, "
          f"displacement {args.displacement} nm rms per coordinate")
    rng = np.random.default_rng(1)
    for trial in range(args.trials):
        moved = positions.copy()
        moved[ml_atoms] += rng.normal(0.0, args.displacement, (len(ml_atoms), 3))
        embedding.set_charges(embedding.model_charges(positions, np.eye(3) * BOX), context)
        context.setPositions(moved)
        e_ref, f_ref = exact_energy_forces(system, so3lr, numbers, ml_atoms, moved)
        e_stale, f_stale = _energy_forces(context)
        q_moved = embedding.refresh_charges(context)
        e_fresh, f_fresh = _energy_forces(context)
        mechanical.setPositions(moved)
        _, f_mech = _energy_forces(mechanical)
        dq = np.sqrt(np.mean((q_moved - embedding.model_charges(positions, np.eye(3) * BOX)) ** 2))

        def rms(a, atoms=slice(None)):
            return np.sqrt(np.mean(np.sum(a[atoms] ** 2, axis=1)))
        print(f"trial {trial}: rms |q - q*| {dq:.4f} e; rms force (ML atoms) {rms(f_ref, ml_atoms):.1f} kJ/mol/nm")
        for name, e, f in (("q* stale", e_stale, f_stale), ("q* = q(R)", e_fresh, f_fresh),
                           ("mechanical, difference", np.nan, f_mech)):
            print(f"  {name:24s} energy error {e - e_ref:9.4f} kJ/mol; rms force error all atoms "
                  f"{rms(f - f_ref):7.3f}, ML atoms {rms(f - f_ref, ml_atoms):7.3f}, max |ΔF| "
                  f"{np.abs(f - f_ref).max():7.3f} kJ/mol/nm")
    if args.nve_steps:
        # NVE with rigid MM water (SETTLE), so that the fluctuation of the total energy shows the ML/MM
        # terms rather than the O–H vibrations of flexible TIP3P; the ML waters stay flexible.
        rigid = water_box_with_ml_waters(BOX, CUTOFF, ml_waters=args.waters_ml, ewald_error_tolerance=5e-4,
                                         rigid_water=True).system
        charge_info = potential.createMixedSystem(topology, rigid, ml_atoms, embedding="viskrates_charge",
                                                  precision="double", returnInfo=True, positions=positions)
        for name, nve_system in (("force field", rigid),
                                 ("mechanical", potential.createMixedSystem(topology, rigid, ml_atoms,
                                                                            precision="double")),
                                 ("viskrates_charge", charge_info["system"])):
            _nve(name, nve_system, positions, args.nve_steps)


def _nve(name, system, positions, steps, report=10):
    """Velocity Verlet (0.5 fs, 300 K start, Reference platform); prints drift and fluctuation of the total
    energy, leaving out the first report (OpenMM's leapfrog reports the initial kinetic energy unaveraged)."""
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), openmm.CMMotionRemover):
            system.removeForce(index)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtoseconds)
    integrator.setConstraintTolerance(1e-10)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    times, energies = [], []
    for step in range(report, steps + 1, report):
        integrator.step(report)
        state = context.getState(getEnergy=True)
        times.append(step * 0.5e-3)
        energies.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    energies = np.array(energies)
    slope = np.polyfit(times, energies, 1)[0]
    print(f"NVE {name:17s} {steps} steps of 0.5 fs: total-energy drift {slope:7.3f} kJ/mol/ps, "
          f"std {energies.std():.4f} kJ/mol")


if __name__ == "__main__":
    main()

