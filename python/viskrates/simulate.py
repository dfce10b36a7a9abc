"""The main job: an ML/MM (or full-ML) molecular-dynamics run of a PDB protein in water.

Pipeline: PDBFixer (missing atoms, hydrogens at the chosen pH) -> Modeller (TIP3P, neutralising ions)
-> amber14 System with PME -> the ML region replaced by a viskrates model through openmm-ml's
mechanical embedding -> minimisation, equilibration, production MD with DCD and CSV output.
"""
import csv as csv_module
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

CAP_RESIDUES = {"ACE", "NME", "NH2"}
ION_RESIDUES = {"NA", "CL", "K", "MG", "CA", "ZN", "LI", "RB", "CS", "F", "BR", "I"}


@dataclasses.dataclass
class SimulationSettings:
    """Settings of :func:`run_simulation` (units in the field names)."""

    structure: str
    output_dir: str = "viskrates_run"
    model: str = "so3lr"
    ml_region: str = "protein"       # 'protein', 'all', or residue ids such as '1-5,8'
    fix: bool = True                  # run PDBFixer (missing atoms, hydrogens at ph)
    ph: float = 7.0
    padding_nm: float = 1.0
    lr_cutoff_angstrom: float = 12.0  # SO3LR long-range cutoff; the box is made at least twice as wide
    ionic_strength_molar: float = 0.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    # Strong coupling while equilibrating: after minimisation equipartition halves the kinetic energy, and
    # at 1/ps the thermostat needs picoseconds to restore the temperature (the short default left ~270 K).
    equilibration_friction_per_ps: float = 10.0
    timestep_fs: Optional[float] = None  # default: 1 fs (mechanical embedding), 0.5 fs (full ML)
    minimize_iterations: int = 100
    equilibration_steps: int = 250
    steps: int = 1000
    report_interval: int = 100
    precision: str = "single"
    platform: str = "CPU"
    seed: int = 2024
    progress: bool = True


def _has_hydrogens(topology: app.Topology) -> bool:
    return any(a.element is not None and a.element.symbol == "H" for a in topology.atoms())


def _remove_heterogens(fixer) -> None:
    """Remove water, ions and ligands but keep polymer residues and the ACE/NME/NH2 caps
    (PDBFixer.removeHeterogens would delete the caps too)."""
    from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues

    keep = set(proteinResidues) | set(dnaResidues) | set(rnaResidues) | CAP_RESIDUES
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete([r for r in fixer.topology.residues() if r.name not in keep])
    fixer.topology, fixer.positions = modeller.topology, modeller.positions


def prepare_structure(path: str, fix: bool, ph: float):
    """Read a PDB/PDBx file and (optionally) repair it with PDBFixer.

    Heterogens and crystal water are removed (the system is re-solvated), missing heavy atoms are
    added, and hydrogens are added for ``ph``. Missing loops are not modelled. Any crystal cell is dropped
    (NMR files carry a meaningless 1 Å CRYST1).

    Returns:
        ``(topology, positions)`` of the solute.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a structure without hydrogens while ``fix`` is False, or an empty structure.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"structure file {path!r} does not exist")
    if fix:
        from pdbfixer import PDBFixer
        fixer = PDBFixer(filename=path)
        fixer.findMissingResidues()
        fixer.missingResidues = {}
        fixer.findNonstandardResidues()
        fixer.replaceNonstandardResidues()
        _remove_heterogens(fixer)
        fixer.findMissingAtoms()
        fixer.addMissingAtoms()
        fixer.addMissingHydrogens(ph)
        topology, positions = fixer.topology, fixer.positions
    else:
        reader = app.PDBxFile(path) if path.endswith((".cif", ".pdbx")) else app.PDBFile(path)
        topology, positions = reader.topology, reader.positions
        if not _has_hydrogens(topology):
            raise ValueError(f"{path} has no hydrogen atoms, and fixing is disabled: ML potentials need every "
                             "hydrogen. Run without --no-fix (PDBFixer adds them at --ph), or protonate the file.")
        modeller = app.Modeller(topology, positions)
        modeller.deleteWater()
        topology, positions = modeller.topology, modeller.positions
    if topology.getNumAtoms() == 0:
        raise ValueError(f"{path} contains no atoms after removing water and heterogens")
    topology.setPeriodicBoxVectors(None)
    return topology, positions


def _net_charge(forcefield: app.ForceField, topology: app.Topology) -> float:
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
               for i in range(system.getNumParticles()))


def select_ml_atoms(topology: app.Topology, n_solute_atoms: int, ml_region: str) -> List[int]:
    """Indices of the ML atoms.

    ``ml_region``: ``'protein'`` (every solute atom: the fixed input structure, before solvation),
    ``'all'`` (every atom), or a comma-separated list of residue ids and ranges of the input structure
    (``'1-5,8'``).

    Raises:
        ValueError: a residue id that is not in the structure, or an empty selection.
    """
    atoms = list(topology.atoms())
    if ml_region == "all":
        selected = [a.index for a in atoms]
    elif ml_region == "protein":
        selected = [a.index for a in atoms[:n_solute_atoms] if a.residue.name not in ION_RESIDUES]
    else:
        wanted = set()
        for part in ml_region.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    first, last = (int(x) for x in part.split("-", 1))
                    wanted.update(str(i) for i in range(first, last + 1))
                else:
                    wanted.add(str(int(part)))
            except ValueError:
                raise ValueError(f"cannot read ML region {ml_region!r}: use 'protein', 'all' or residue ids "
                                 "like '1-5,8'") from None
        solute_residues = {a.residue.id for a in atoms[:n_solute_atoms]}
        missing = sorted(wanted - solute_residues, key=int)
        if missing:
            raise ValueError(f"ML region names residue ids {missing} that are not in the structure "
                             f"(it has residue ids {sorted(solute_residues, key=int)})")
        selected = [a.index for a in atoms[:n_solute_atoms] if a.residue.id in wanted]
    if not selected:
        raise ValueError(f"the ML region {ml_region!r} selects no atoms")
    return selected


def build_system(settings: SimulationSettings):
    """Prepare the structure, solvate it and build the ML/MM System.

    Returns:
        ``(topology, positions, system, ml_atoms)``.

    Raises:
        ValueError: see :func:`prepare_structure` and :func:`select_ml_atoms`; a solute whose force-field
            net charge is not an integer (it cannot be neutralised); elements the model does not support.
    """
    from openmmml import MLPotential

    topology, positions = prepare_structure(settings.structure, settings.fix, settings.ph)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    charge = _net_charge(forcefield, topology)
    if abs(charge - round(charge)) > 1e-3:
        raise ValueError(f"the solute's force-field net charge is {charge:.4f} e, not an integer, so it cannot be "
                         "neutralised with ions; check protonation states and non-standard residues")
    n_solute = topology.getNumAtoms()
    modeller = app.Modeller(topology, positions)
    # The periodic ML force sees one image of each pair, so the box must be at least twice its cutoff wide.
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    extent = float(np.max(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1))) * 2.0
    edge = max(extent + 2.0 * settings.padding_nm, 2.0 * settings.lr_cutoff_angstrom / 10.0 + 0.05)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(edge, edge, edge) * unit.nanometer,
                        ionicStrength=settings.ionic_strength_molar * unit.molar, neutralize=True)
    topology, positions = modeller.topology, modeller.positions
    ml_atoms = select_ml_atoms(topology, n_solute, settings.ml_region)

    potential = MLPotential(settings.model, lrCutoff=settings.lr_cutoff_angstrom)
    if settings.ml_region == "all" and settings.model == "so3lr":
        system = _full_ml_pme_system(topology, positions, settings)
    elif settings.ml_region == "all":
        system = potential.createSystem(topology, precision=settings.precision)
    else:
        mm_system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer,
                                            constraints=app.HBonds, rigidWater=True)
        system = potential.createMixedSystem(topology, mm_system, ml_atoms, precision=settings.precision)
    return topology, positions, system, ml_atoms


def _full_ml_pme_system(topology: app.Topology, positions, settings: SimulationSettings) -> openmm.System:
    """A fully SO3LR System whose electrostatics are the periodic Ewald sum of SO3LR's charges, via the PME
    hand-off (:func:`viskrates.openmm.add_pme_handoff`) instead of SO3LR's shifted-force truncation.

    The fixed hand-off charges q* are the model's charges of the solvated input structure; the hand-off is
    exact for them and approximate (smoothly, energy-conserving) as the charges change during the run.
    No constraints (the ML model has its own bonds; 0.5 fs is the default time step for this region).
    """
    import torch

    from .models import SO3LR
    from .openmm import add_pme_handoff, topology_atomic_numbers

    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    model = SO3LR(lr_cutoff=settings.lr_cutoff_angstrom).to(torch.float64 if settings.precision == "double"
                                                              else torch.float32)
    add_pme_handoff(system, model, topology_atomic_numbers(topology), positions)
    system.addForce(openmm.CMMotionRemover())
    return system


def _read_log(path: str) -> dict:
    """Columns of an OpenMM StateDataReporter CSV file, by header name."""
    with open(path) as handle:
        rows = list(csv_module.reader(handle))
    header = [name.lstrip("#").strip('"') for name in rows[0]]
    values = np.array(rows[1:], dtype=float).reshape(-1, len(header))
    return {name: values[:, i] for i, name in enumerate(header)}


def _run_steps(simulation: app.Simulation, steps: int, chunk_size: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=steps, unit="step", disable=not progress) as bar:
        done = 0
        while done < steps:
            chunk = min(chunk_size, steps - done)
            simulation.step(chunk)
            done += chunk
            bar.update(chunk)


def run_simulation(settings: SimulationSettings) -> dict:
    """Run the main job and write ``trajectory.dcd``, ``log.csv`` and ``final.pdb`` into ``output_dir``.

    Outputs appear only when the run has finished; a failed run leaves no partial files behind.

    Returns:
        Summary dict: ``ns_per_day``, ``total_energy_mean``/``_std`` (kJ/mol), ``temperature_mean``/``_std``
        (K), ``n_atoms``, ``n_ml_atoms`` and the output paths.
    """
    if settings.steps < 1 or settings.report_interval < 1:
        raise ValueError("steps and report_interval must be positive")

    def stage(message: str) -> None:
        # The set-up (fixing, solvation, minimisation) takes minutes on a CPU; say what is running.
        if settings.progress:
            print(f"[viskrates] {message}", file=sys.stderr, flush=True)

    stage(f"preparing {settings.structure} (PDBFixer: {'on' if settings.fix else 'off'}), solvating, building "
          f"the System ({settings.model} on the {settings.ml_region!r} ML region)")
    topology, positions, system, ml_atoms = build_system(settings)
    stage(f"{topology.getNumAtoms()} atoms, {len(ml_atoms)} in the ML region")
    timestep = settings.timestep_fs or (0.5 if settings.ml_region == "all" else 1.0)
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_k * unit.kelvin,
                                                 settings.equilibration_friction_per_ps / unit.picosecond,
                                                 timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(settings.seed)
    platform = openmm.Platform.getPlatformByName(settings.platform)
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    stage(f"minimising (at most {settings.minimize_iterations} iterations)")
    simulation.minimizeEnergy(maxIterations=settings.minimize_iterations)
    simulation.context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, settings.seed)
    stage(f"equilibrating ({settings.equilibration_steps} steps of {timestep} fs)")
    _run_steps(simulation, settings.equilibration_steps, settings.report_interval, settings.progress)
    integrator.setFriction(settings.friction_per_ps / unit.picosecond)
    stage(f"production ({settings.steps} steps of {timestep} fs)")

    os.makedirs(settings.output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=settings.output_dir)
    try:
        dcd = os.path.join(staging, "trajectory.dcd")
        csv = os.path.join(staging, "log.csv")
        simulation.reporters.append(app.DCDReporter(dcd, settings.report_interval))
        with open(csv, "w") as log:
            simulation.reporters.append(app.StateDataReporter(
                log, settings.report_interval, step=True, time=True, potentialEnergy=True, kineticEnergy=True,
                totalEnergy=True, temperature=True, speed=True))
            start = time.perf_counter()
            _run_steps(simulation, settings.steps, settings.report_interval, settings.progress)
            elapsed = time.perf_counter() - start
        simulation.reporters.clear()
        state = simulation.context.getState(getPositions=True, enforcePeriodicBox=True)
        with open(os.path.join(staging, "final.pdb"), "w") as handle:
            app.PDBFile.writeFile(topology, state.getPositions(), handle)
        table = _read_log(csv)
        outputs = {}
        for name in ("trajectory.dcd", "log.csv", "final.pdb"):
            outputs[name] = os.path.join(settings.output_dir, name)
            os.replace(os.path.join(staging, name), outputs[name])
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    total = table["Total Energy (kJ/mole)"]
    temperature = table["Temperature (K)"]
    simulated_ns = settings.steps * timestep * 1e-6
    return {
        "n_atoms": topology.getNumAtoms(),
        "n_ml_atoms": len(ml_atoms),
        "timestep_fs": timestep,
        "ns_per_day": simulated_ns / (elapsed / 86400.0),
        "total_energy_mean": float(total.mean()),
        "total_energy_std": float(total.std()),
        "temperature_mean": float(temperature.mean()),
        "temperature_std": float(temperature.std()),
        "outputs": outputs,
    }
