"""`viskrates bench --openmm`: the table's structure and the consistency of the cost split (never its speed)."""
import dataclasses
import io
import os

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

import viskrates.openmm
from viskrates import bench_openmm, simulate
from viskrates.cli import main

STRUCTURES = os.path.join(os.path.dirname(__file__), "..", "examples", "structures")


@pytest.fixture(scope="module")
def alanine_dipeptide():
    return bench_openmm.build_mlmm_system(bench_openmm.SYSTEM_SPECS["alanine-dipeptide"], STRUCTURES)


def test_ml_force_and_classical_groups_are_what_the_split_times(alanine_dipeptide):
    """The row's System is the main job's (simulate.create_system) with the benchmark's model; its ML force group
    evaluates exactly the module the benchmark times, and group 0 exactly the main job's classical forces, so that
    'model' and 'OpenMM' of the cost split measure disjoint parts of the step."""
    built = alanine_dipeptide
    model = bench_openmm.make_model(built, "reference", torch.float64)
    system, openmm_model = bench_openmm.add_ml_force(built, model, "python")
    ml_forces = [f for f in system.getForces() if f.getForceGroup() == bench_openmm.ML_GROUP]
    assert [type(f).__name__ for f in ml_forces] == ["PythonForce"]
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(built.positions)
    ml_energy = context.getState(getEnergy=True, groups={bench_openmm.ML_GROUP}).getPotentialEnergy()
    classical_energy = context.getState(getEnergy=True, groups={0}).getPotentialEnergy()

    box = np.array(context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    expected_ml = float(openmm_model(torch.tensor(built.positions[built.ml_atoms]), torch.tensor(box)))
    assert ml_energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected_ml, rel=1e-9, abs=1e-6)
    # the main job's System with the same model settings, its ML force removed
    settings = dataclasses.replace(built.settings, precision="double", model_backend="reference")
    main_job = simulate.create_system(settings, built.topology, built.positions, built.ml_atoms)
    main_job.removeForce(next(i for i, f in enumerate(main_job.getForces()) if isinstance(f, openmm.PythonForce)))
    classical = openmm.Context(main_job, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    classical.setPositions(built.positions)
    expected_classical = classical.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert classical_energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected_classical, rel=1e-9)
    assert built.total_charge == 0.0 and len(built.ml_atoms) == 22
    assert sorted(set(built.atomic_numbers)) == [1, 6, 7, 8]
    # the fused kernels reach the force too: same energy up to rounding
    fused_system, _ = bench_openmm.add_ml_force(built, bench_openmm.make_model(built, "fused", torch.float64), "python")
    fused = openmm.Context(fused_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    fused.setPositions(built.positions)
    fused_ml = fused.getState(getEnergy=True, groups={bench_openmm.ML_GROUP}).getPotentialEnergy()
    assert fused_ml.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected_ml, rel=1e-9, abs=1e-6)


@pytest.mark.skipif(viskrates.openmm.torchforce_unavailable_reason() is not None,
                    reason=f"no working openmm-torch: {viskrates.openmm.torchforce_unavailable_reason()}")
def test_torchforce_row_puts_the_torchforce_in_the_ml_group(alanine_dipeptide):
    """System.getForces() returns a plugin force as a plain openmm.Force; the TorchForce must still land in the ML
    group, or the 'OpenMM' part of the split (integration groups {0}) evaluates the model too."""
    model = bench_openmm.make_model(alanine_dipeptide, "fused", torch.float32)
    system, _ = bench_openmm.add_ml_force(alanine_dipeptide, model, "torch")
    ml_forces = [f for f in system.getForces() if f.getForceGroup() == bench_openmm.ML_GROUP]
    assert [f.getName() for f in ml_forces] == ["TorchForce"]
    assert all(f.getName() != "TorchForce" for f in system.getForces() if f.getForceGroup() == 0)


def test_full_ml_box_times_the_pme_handoff_model():
    """For the full-ML box the timed module is the PME hand-off's SO3LR (switched in-cutoff electrostatics), which
    is what its ML force evaluates, not the plain SO3LR (shifted-force electrostatics)."""
    built = bench_openmm.build_water_system(bench_openmm.SYSTEM_SPECS["water"], 300)
    model = bench_openmm.make_model(built, "reference", torch.float64)
    system, openmm_model = bench_openmm.add_ml_force(built, model, "python")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(built.positions)
    ml_energy = context.getState(getEnergy=True, groups={bench_openmm.ML_GROUP}).getPotentialEnergy()
    box = torch.tensor(np.array(context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)))
    positions = torch.tensor(built.positions)
    expected = float(openmm_model(positions, box))
    assert ml_energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(expected, rel=1e-9)
    plain = float(viskrates.openmm.OpenMMModel(model, built.atomic_numbers, periodic=True)(positions, box))
    assert abs(plain - expected) > 1.0  # kJ/mol: the two electrostatics really differ, so the check can fail


def test_rows_table_and_cost_split(alanine_dipeptide, one_torch_thread):
    # benchmark_system leaves torch's thread count to its caller; run_benchmark sets --threads (default 1). With
    # torch's default of all cores on a busy machine the timed Python call of the model took 3x the CPU time of
    # a whole TorchForce step, and the CPU-time bound below failed (before and after the rows used create_system).
    torchforce = viskrates.openmm.torchforce_unavailable_reason() is None
    backends = ["torch", "python"] if torchforce else ["python"]
    rows = bench_openmm.benchmark_system(alanine_dipeptide, backends, steps=7, warmup_steps=3, minimize_iterations=2,
                                         repeats=5)
    n_atoms = len(alanine_dipeptide.positions)
    assert [r["backend"] for r in rows] == backends
    for row in rows:
        assert row["status"] == "ok", row["status"]
        assert (row["system"], row["n_atoms"], row["n_ml_atoms"], row["steps"]) == ("alanine-dipeptide", n_atoms, 22, 7)
        step = row["seconds_per_step"]
        assert row["ns_per_day"] == pytest.approx(1.0e-6 * 86400.0 / step)  # 1 fs per step
        for split, total in ((row["split"], step), (row["split_cpu"], row["cpu_seconds_per_step"])):
            measured = [split["model"], split["neighbor_list"], split["openmm"]]
            assert all(part > 0 for part in measured), split
            assert sum(measured) + split["rest"] == pytest.approx(total)
        # The parts, measured separately, must not add up to far more than the step they are parts of. Checked in
        # process CPU time (wall-time parts overlap: PME runs concurrently with the ML force). The bound is loose on
        # purpose: on a loaded CI machine the OpenMM-only step alone took 1.2x the CPU time of a whole step (cache
        # and frequency effects), so a tight bound is a timing assertion. A split summed over its repeats instead
        # of taken per call, or in the wrong unit, exceeds it by at least the 5 repeats.
        cpu = row["split_cpu"]
        assert cpu["model"] + cpu["neighbor_list"] + cpu["openmm"] <= 3.0 * row["cpu_seconds_per_step"] + 2e-3, row
        assert row["model_total_seconds"] == pytest.approx(row["split"]["model"] + row["split"]["neighbor_list"])

    table = bench_openmm.format_table(rows)
    assert table[0].split() == ("system atoms total/ML backend ms/step cpu ms/step ns/day model ms NL ms OpenMM ms "
                                "rest ms").split()
    assert len(table) == 1 + len(rows)
    for line, row in zip(table[1:], rows):
        cells = line.split()
        assert cells[:3] == ["alanine-dipeptide", f"{n_atoms}/22", row["backend"]]
        assert float(cells[3]) == pytest.approx(row["seconds_per_step"] * 1e3, abs=0.051)
        assert float(cells[4]) == pytest.approx(row["cpu_seconds_per_step"] * 1e3, abs=0.051)
        assert cells[6:8] == ["(1", "fs)"]
        assert float(cells[8]) == pytest.approx(row["split"]["model"] * 1e3, abs=0.051)
    ratios = bench_openmm.format_ratios(rows)
    if torchforce:
        ratio = rows[1]["seconds_per_step"] / rows[0]["seconds_per_step"]
        assert ratios == [f"alanine-dipeptide: PythonForce/TorchForce ms/step {ratio:.2f} (CPU time "
                          f"{rows[1]['cpu_seconds_per_step'] / rows[0]['cpu_seconds_per_step']:.2f})"]
    else:
        assert ratios == []


def test_unavailable_torchforce_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(viskrates.openmm, "torchforce_unavailable_reason", lambda: "openmm-torch does not import")
    out = io.StringIO()
    rows = bench_openmm.run_benchmark(["alanine-dipeptide"], ["torch"], structure_dir=STRUCTURES, out=out,
                                      progress=False)
    assert rows == [{"system": "alanine-dipeptide", "backend": "torch",
                     "status": "skipped: openmm-torch does not import"}]
    text = out.getvalue()
    assert "machine: " in text and f"torch {torch.__version__}" in text and f"OpenMM {openmm.__version__}" in text
    assert "alanine-dipeptide torch: skipped: openmm-torch does not import" in text


def test_water_box_has_the_requested_atoms():
    built = bench_openmm.build_water_system(bench_openmm.SYSTEM_SPECS["water"], 300)
    assert built.system.getNumParticles() == 300 and built.full_ml and built.ml_atoms == list(range(300))
    assert built.atomic_numbers == [8, 1, 1] * 100
    mass = sum(built.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(300))
    assert mass == pytest.approx(100 * 18.015, rel=1e-3)
    edge = built.system.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.angstrom)
    assert built.lr_cutoff == pytest.approx(min(12.0, edge / 2 - 0.01))
    # whole TIP3P molecules in nm: O-H 0.09572 nm
    oh = np.linalg.norm(built.positions.reshape(100, 3, 3)[:, 1:] - built.positions[0::3, None], axis=-1)
    np.testing.assert_allclose(oh, 0.09572, atol=5e-4)


def test_bad_options_are_refused(capsys):
    with pytest.raises(ValueError, match="unknown or no system"):
        bench_openmm.run_benchmark(["argon"])
    with pytest.raises(ValueError, match="threads must be at least 1"):
        bench_openmm.run_benchmark(threads=0)
    with pytest.raises(ValueError, match="unknown OpenMM platform"):
        bench_openmm.run_benchmark(platform="Abacus")
    with pytest.raises(ValueError, match="multiple of 3"):
        bench_openmm.run_benchmark(["water"], water_atoms=3001)
    assert main(["bench", "--systems", "water"]) == 2
    assert "--systems need(s) --openmm" in capsys.readouterr().err
    assert main(["bench", "--openmm", "--sizes", "300"]) == 2
    assert "--sizes belong(s) to the model benchmark" in capsys.readouterr().err
