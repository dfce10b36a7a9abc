"""TorchForce backend (openmm-torch) against the PythonForce backend, the openmm-ml option, and the errors."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from openmmml import MLPotential

import viskrates.openmm.force as force_module
from viskrates.models import SO3LR, ViSNet
from viskrates.openmm import create_force, topology_atomic_numbers, torchforce_unavailable_reason

HERE = os.path.dirname(__file__)
ALA2 = os.path.join(HERE, "..", "examples", "structures", "alanine-dipeptide-implicit.pdb")

needs_torchforce = pytest.mark.skipif(torchforce_unavailable_reason() is not None,
                                      reason=f"no working openmm-torch: {torchforce_unavailable_reason()}")


@pytest.fixture(scope="module")
def so3lr64():
    return SO3LR().double()


def _water_box(n_side=3, spacing=0.31, seed=7):
    """27 jittered waters (nm) in a 2.5 nm cubic box (≥ 2 × SO3LR's 12 Å cutoff)."""
    rng = np.random.default_rng(seed)
    waters = []
    for ix in range(n_side):
        for iy in range(n_side):
            for iz in range(n_side):
                origin = np.array([ix, iy, iz]) * spacing + rng.normal(0, 0.02, 3)
                waters += [origin, origin + [0.0957, 0, 0], origin + [-0.024, 0.0927, 0]]
    return np.array(waters), np.eye(3) * 2.5, [8, 1, 1] * n_side ** 3


def _system_with_decoy(numbers, force, box=None):
    """Particle 0 is a decoy the ML force must ignore; the ML atoms are 1..N."""
    system = openmm.System()
    system.addParticle(1.0)
    for z in numbers:
        system.addParticle(16.0 if z == 8 else 1.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    return system


def _energy_forces(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@needs_torchforce
@pytest.mark.parametrize("periodic", [False, True])
def test_torchforce_equals_pythonforce(so3lr64, periodic):
    if periodic:
        positions, box, numbers = _water_box()
    else:
        pdb = app.PDBFile(ALA2)
        positions, box = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), None
        numbers = topology_atomic_numbers(pdb.topology)
    atoms = list(range(1, len(numbers) + 1))
    all_positions = np.vstack([[1.0, 1.2, 0.9], positions])
    results = {}
    for backend in ("python", "torch"):
        force = create_force(so3lr64, numbers, atoms=atoms, periodic=periodic, backend=backend)
        results[backend] = _energy_forces(_system_with_decoy(numbers, force, box), all_positions, "CPU")
    (e_py, f_py), (e_torch, f_torch) = results["python"], results["torch"]
    assert e_torch == pytest.approx(e_py, rel=1e-13)
    np.testing.assert_allclose(f_torch, f_py, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(f_torch[0], 0.0)
    assert np.abs(f_py[1:]).max() > 10.0  # the comparison is not between zeros


@needs_torchforce
def test_openmmml_torch_backend(so3lr64):
    pdb = app.PDBFile(ALA2)
    positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    potential = MLPotential("so3lr")
    system_torch = potential.createSystem(pdb.topology, precision="double", backend="auto")
    # System.getForces() returns plugin forces as plain openmm.Force; the name tells the class
    assert [f.getName() for f in system_torch.getForces()] == ["TorchForce", "CMMotionRemover"]
    e_torch, f_torch = _energy_forces(system_torch, positions)
    e_py, f_py = _energy_forces(potential.createSystem(pdb.topology, precision="double"), positions)
    assert e_torch == pytest.approx(e_py, rel=1e-13)
    np.testing.assert_allclose(f_torch, f_py, rtol=1e-10, atol=1e-9)


_ROUND_TRIP = textwrap.dedent("""
    import sys
    import numpy as np, openmm
    import viskrates  # loads the op library the deserialised TorchScript module calls
    from viskrates.openmm import torchforce_unavailable_reason
    assert torchforce_unavailable_reason() is None  # also loads openmm-torch's kernels
    system = openmm.XmlSerializer.deserialize(open(sys.argv[1]).read())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.load(sys.argv[2]))
    print(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
""")


@needs_torchforce
def test_torchforce_xml_round_trip(tmp_path):
    """Serialise a System with a TorchForce, deserialise and evaluate it in a fresh process.

    A subprocess, because openmm-torch 1.6's TorchForce deserialiser crashes the process (segfault in
    TorchForceProxy::deserialize) with PyPI's OpenMM 8.6.1; that case is reported as an expected failure.
    """
    # a small ViSNet (PyG weights of tests/data/visnet) keeps the serialised module and the subprocess light
    with open(os.path.join(HERE, "data", "visnet", "config_A.json")) as handle:
        config = json.load(handle)
    weights = torch.load(os.path.join(HERE, "data", "visnet", "weights_A.pt"), weights_only=True)
    model = ViSNet.from_pyg_state_dict(weights, **config).double()
    pdb = app.PDBFile(ALA2)
    positions = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    numbers = topology_atomic_numbers(pdb.topology)
    system = openmm.System()
    for atom in pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(create_force(model, numbers, backend="torch"))
    energy, _ = _energy_forces(system, positions)
    (tmp_path / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
    np.save(tmp_path / "positions.npy", positions)
    run = subprocess.run([sys.executable, "-c", _ROUND_TRIP, str(tmp_path / "system.xml"),
                          str(tmp_path / "positions.npy")], capture_output=True, text=True, timeout=300)
    if run.returncode == -11:
        pytest.xfail("openmm-torch's TorchForce deserialiser segfaults with this OpenMM build (ABI mismatch)")
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split()[-1]) == pytest.approx(energy, rel=1e-12)


def test_torch_backend_without_openmmtorch(so3lr64, monkeypatch):
    """openmm-torch missing (import fails): 'torch' raises naming the package, 'auto' falls back."""
    monkeypatch.setitem(sys.modules, "openmmtorch", None)  # makes `import openmmtorch` raise ImportError
    monkeypatch.setattr(force_module, "_TORCHFORCE_STATUS", None)
    assert "does not import" in torchforce_unavailable_reason()
    with pytest.raises(RuntimeError, match="backend='torch' needs a working openmm-torch.*acellera-openmmtorch"):
        create_force(so3lr64, [8, 1, 1], backend="torch")
    assert isinstance(create_force(so3lr64, [8, 1, 1], backend="auto"), openmm.PythonForce)
    with pytest.raises(ValueError, match="backend must be one of"):
        create_force(so3lr64, [8, 1, 1], backend="cuda")

