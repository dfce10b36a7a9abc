"""`viskrates simulate --membrane`: lipid bilayer systems (composition, forces, constraints, HMR) and a short run.

OpenMM's own POPC patch has 32,512 atoms and Modeller.addMembrane relaxes it with minutes of MD, so these tests
use a 2.2 nm wide piece of it (tests/data/membrane, 14 lipids, 589 waters) and SO3LR on a small ML region; a real run is
measured in the README.
"""
import os
from collections import Counter

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from viskrates.cli import main
from viskrates.simulate import SimulationSettings, _repartition_hydrogen_mass, build_system

HERE = os.path.dirname(__file__)
PATCH = os.path.join(HERE, "data", "membrane", "popc_patch_2.2nm.pdb")
ALA2 = os.path.join(HERE, "..", "examples", "structures", "alanine-dipeptide-implicit.pdb")
CHIGNOLIN = os.path.join(HERE, "..", "examples", "structures", "5awl_chignolin_protonated.pdb")


def _settings(tmp_path, **options):
    values = dict(structure=None, output_dir=str(tmp_path / "run"), membrane=PATCH, lr_cutoff_angstrom=9.0,
                  minimize_iterations=1, equilibration_steps=1, steps=2, report_interval=1, progress=False)
    values.update(options)
    return SimulationSettings(**values)


def _ml_constraints(system, ml_atoms):
    ml = set(ml_atoms)
    pairs = [system.getConstraintParameters(i)[:2] for i in range(system.getNumConstraints())]
    return [p for p in pairs if p[0] in ml and p[1] in ml], pairs


def test_pure_bilayer_ml_lipid_with_hmr_runs(tmp_path):
    """No protein: the patch as it is, one lipid in SO3LR, the rest amber14/lipid17 + TIP3P, HMR 1.5 amu; two steps."""
    settings = _settings(tmp_path, ml_region="1", hydrogen_mass_amu=1.5)
    topology, positions, system, ml_atoms = build_system(settings)
    residues = Counter(r.name for r in topology.residues())
    assert residues == {"POP": 14, "HOH": 589}
    lipid = [a for a in topology.atoms() if a.residue.id == "1" and a.residue.name == "POP"]
    assert ml_atoms == [a.index for a in lipid] and len(ml_atoms) == 134
    assert {a.element.symbol for a in lipid} == {"C", "H", "N", "O", "P"}  # all in SO3LR's element set
    names = [type(f).__name__ for f in system.getForces()]
    assert "MonteCarloMembraneBarostat" in names and "NonbondedForce" in names
    assert any(n in ("PythonForce", "TorchForce") for n in names)
    # openmm-ml removed the HBonds constraints inside the ML lipid; the other lipids and water keep theirs
    ml_pairs, pairs = _ml_constraints(system, ml_atoms)
    assert ml_pairs == [] and len(pairs) > 13 * 80
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.getNumParticles())])
    hydrogens = [a.index for a in lipid if a.element.symbol == "H"]
    np.testing.assert_allclose(masses[hydrogens], 1.5)
    plain = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(topology)
    plain_masses = [plain.getParticleMass(i).value_in_unit(unit.amu) for i in range(plain.getNumParticles())]
    assert masses.sum() == pytest.approx(sum(plain_masses), rel=1e-12)  # repartitioned, not added

    # two steps at the HMR time step of 1.5 fs stay finite
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1.5 * unit.femtosecond)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)  # the test patch is relaxed with amber14/lipid17 already
    simulation.step(2)
    state = simulation.context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert np.all(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))


def test_peptide_embedded_by_add_membrane(tmp_path):
    """Alanine dipeptide put into the bilayer (addMembrane with the test patch), SO3LR on the peptide.

    Only the building is tested: a run through the CLI spends minutes in OpenMM's constrained minimiser
    (~95 ML evaluations even for one iteration); test_pure_bilayer_ml_lipid_with_hmr_runs takes the steps."""
    settings = _settings(tmp_path, structure=ALA2, padding_nm=0.3)
    topology, positions, system, ml_atoms = build_system(settings)
    residues = [r.name for r in topology.residues()]
    assert residues[:3] == ["ACE", "ALA", "NME"] and ml_atoms == list(range(22))  # the peptide stays first
    # lipids near the peptide (shrunk to 50 % in x and y) were removed, the same number from each leaflet
    # (the test patch has 6 and 8); a neutral peptide needs no ions
    assert residues.count("POP") in (2, 4, 6, 8, 10, 12)
    assert residues.count("HOH") > 300 and "NA" not in residues and "CL" not in residues
    # the bilayer is centred on the peptide: the phosphorus atoms of both leaflets lie 1.3-2.5 nm above and
    # below its alanine CA
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    center = next(a.index for a in topology.atoms() if a.residue.name == "ALA" and a.name == "CA")
    box_z = topology.getPeriodicBoxVectors()[2][2].value_in_unit(unit.nanometer)
    phosphorus = [a.index for a in topology.atoms() if a.element.symbol == "P"]
    dz = (xyz[phosphorus, 2] - xyz[center, 2] + box_z / 2) % box_z - box_z / 2
    assert np.sum(dz > 0) > 0 and np.sum(dz < 0) > 0 and np.all((np.abs(dz) > 1.3) & (np.abs(dz) < 2.5))
    ml_pairs, pairs = _ml_constraints(system, ml_atoms)
    assert ml_pairs == [] and len(pairs) > 0
    assert any(isinstance(f, openmm.MonteCarloMembraneBarostat) for f in system.getForces())


def test_hydrogen_mass_repartitioning_matches_openmm():
    """Our HMR (used for full-ML Systems, which have no force field) equals ForceField.createSystem's."""
    pdb = app.PDBFile(ALA2)
    forcefield = app.ForceField("amber14-all.xml")
    plain = forcefield.createSystem(pdb.topology)
    reference = forcefield.createSystem(pdb.topology, hydrogenMass=1.5 * unit.amu)
    _repartition_hydrogen_mass(plain, pdb.topology, 1.5)
    ours = [plain.getParticleMass(i).value_in_unit(unit.amu) for i in range(plain.getNumParticles())]
    theirs = [reference.getParticleMass(i).value_in_unit(unit.amu) for i in range(reference.getNumParticles())]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    hydrogens = [a.index for a in pdb.topology.atoms() if a.element.symbol == "H"]
    np.testing.assert_allclose(np.array(ours)[hydrogens], 1.5)
    with pytest.raises(ValueError, match="leaves atom"):
        _repartition_hydrogen_mass(plain, pdb.topology, 5.0)


def test_membrane_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    # full ML with a charged peptide would need Na+ counter-ions, which SO3LR cannot evaluate: refused up front
    assert main(["simulate", CHIGNOLIN, "-o", str(out), "--no-fix", "--membrane", "--ml-region", "all"]) == 2
    assert "Na (Z=11)" in capsys.readouterr().err
    assert main(["simulate", "-o", str(out), "--membrane", PATCH]) == 2
    assert "no protein" in capsys.readouterr().err
    assert main(["simulate", "-o", str(out)]) == 2
    assert "structure file is needed" in capsys.readouterr().err
    assert main(["simulate", ALA2, "-o", str(out), "--membrane", "POPX"]) == 2
    assert "unknown membrane 'POPX'" in capsys.readouterr().err
    # the 2.2 nm patch is narrower than twice SO3LR's default 12 Å long-range cutoff
    assert main(["simulate", "-o", str(out), "--membrane", PATCH, "--ml-region", "1"]) == 2
    assert "narrower than twice" in capsys.readouterr().err
    assert not out.exists()
