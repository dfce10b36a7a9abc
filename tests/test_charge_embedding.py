"""ML/MM charge embedding (``embedding='viskrates_charge'``): energy decomposition against an independent Ewald
reference, forces against finite differences, the q* refresh, and clear errors.

System: two neighbouring TIP3P waters as the ML region (SO3LR, lr_cutoff 8 Å) in a 1.8 nm box of 185 waters
(amber14/tip3p, flexible, PME with cutoff 0.8 nm, no dispersion correction), float64 throughout.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from openmmml import MLPotential

from viskrates.models import SO3LR
from viskrates.openmm import torchforce_unavailable_reason, water_box_with_ml_waters
from viskrates.physics import COULOMB_CONSTANT
from viskrates.physics.ewald import ewald_erf_energy
from viskrates.units import EV_TO_KJ_PER_MOL

HERE = os.path.dirname(__file__)
ALA2 = os.path.join(HERE, "..", "examples", "structures", "alanine-dipeptide-implicit.pdb")
BOX = 1.8                # nm, edge of the cubic water box
LR_CUTOFF = 8.0          # Å, SO3LR's long-range cutoff (the 18 Å box must be at least twice as wide)
CUTOFF = 0.8             # nm, force field and embedding cutoff
KE = COULOMB_CONSTANT * EV_TO_KJ_PER_MOL / 10.0   # kJ/mol·nm


@pytest.fixture(autouse=True)
def _unoptimised_torchscript():
    """TorchScript's profiling executor spends seconds optimising every freshly scripted module during its first
    calls (~8 s per System here); the unoptimised graph computes the same function, so the tests skip that."""
    with torch.jit.optimized_execution(False):
        yield


@pytest.fixture(scope="module")
def water_box():
    return water_box_with_ml_waters(BOX, CUTOFF, ml_waters=2)


@pytest.fixture(scope="module")
def so3lr64():
    return SO3LR(lr_cutoff=LR_CUTOFF).double()


def _mixed(water_box, positions=None, backend="python"):
    topology, system, _, _, ml_atoms = water_box
    args = {} if positions is None else {"positions": positions}
    info = MLPotential("so3lr", lrCutoff=LR_CUTOFF).createMixedSystem(
        topology, system, ml_atoms, embedding="viskrates_charge", precision="double", returnInfo=True,
        forceGroup=1, backend=backend, **args)
    return info["system"], info["chargeEmbedding"]


def _context(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy(context, groups=-1):
    return context.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _model(so3lr64, positions, box, ml_atoms):
    """SO3LR energy (kJ/mol) and charges (e) of the ML atoms, called directly in Å/eV."""
    with torch.no_grad():
        out = so3lr64(torch.tensor([8, 1, 1, 8, 1, 1]), torch.tensor(positions[ml_atoms] * 10.0),
                      torch.tensor(box * 10.0), None, torch.zeros(1, dtype=torch.float64))
    return float(out["energy"]) * EV_TO_KJ_PER_MOL, out["partial_charges"].numpy()


def _periodic_coulomb(charges, positions, box, sigma=2.6):
    """Exact periodic 1/r Coulomb energy (kJ/mol) of point charges, all pairs and images (tin-foil Ewald):
    the erf part from :func:`ewald_erf_energy`, the erfc part as a minimum-image real-space sum (erfc(L/2σ)
    ≈ 8e-7, so further images add less than 1e-4 kJ/mol)."""
    reciprocal = float(ewald_erf_energy(torch.tensor(charges), torch.tensor(positions * 10.0),
                                        torch.tensor(box * 10.0), sigma=sigma, tolerance=1e-14))
    d = positions[:, None, :] - positions[None, :, :]
    d -= np.round(d / np.diag(box)) * np.diag(box)
    r = np.linalg.norm(d, axis=-1) * 10.0
    np.fill_diagonal(r, np.inf)
    erfc = torch.special.erfc(torch.tensor(r / sigma)).numpy()
    real = 0.5 * COULOMB_CONSTANT * np.sum(np.outer(charges, charges) * erfc / r)
    return (reciprocal + real) * EV_TO_KJ_PER_MOL


def _classical_and_model_reference(water_box, so3lr64, positions):
    """E_MM-only (OpenMM, the ML atoms without charges, LJ and bonded terms) + SO3LR(ML) + ML–MM Lennard-Jones
    (direct sum), computed independently of the embedding code (kJ/mol)."""
    topology, system, _, box, ml_atoms = water_box
    ml = set(ml_atoms)
    mm_only = copy.deepcopy(system)
    nonbonded = next(f for f in mm_only.getForces() if isinstance(f, openmm.NonbondedForce))
    ff = [nonbonded.getParticleParameters(i) for i in range(system.getNumParticles())]
    sigmas = np.array([p[1].value_in_unit(unit.nanometer) for p in ff])
    epsilons = np.array([p[2].value_in_unit(unit.kilojoule_per_mole) for p in ff])
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
    e_mm = _energy(_context(mm_only, positions))
    e_ml, _ = _model(so3lr64, positions, box, ml_atoms)
    mm_atoms = np.array([i for i in range(len(positions)) if i not in ml])
    d = positions[mm_atoms][None, :, :] - positions[ml_atoms][:, None, :]
    d -= np.round(d / 1.8) * 1.8
    r = np.linalg.norm(d, axis=-1)
    sigma = 0.5 * (sigmas[ml_atoms][:, None] + sigmas[mm_atoms][None, :])
    epsilon = np.sqrt(epsilons[ml_atoms][:, None] * epsilons[mm_atoms][None, :])
    lj = np.where(r < CUTOFF, 4.0 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6), 0.0).sum()
    return e_mm + e_ml + lj


def _coulomb_reference(water_box, positions, ml_charges):
    """Coulomb energy (kJ/mol) of the ML charges ``ml_charges`` with all MM charges and with the ML region's
    periodic images (exact Ewald), i.e. everything Coulomb that involves an ML atom except the ML–ML pairs
    of the same image."""
    _, system, _, box, ml_atoms = water_box
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                        for i in range(system.getNumParticles())])
    with_ml = charges.copy()
    with_ml[ml_atoms] = ml_charges
    without_ml = charges.copy()
    without_ml[ml_atoms] = 0.0
    d = positions[ml_atoms][:, None, :] - positions[ml_atoms][None, :, :]
    d -= np.round(d / 1.8) * 1.8
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    same_cell = 0.5 * KE * np.sum(np.outer(ml_charges, ml_charges) / r)
    return _periodic_coulomb(with_ml, positions, box) - _periodic_coulomb(without_ml, positions, box) - same_cell


def test_energy_decomposition_uses_model_charges(water_box, so3lr64):
    """At q = q*, the mixed System's energy is MM–MM + SO3LR(ML) + ML–MM LJ + the exact periodic 1/r
    Coulomb energy of the model's charges with the MM charges (and the ML region's images): no ML–ML
    force-field term, and not the force field's ML charges. After moving the ML atoms, refresh_charges
    restores q = q* exactly. With a working openmm-torch, backend='torch' (the same embedded model scripted into
    a TorchForce) gives the same energy and forces."""
    topology, system, positions, box, ml_atoms = water_box
    mixed, embedding = _mixed(water_box, positions=positions)
    _, q = _model(so3lr64, positions, box, ml_atoms)
    np.testing.assert_allclose(embedding.charges, q, rtol=0, atol=1e-12)
    context = _context(mixed, positions)
    coulomb = _coulomb_reference(water_box, positions, q)
    reference = _classical_and_model_reference(water_box, so3lr64, positions) + coulomb
    assert _energy(context) == pytest.approx(reference, abs=2e-3)

    if torchforce_unavailable_reason() is None:
        # optimized_execution(False) (the autouse fixture) breaks openmm-torch's calls of submodules
        # ("Couldn't find method: 'forward'"); TorchForce runs in PyTorch's default mode.
        with torch.jit.optimized_execution(True):
            torch_context = _context(_mixed(water_box, positions=positions, backend="torch")[0], positions)
            torch_state = torch_context.getState(getEnergy=True, getForces=True)
        python_state = context.getState(getEnergy=True, getForces=True)
        assert torch_state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(
            python_state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), abs=1e-8)
        np.testing.assert_allclose(torch_state.getForces(asNumpy=True)._value,
                                   python_state.getForces(asNumpy=True)._value, rtol=0, atol=1e-8)

    # The model's charges differ from TIP3P's (−0.834, 0.417) by 0.08–0.16 e, which changes this Coulomb
    # energy by 24.6 kJ/mol (measured with _coulomb_reference): the tolerance above tells the charges apart.
    assert np.abs(q - np.array([-0.834, 0.417, 0.417] * 2)).min() > 0.05

    rng = np.random.default_rng(3)
    moved = positions.copy()
    moved[ml_atoms] += rng.normal(0.0, 0.01, (6, 3))
    context.setPositions(moved)
    _, q_moved = _model(so3lr64, moved, box, ml_atoms)
    reference_moved = (_classical_and_model_reference(water_box, so3lr64, moved)
                       + _coulomb_reference(water_box, moved, q_moved))
    stale = _energy(context)
    refreshed = embedding.refresh_charges(context)
    np.testing.assert_allclose(refreshed, q_moved, rtol=0, atol=1e-12)
    assert _energy(context) == pytest.approx(reference_moved, abs=2e-3)
    # With stale q* the truncated correction misses only part of (q − q*)·φ: small but not zero.
    assert 2e-3 < abs(stale - reference_moved) < 0.5


def test_forces_equal_finite_differences():
    """Forces of the mixed System away from q = q* (ML atoms displaced after q* was set) equal central
    differences of its energy, for every ML coordinate and the MM atom nearest to the ML region (it feels
    q(R), and the chain rule through q(R) moves forces onto the ML atoms). OpenMM's default PME accuracy
    suffices here (its forces are the exact gradient of its energy). The CPU platform gives the same forces."""
    water_box = water_box_with_ml_waters(BOX, CUTOFF, ml_waters=2, ewald_error_tolerance=5e-4)
    topology, system, positions, box, ml_atoms = water_box
    mixed, _ = _mixed(water_box, positions=positions)
    rng = np.random.default_rng(5)
    moved = positions.copy()
    moved[ml_atoms] += rng.normal(0.0, 0.01, (6, 3))
    context = _context(mixed, moved)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer)
    d = moved - moved[0]
    d -= np.round(d / 1.8) * 1.8
    near_mm = [i for i in np.argsort(np.linalg.norm(d, axis=1)) if i not in ml_atoms][:1]
    h = 1e-5
    for atom in ml_atoms + near_mm:
        for k in range(3):
            shifted = moved.copy()
            shifted[atom, k] += h
            context.setPositions(shifted)
            plus = _energy(context)
            shifted[atom, k] -= 2 * h
            context.setPositions(shifted)
            minus = _energy(context)
            assert forces[atom, k] == pytest.approx(-(plus - minus) / (2 * h), abs=2e-3, rel=1e-5), (atom, k)

    # The CPU platform accepts the System (it demands the NonbondedForce's exclusions in every nonbonded
    # force) and agrees within its single-precision nonbonded arithmetic.
    context.setPositions(moved)
    cpu = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    cpu.setPositions(moved)
    state = cpu.getState(getEnergy=True, getForces=True)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(_energy(context),
                                                                                               abs=0.02)
    np.testing.assert_allclose(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
                               forces, rtol=0, atol=2.0)


def test_without_positions_q_star_starts_from_force_field_charges(water_box, so3lr64):
    """Without ``positions`` q* are the force field's charges until the first refresh, after which the energy
    is the reference energy with the model's charges."""
    topology, system, positions, box, ml_atoms = water_box
    mixed, embedding = _mixed(water_box)
    np.testing.assert_allclose(embedding.charges, [-0.834, 0.417, 0.417] * 2, rtol=0, atol=1e-12)
    context = _context(mixed, positions)
    embedding.refresh_charges(context)
    _, q = _model(so3lr64, positions, box, ml_atoms)
    reference = (_classical_and_model_reference(water_box, so3lr64, positions)
                 + _coulomb_reference(water_box, positions, q))
    assert _energy(context) == pytest.approx(reference, abs=2e-3)


def test_errors(water_box):
    topology, system, positions, box, ml_atoms = water_box
    potential = MLPotential("so3lr", lrCutoff=LR_CUTOFF)
    assert "viskrates_charge" in potential.getSupportedEmbeddings()
    with pytest.raises(ValueError, match="interpolate"):
        potential.createMixedSystem(topology, system, ml_atoms, embedding="viskrates_charge", interpolate=True)
    with pytest.raises(ValueError, match="predicts partial charges"):
        MLPotential("visnet", modelPath="weights.pt").createMixedSystem(topology, system, ml_atoms,
                                                                        embedding="viskrates_charge")
    with pytest.raises(ValueError, match="mlLongRange"):
        potential.createMixedSystem(topology, system, ml_atoms, embedding="viskrates_charge", mlLongRange=True)
    with pytest.raises(ValueError, match="embeddingCutoff"):
        potential.createMixedSystem(topology, system, ml_atoms, embedding="viskrates_charge", embeddingCutoff=1.2)
    # A ML region that cuts covalent bonds: the error names them.
    ala2 = app.PDBFile(ALA2)
    ala = [a.index for a in ala2.topology.atoms() if a.residue.name == "ALA"]
    forcefield = app.ForceField("amber14-all.xml")
    ala2.topology.setPeriodicBoxVectors(np.eye(3) * 2.0)
    periodic = forcefield.createSystem(ala2.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8)
    with pytest.raises(ValueError, match=r"covalently bonded.*ALA2:N \(index 6\)–ACE1:C \(index 4\)"):
        potential.createMixedSystem(ala2.topology, periodic, ala, embedding="viskrates_charge")
    vacuum = forcefield.createSystem(ala2.topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ValueError, match="PME, Ewald or LJPME"):
        potential.createMixedSystem(ala2.topology, vacuum, list(range(22)), embedding="viskrates_charge")
    with pytest.raises(ValueError, match="ml_waters"):
        water_box_with_ml_waters(BOX, CUTOFF, ml_waters=0)
    with pytest.raises(ValueError, match="half the box edge"):
        water_box_with_ml_waters(BOX, 1.0)


def test_entry_point_module_imported_first():
    """Importing an entry-point module before openmm-ml must not make openmm-ml load it half-initialised
    (viskrates.openmm imports openmm-ml first; the same guards viskrates.openmm.mlpotential)."""
    code = ("import viskrates.openmm.chargeembedding; from openmmml import MLPotential; "
            "print(MLPotential('so3lr').getSupportedEmbeddings())")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "viskrates_charge" in result.stdout
