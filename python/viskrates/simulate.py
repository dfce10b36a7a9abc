"""The main job: an ML/MM (or full-ML) molecular-dynamics run of a PDB protein in water or in a lipid bilayer.

Pipeline: PDBFixer (missing atoms, hydrogens at the chosen pH) -> Modeller (TIP3P, neutralising ions; or a
bilayer with ``Modeller.addMembrane``) -> amber14 System (lipid17 for lipids) with PME -> the ML region
replaced by a viskrates model through openmm-ml's mechanical embedding -> minimisation, equilibration,
production MD with DCD and CSV output.
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
# the pre-equilibrated, solvated bilayer patches shipped with OpenMM (amber lipid17 residue names)
LIPID_TYPES = ("POPC", "POPE", "DLPC", "DLPE", "DMPC", "DOPC", "DPPC")


@dataclasses.dataclass
class SimulationSettings:
    """Settings of :func:`run_simulation` (units in the field names)."""

    structure: Optional[str]           # None only with ``membrane``: a pure lipid patch
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
    # kernels of the ML model: 'fused' (the viskrates ops) or 'reference' (pure PyTorch, the models' own default);
    # the same forces up to rounding, fused ~1.6x faster for alanine dipeptide's 22 ML atoms; None: the model's own
    model_backend: Optional[str] = "fused"
    platform: str = "CPU"
    seed: int = 2024
    progress: bool = True
    membrane: Optional[str] = None    # a lipid of LIPID_TYPES or a solvated patch PDB file: embed in a bilayer
    membrane_center_z_nm: Optional[float] = None  # default: the protein's centre (None)
    membrane_barostat: bool = True    # MonteCarloMembraneBarostat (1 bar, no surface tension) for membranes
    hydrogen_mass_amu: Optional[float] = None  # hydrogen mass repartitioning (e.g. 1.5); default 1.5 fs steps


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


def build_system(settings: SimulationSettings, backend: str = "python"):
    """Prepare the structure, solvate it (or embed it in a bilayer) and build the ML/MM System:
    :func:`prepare_system`, then :func:`create_system`.

    Args:
        settings: the job's settings.
        backend: of the ML force, ``'python'`` (``openmm.PythonForce``), ``'torch'`` (``openmmtorch.TorchForce``)
            or ``'auto'``; see :func:`viskrates.openmm.create_force`.

    Returns:
        ``(topology, positions, system, ml_atoms)``.

    Raises:
        ValueError: see :func:`prepare_system` and :func:`create_system`.
        RuntimeError: ``backend='torch'`` without a working openmm-torch.
    """
    topology, positions, ml_atoms = prepare_system(settings)
    return topology, positions, create_system(settings, topology, positions, ml_atoms, backend), ml_atoms


def prepare_system(settings: SimulationSettings):
    """Prepare the structure, solvate it (or embed it in a bilayer) and select the ML region.

    Returns:
        ``(topology, positions, ml_atoms)``: the solvated Topology, its positions (Quantity) and the indices of
        the ML atoms.

    Raises:
        ValueError: see :func:`prepare_structure`, :func:`select_ml_atoms` and :func:`embed_in_membrane`; a
            solute whose force-field net charge is not an integer (it cannot be neutralised); SO3LR on every atom
            of a system that needs sodium ions.
    """
    mm_forcefield = forcefield()
    if settings.structure is None:
        if settings.membrane is None:
            raise ValueError("a structure file is needed (only a pure lipid bilayer, --membrane, can do without)")
        if settings.ml_region == "protein":
            raise ValueError("a pure lipid bilayer has no protein: choose --ml-region all (SO3LR on every atom) or "
                             "lipid residue ids such as '1-2'")
        topology, positions, n_solute = pure_bilayer(settings)
    else:
        topology, positions = prepare_structure(settings.structure, settings.fix, settings.ph)
        charge = _net_charge(mm_forcefield, topology)
        if abs(charge - round(charge)) > 1e-3:
            raise ValueError(f"the solute's force-field net charge is {charge:.4f} e, not an integer, so it cannot be "
                             "neutralised with ions; check protonation states and non-standard residues")
        n_solute = topology.getNumAtoms()
        needs_sodium = charge < -0.5 or settings.ionic_strength_molar > 0
        if settings.ml_region == "all" and settings.model == "so3lr" and needs_sodium:
            # fail before the minutes of solvation or membrane building
            raise ValueError("with --ml-region all every ion is an ML atom, and SO3LR cannot evaluate Na (Z=11), "
                             f"which this system needs (net charge {charge:+.0f} e, ionic strength "
                             f"{settings.ionic_strength_molar} M): use the default ML region (the protein) instead")
        if settings.membrane is not None:
            topology, positions = embed_in_membrane(topology, positions, mm_forcefield, settings)
        else:
            topology, positions = _solvate(topology, positions, mm_forcefield, settings)
    _check_box(topology, settings)
    ml_atoms = select_ml_atoms(topology, n_solute, settings.ml_region)

    return topology, positions, ml_atoms


def create_system(settings: SimulationSettings, topology: app.Topology, positions, ml_atoms: List[int],
                  backend: str = "python") -> openmm.System:
    """The System of a prepared structure (:func:`prepare_system`): amber14/TIP3P with PME for the MM atoms and the
    ML model (``settings.model``, ``settings.precision``, ``settings.model_backend``) on ``ml_atoms`` through
    openmm-ml's mechanical embedding; with ``ml_region == 'all'`` a fully ML System (SO3LR: with the PME hand-off
    of its electrostatics); a membrane barostat for membranes.

    Args:
        backend: of the ML force, see :func:`build_system`.

    Raises:
        ValueError: elements the model does not support.
        RuntimeError: ``backend='torch'`` without a working openmm-torch.
    """
    from openmmml import MLPotential

    ml_args = {"precision": settings.precision, "backend": backend}
    if settings.model_backend is not None:
        ml_args["modelBackend"] = settings.model_backend
    potential = MLPotential(settings.model, lrCutoff=settings.lr_cutoff_angstrom)
    if settings.ml_region == "all" and settings.model == "so3lr":
        system = _full_ml_pme_system(topology, positions, settings, backend)
    elif settings.ml_region == "all":
        system = potential.createSystem(topology, **ml_args)
        _repartition_hydrogen_mass(system, topology, settings.hydrogen_mass_amu)
    else:
        hydrogen_mass = None if settings.hydrogen_mass_amu is None else settings.hydrogen_mass_amu * unit.amu
        mm_system = forcefield().createSystem(topology, nonbondedMethod=app.PME,
                                               nonbondedCutoff=1.0 * unit.nanometer, constraints=app.HBonds,
                                               rigidWater=True, hydrogenMass=hydrogen_mass)
        # openmm-ml removes the constraints between ML atoms (removeConstraints=True): ML bonds stay flexible
        system = potential.createMixedSystem(topology, mm_system, ml_atoms, **ml_args)
    if settings.membrane is not None and settings.membrane_barostat:
        system.addForce(openmm.MonteCarloMembraneBarostat(
            1.0 * unit.bar, 0.0 * unit.bar * unit.nanometer, settings.temperature_k * unit.kelvin,
            openmm.MonteCarloMembraneBarostat.XYIsotropic, openmm.MonteCarloMembraneBarostat.ZFree))
    return system


def forcefield() -> app.ForceField:
    """The main job's force field for the MM atoms: amber14-all (proteins, nucleic acids and lipid17, the lipids of
    OpenMM's membrane patches) with TIP3P water and ions."""
    return app.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def _solvate(topology: app.Topology, positions, forcefield: app.ForceField, settings: SimulationSettings):
    modeller = app.Modeller(topology, positions)
    # The periodic ML force sees one image of each pair, so the box must be at least twice its cutoff wide.
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    extent = float(np.max(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1))) * 2.0
    edge = max(extent + 2.0 * settings.padding_nm, 2.0 * settings.lr_cutoff_angstrom / 10.0 + 0.05)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(edge, edge, edge) * unit.nanometer,
                        ionicStrength=settings.ionic_strength_molar * unit.molar, neutralize=True)
    return modeller.topology, modeller.positions


def _lipid_patch(membrane: str):
    """OpenMM's solvated bilayer patch of a lipid type, or a patch PDB file (a periodic box with CRYST1)."""
    if membrane.upper() in LIPID_TYPES:
        return app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", membrane.upper() + ".pdb"))
    if os.path.exists(membrane):
        patch = app.PDBxFile(membrane) if membrane.endswith((".cif", ".pdbx")) else app.PDBFile(membrane)
        if patch.topology.getPeriodicBoxVectors() is None:
            raise ValueError(f"the membrane patch {membrane} has no periodic box (CRYST1 record)")
        return patch
    raise ValueError(f"unknown membrane {membrane!r}: use one of {', '.join(LIPID_TYPES)} or a solvated patch PDB file")


def embed_in_membrane(topology: app.Topology, positions, forcefield: app.ForceField, settings: SimulationSettings):
    """Embed the solute in a lipid bilayer with water and ions (OpenMM's ``Modeller.addMembrane``).

    The bilayer lies in the xy plane, centred at z = ``settings.membrane_center_z_nm`` (default: the solute's
    centre, so a peptide ends up inside the bilayer; for a membrane protein oriented as in the OPM database
    pass 0). The patch (``settings.membrane``) is tiled to leave ``settings.padding_nm`` around the solute, lipids
    within 0.22 nm of the solute shrunk by 50 % in x and y are removed, and a short MD with amber14/lipid17
    lets the bilayer relax around the growing solute (Wolf et al., J. Comput. Chem. 31, 2169 (2010)); then
    TIP3P water fills the box and Na+/Cl- neutralise it (and give ``settings.ionic_strength_molar``).
    The solute's atoms stay first. The relaxation takes minutes on a CPU: a single patch is ~32,000 atoms.

    Returns:
        ``(topology, positions)`` of the whole system, with its periodic box.

    Raises:
        ValueError: an unknown lipid type or a patch file without a box.
    """
    patch = _lipid_patch(settings.membrane)
    xyz = np.array(positions.value_in_unit(unit.nanometer))
    center_z = settings.membrane_center_z_nm
    if center_z is None:
        center_z = 0.5 * float(xyz[:, 2].min() + xyz[:, 2].max())
    modeller = app.Modeller(topology, positions)
    modeller.addMembrane(forcefield, lipidType=patch, membraneCenterZ=center_z * unit.nanometer,
                         minimumPadding=settings.padding_nm * unit.nanometer,
                         ionicStrength=settings.ionic_strength_molar * unit.molar, neutralize=True,
                         platform=openmm.Platform.getPlatformByName(settings.platform))
    return modeller.topology, modeller.positions


def pure_bilayer(settings: SimulationSettings):
    """A solvated lipid bilayer without protein: the patch ``settings.membrane`` as it is (OpenMM's POPC patch:
    128 lipids and 5,120 waters, 32,512 atoms in a 6.37 × 6.69 × 7.31 nm box). The lipids, which are
    zwitterionic and come first, play the solute (residue ids of ``--ml-region`` refer to them).

    Returns:
        ``(topology, positions, number of lipid atoms)``.

    Raises:
        ValueError: an ionic strength (only neutralising is done by Modeller, and a zwitterionic bilayer needs
            no counter-ions), or a patch whose lipids do not come before its water.
    """
    if settings.ionic_strength_molar > 0:
        raise ValueError("salt is only added around a protein (Modeller.addMembrane); the pure bilayer patch is "
                         "used as it is, without ions: drop --ionic-strength")
    patch = _lipid_patch(settings.membrane)
    residues = list(patch.topology.residues())
    is_lipid = [r.name not in ("HOH", "WAT") and r.name not in ION_RESIDUES for r in residues]
    n_lipids = sum(is_lipid)
    if n_lipids == 0 or not all(is_lipid[:n_lipids]):
        raise ValueError(f"the membrane patch {settings.membrane!r} must list its lipids before water and ions")
    n_lipid_atoms = sum(len(list(r.atoms())) for r in residues[:n_lipids])
    modeller = app.Modeller(patch.topology, patch.positions)
    return modeller.topology, modeller.positions, n_lipid_atoms


def _check_box(topology: app.Topology, settings: SimulationSettings) -> None:
    """The periodic ML force sees one image of each pair: every box width must be ≥ twice its cutoff."""
    vectors = topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    widths = [vectors[0][0], vectors[1][1], vectors[2][2]]
    if min(widths) < 2.0 * settings.lr_cutoff_angstrom / 10.0:
        raise ValueError(f"the periodic box ({' × '.join(f'{w:.2f}' for w in widths)} nm) is narrower than twice the "
                         f"ML long-range cutoff ({settings.lr_cutoff_angstrom} Å): use a larger patch or padding")


def _repartition_hydrogen_mass(system: openmm.System, topology: app.Topology, hydrogen_mass_amu: Optional[float]):
    """Hydrogen mass repartitioning (Hopkins et al., J. Chem. Theory Comput. 11, 1864 (2015)): every hydrogen
    bonded to a heavy atom gets ``hydrogen_mass_amu`` and its partner loses the difference, so the total mass
    and the dynamics of the centre of mass are unchanged while the fastest (X–H) vibrations slow down.
    Water hydrogens are repartitioned too (in full-ML runs water is flexible). Does nothing for None.

    Raises:
        ValueError: a mass that would leave a heavy atom lighter than 1 amu, or a non-positive mass.
    """
    if hydrogen_mass_amu is None:
        return
    if not hydrogen_mass_amu > 0:
        raise ValueError(f"the hydrogen mass must be positive, got {hydrogen_mass_amu} amu")
    for atom1, atom2 in topology.bonds():
        if atom1.element is not None and atom1.element.symbol == "H":
            atom1, atom2 = atom2, atom1
        if atom2.element is None or atom2.element.symbol != "H" or atom1.element is None \
                or atom1.element.symbol == "H":
            continue
        transfer = hydrogen_mass_amu - system.getParticleMass(atom2.index).value_in_unit(unit.amu)
        heavy = system.getParticleMass(atom1.index).value_in_unit(unit.amu) - transfer
        if heavy < 1.0:
            raise ValueError(f"hydrogen mass {hydrogen_mass_amu} amu leaves atom {atom1.index} ({atom1.name}) with "
                             f"{heavy:.2f} amu")
        system.setParticleMass(atom2.index, hydrogen_mass_amu * unit.amu)
        system.setParticleMass(atom1.index, heavy * unit.amu)


def _full_ml_pme_system(topology: app.Topology, positions, settings: SimulationSettings,
                        backend: str) -> openmm.System:
    """A fully SO3LR System whose electrostatics are the periodic Ewald sum of SO3LR's charges, via the PME
    hand-off (:func:`viskrates.openmm.add_pme_handoff`) instead of SO3LR's shifted-force truncation.

    The fixed hand-off charges q* are the model's charges of the solvated input structure; the hand-off is
    exact for them and approximate (smoothly, energy-conserving) as the charges change during the run.
    No constraints (the ML model has its own bonds; 0.5 fs is the default time step for this region, 1.5 fs
    with hydrogen mass repartitioning).
    """
    import torch

    from .models import SO3LR
    from .openmm import add_pme_handoff, topology_atomic_numbers

    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    kernels = {} if settings.model_backend is None else {"backend": settings.model_backend}
    model = SO3LR(lr_cutoff=settings.lr_cutoff_angstrom, **kernels).to(
        torch.float64 if settings.precision == "double" else torch.float32)
    add_pme_handoff(system, model, topology_atomic_numbers(topology), positions, backend=backend)
    _repartition_hydrogen_mass(system, topology, settings.hydrogen_mass_amu)
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

    environment = ("water" if settings.membrane is None
                   else f"a {settings.membrane} bilayer (minutes: addMembrane relaxes it)")
    stage(f"preparing {settings.structure or 'no protein'} (PDBFixer: {'on' if settings.fix else 'off'}), "
          f"putting it into {environment}, building the System ({settings.model} on the {settings.ml_region!r} "
          "ML region)")
    topology, positions, system, ml_atoms = build_system(settings)
    stage(f"{topology.getNumAtoms()} atoms, {len(ml_atoms)} in the ML region")
    if settings.timestep_fs is not None:
        timestep = settings.timestep_fs
    elif settings.hydrogen_mass_amu is not None:
        timestep = 1.5  # ML bonds are never constrained: their X–H stretches, slowed by HMR, set the step
    else:
        timestep = 0.5 if settings.ml_region == "all" else 1.0
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
