"""OpenMM coupling: PythonForce vs direct model calls, openmm-ml plugin, energy conservation, bad input."""
import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from openmmml import MLPotential

from viskrates.models import SO3LR
from viskrates.openmm import create_force, ml_region_charge, topology_atomic_numbers
from viskrates.units import EV_TO_KJ_PER_MOL

HERE = os.path.dirname(__file__)
ALA2 = os.path.join(HERE, "..", "examples", "structures", "alanine-dipeptide-implicit.pdb")


@pytest.fixture(scope="module")
def so3lr64():
    return SO3LR().double()


@pytest.fixture(scope="module")
def ala2():
    return app.PDBFile(ALA2)


def _energy_forces(system, positions, box=None, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _model_energy_forces(model, numbers, positions_nm, box_nm=None, charge=0.0):
    """Direct model call in Å/eV, converted here independently of OpenMMModel."""
    R = torch.tensor(np.asarray(positions_nm) * 10.0, dtype=torch.float64, requires_grad=True)
    box = None if box_nm is None else torch.tensor(np.asarray(box_nm) * 10.0, dtype=torch.float64)
    out = model(torch.tensor(numbers), R, box, None, torch.tensor([charge], dtype=torch.float64))
    (grad,) = torch.autograd.grad(out["energy"].sum(), R)
    return float(out["energy"].sum()) * EV_TO_KJ_PER_MOL, -grad.numpy() * EV_TO_KJ_PER_MOL * 10.0


def test_python_force_matches_model(so3lr64, ala2):
    numbers = topology_atomic_numbers(ala2.topology)
    system = openmm.System()
    for atom in ala2.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(so3lr64, numbers))
    positions = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    energy, forces = _energy_forces(system, positions)
    ref_energy, ref_forces = _model_energy_forces(so3lr64, numbers, positions)
    assert energy == pytest.approx(ref_energy, rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(forces, ref_forces, rtol=1e-10, atol=1e-8)


def test_python_force_periodic_subset(so3lr64):
    """A periodic water box where the force acts on a subset of the particles (a decoy particle first)."""
    rng = np.random.default_rng(7)
    waters = []
    for ix in range(3):
        for iy in range(3):
            for iz in range(3):
                origin = np.array([ix, iy, iz]) * 0.31 + rng.normal(0, 0.02, 3)
                waters += [origin, origin + [0.0957, 0, 0], origin + [-0.024, 0.0927, 0]]
    positions = np.array(waters)
    box = np.eye(3) * 2.5  # nm, >= 2 x 12 Å
    numbers = [8, 1, 1] * 27
    system = openmm.System()
    system.addParticle(1.0)  # a particle the ML force does not see
    for z in numbers:
        system.addParticle(16.0 if z == 8 else 1.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(create_force(so3lr64, numbers, atoms=list(range(1, 82)), periodic=True))
    energy, forces = _energy_forces(system, np.vstack([[1.0, 1.0, 1.0], positions]))
    ref_energy, ref_forces = _model_energy_forces(so3lr64, numbers, positions, box)
    assert energy == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces[1:], ref_forces, rtol=1e-9, atol=1e-7)
    np.testing.assert_array_equal(forces[0], 0.0)


def test_openmmml_create_system_and_mixed_system(so3lr64, ala2):
    positions = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    numbers = topology_atomic_numbers(ala2.topology)
    ref_energy, ref_forces = _model_energy_forces(so3lr64, numbers, positions)

    potential = MLPotential("so3lr")
    assert potential._impl.getMLLongRange() is False
    energy, forces = _energy_forces(potential.createSystem(ala2.topology, precision="double"), positions)
    assert energy == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces, ref_forces, rtol=1e-10, atol=1e-8)

    # Mechanical embedding with every atom in the ML region: all classical terms inside it are removed,
    # so the mixed System's energy is the ML energy alone.
    mm = app.ForceField("amber14-all.xml").createSystem(ala2.topology, nonbondedMethod=app.NoCutoff)
    mixed = potential.createMixedSystem(ala2.topology, mm, list(range(22)), precision="double")
    energy, forces = _energy_forces(mixed, positions)
    assert energy == pytest.approx(ref_energy, rel=1e-10)
    np.testing.assert_allclose(forces, ref_forces, rtol=1e-8, atol=1e-6)


def test_mixed_system_ml_region_energy_decomposition(so3lr64, ala2):
    """ML region = the ALA residue, whose two peptide bonds to the caps openmm-ml cuts and caps with link
    hydrogens (virtual sites): the ML force equals SO3LR on ALA + link atoms (charge 0), and the MM part keeps
    no bond inside the ML region."""
    positions = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    ml_atoms = [a.index for a in ala2.topology.atoms() if a.residue.name == "ALA"]
    mm = app.ForceField("amber14-all.xml").createSystem(ala2.topology, nonbondedMethod=app.NoCutoff)
    info = MLPotential("so3lr").createMixedSystem(ala2.topology, mm, ml_atoms, precision="double", returnInfo=True)
    mixed, topology, old_to_new = info["system"], info["topology"], info["oldToNew"]
    links = sorted(set(range(topology.getNumAtoms())) - set(old_to_new))
    assert len(links) == 2 and all(mixed.isVirtualSite(i) for i in links)
    ml_forces = [f for f in mixed.getForces() if isinstance(f, openmm.PythonForce)]
    assert len(ml_forces) == 1
    for force in mixed.getForces():
        force.setForceGroup(1 if isinstance(force, openmm.PythonForce) else 0)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    new_positions = np.zeros((topology.getNumAtoms(), 3))
    new_positions[old_to_new] = positions
    context.setPositions(new_positions)
    context.computeVirtualSites()
    state = context.getState(getEnergy=True, getPositions=True, groups={1})
    e_ml = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ml_new = [old_to_new[i] for i in ml_atoms] + links
    numbers = topology_atomic_numbers(topology, ml_new)
    assert numbers[-2:] == [1, 1]
    all_positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    ref_ml, _ = _model_energy_forces(so3lr64, numbers, all_positions[ml_new])
    assert e_ml == pytest.approx(ref_ml, rel=1e-12)
    bonds = next(f for f in mixed.getForces() if isinstance(f, openmm.HarmonicBondForce))
    ml = set(ml_new)
    for b in range(bonds.getNumBonds()):
        i, j, *_ = bonds.getBondParameters(b)
        assert not (i in ml and j in ml)


def test_ml_region_splitting_a_residue_has_no_integer_charge(ala2):
    mm = app.ForceField("amber14-all.xml").createSystem(ala2.topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ValueError, match="not an integer"):
        MLPotential("so3lr").createMixedSystem(ala2.topology, mm, [0, 1, 2, 3, 4], precision="double")
    with pytest.raises(ValueError, match="not an integer"):
        ml_region_charge(mm, [0, 1, 2, 3, 4])
    # whole residues: the neutral peptide, and its alanine given a net charge of −1 by a shifted charge
    ala = [a.index for a in ala2.topology.atoms() if a.residue.name == "ALA"]
    assert ml_region_charge(mm) == 0.0
    assert ml_region_charge(mm, ala) == 0.0
    nonbonded = next(f for f in mm.getForces() if isinstance(f, openmm.NonbondedForce))
    charge, sigma, epsilon = nonbonded.getParticleParameters(ala[0])
    nonbonded.setParticleParameters(ala[0], charge - 1.0 * unit.elementary_charge, sigma, epsilon)
    assert ml_region_charge(mm, ala) == -1.0
    assert ml_region_charge(openmm.System()) == 0.0


def test_xml_round_trip(so3lr64, ala2):
    numbers = topology_atomic_numbers(ala2.topology)
    system = openmm.System()
    for atom in ala2.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(so3lr64, numbers))
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    positions = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    e1, f1 = _energy_forces(system, positions)
    e2, f2 = _energy_forces(copy, positions)
    # TorchScript's profiling executor may optimise a module after its first calls, which can change the
    # last bits; the deserialised force must otherwise be the same model in the same precision.
    assert e2 == pytest.approx(e1, rel=1e-14)
    np.testing.assert_allclose(f2, f1, rtol=1e-11, atol=1e-10)


def test_unsupported_element_and_empty_region(so3lr64):
    with pytest.raises(ValueError, match=r"Na \(Z=11\)"):
        create_force(so3lr64, [8, 1, 1, 11])
    with pytest.raises(ValueError, match="empty"):
        create_force(so3lr64, [])


def test_nan_positions_raise(so3lr64, ala2):
    numbers = topology_atomic_numbers(ala2.topology)
    system = openmm.System()
    for atom in ala2.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(so3lr64, numbers))
    positions = ala2.getPositions(asNumpy=True).value_in_unit(unit.nanometer).copy()
    positions[3, 1] = np.nan
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    with pytest.raises(Exception, match="NaN"):
        context.getState(getEnergy=True)


def test_nve_energy_conservation_alanine_dipeptide(so3lr64, ala2):
    """Gas-phase SO3LR (float64) NVE, 0.5 fs, 1 ps: total-energy drift < 1e-3 kJ/mol/ps per atom."""
    # no CMMotionRemover: removing the centre-of-mass motion of the initial velocities would lower the
    # kinetic energy once, in the first step
    system = MLPotential("so3lr").createSystem(ala2.topology, precision="double", removeCMMotion=False)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 100)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
    times, totals = [], []
    for block in range(41):
        if block:
            integrator.step(50)
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.picosecond))
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    slope = np.polyfit(times, totals, 1)[0]
    assert abs(slope) / system.getNumParticles() < 1e-3
    # fluctuations stay small too (a broken force would show up here before the drift)
    assert np.std(totals) < 0.5


DATA = os.path.join(HERE, "data")


def test_openmmml_so3lr_reproduces_official_reference(ala2):
    """Through openmm-ml and OpenMM's unit handling, against the official JAX SO3LR numbers (ala2, lr 1000 Å)."""
    ref = np.load(os.path.join(DATA, "so3lr", "ala2.npz"))
    system = MLPotential("so3lr", lrCutoff=float(ref["lr_cutoff"])).createSystem(ala2.topology, precision="double")
    energy, forces = _energy_forces(system, ref["R"] / 10.0)
    assert energy == pytest.approx(float(ref["energy"]) * EV_TO_KJ_PER_MOL, abs=1e-5 * EV_TO_KJ_PER_MOL)
    np.testing.assert_allclose(forces, ref["forces"] * EV_TO_KJ_PER_MOL * 10.0, atol=1e-5 * EV_TO_KJ_PER_MOL * 10.0)


def test_openmmml_visnet_reproduces_pyg_reference(ala2):
    """MLPotential('visnet', modelPath=PyG state dict) against PyTorch Geometric's ViSNet (config A, ala2)."""
    import json
    ref = np.load(os.path.join(DATA, "visnet", "ref_A_ala2.npz"))
    with open(os.path.join(DATA, "visnet", "config_A.json")) as handle:
        config = json.load(handle)
    potential = MLPotential("visnet", modelPath=os.path.join(DATA, "visnet", "weights_A.pt"), modelConfig=config)
    system = potential.createSystem(ala2.topology, precision="double")
    energy, forces = _energy_forces(system, ref["pos"] / 10.0)
    scale = EV_TO_KJ_PER_MOL
    assert energy == pytest.approx(float(ref["energy_f64"][0]) * scale, rel=1e-10)
    np.testing.assert_allclose(forces, ref["forces_f64"] * scale * 10.0, rtol=1e-8, atol=1e-7)
