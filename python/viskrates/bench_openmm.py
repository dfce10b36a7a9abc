"""``viskrates bench --openmm``: speed of SO3LR molecular dynamics inside OpenMM, TorchForce against PythonForce.

Systems (issue 4, "Performance in OpenMM"):

* ``alanine-dipeptide``: alanine dipeptide in TIP3P water, ML/MM (SO3LR on the 22 peptide atoms, amber14 and
  PME for the rest, openmm-ml's mechanical embedding), 1 fs;
* ``chignolin``: chignolin (PDB 5AWL) in TIP3P water, ML/MM in the same way (166 ML atoms), 1 fs;
* ``water``: a periodic box of 1,000 TIP3P waters (3,000 atoms), everything SO3LR, with the PME hand-off of
  its electrostatics (:func:`viskrates.openmm.add_pme_handoff`), 0.5 fs.

The ML/MM systems are prepared once by the main job's :func:`viskrates.simulate.prepare_system` (PDBFixer, Modeller,
amber14, 1 nm of water but a box at least twice SO3LR's 12 Å long-range cutoff wide), the water box by
:func:`build_water_system` (OpenMM's Modeller). Then, for each force backend (``torch``: openmm-torch's ``TorchForce``,
``python``: ``openmm.PythonForce``), the System is built with that backend: for ML/MM by the main job's
:func:`viskrates.simulate.create_system` (so the rows time the main job's System, with the benchmark's model kernels
and precision), for the water box with :func:`viskrates.openmm.add_pme_handoff`. The first row minimises, the
others start from its minimised positions; a Context is created, velocities are drawn at 300 K, the
Langevin (``LangevinMiddleIntegrator``, 1/ps) integrator runs some warm-up steps (TorchScript's profiling
executor recompiles a module during its first three calls, so use at least 3) and then the timed MD steps.

Per row the table gives the wall time per MD step (median of the timed steps, each timed alone, so that a
step during which another process took the core does not count), the process CPU time per step (all threads;
with one thread, a CPU time well below the wall time means other processes took the core), ns/day at the
system's time step, and the cost split of a step, each part measured separately on the coordinates reached at
the end of the timed steps:

* ``model``: forward + backward (energy and ``-dE/dR``) of the same TorchScript module the force runs
  (:class:`viskrates.openmm.OpenMMModel`), called directly from Python, minus the neighbour-list time;
  median of ``repeats`` calls (after three untimed calls the first time the module is timed);
* ``NL``: the ``viskrates::neighbor_list`` op alone, called with the cutoffs SO3LR uses (short-range 4.5 Å,
  long-range ``lr_cutoff``); median of at least 10 calls;
* ``OpenMM``: an MD step of the same Context with the ML force excluded from the integration
  (``Integrator.setIntegrationForceGroups``): classical forces (amber14 with PME, or the PME hand-off's
  reciprocal-space and correction forces), constraints and the integrator itself; median over as many steps;
* ``rest``: ms/step minus the three parts: the force's own overhead (PythonForce: the Python call, the
  State and NumPy/torch conversions; TorchForce: the copies between OpenMM and torch). It is a difference of
  independent measurements, so on a busy machine it carries their noise. It can also be negative because
  the parts overlap: OpenMM's CPU platform computes PME's reciprocal space in its own thread pool (of
  ``OPENMM_CPU_THREADS`` threads, default all logical CPUs; ``viskrates bench --openmm`` sets it to
  ``--threads``), concurrently with the other forces, the ML force included. The result dicts hold the same
  split in process CPU time too (``split_cpu``), which has no overlap and which other processes disturb less.
  For TorchForce rows ``model`` overestimates the force's own cost: the same module called from C++ inside the
  step took up to ~1.4x less CPU time than the Python call that is timed (alanine dipeptide, 22 ML atoms; cause
  not found), so there ``rest`` is too small and is often negative even in CPU time.

After the table, the ratio PythonForce ms/step / TorchForce ms/step is printed for every system with both rows.
A force backend that cannot run (no working openmm-torch for ``torch``) is reported as skipped with the
reason; a row that fails (an exception while building or running it) as failed with the error. The header
describes the machine (CPU model, logical CPUs, load average, threads) and the versions of Python, torch,
OpenMM, openmm-ml and openmm-torch.
"""
import argparse
import copy
import dataclasses
import importlib.metadata
import os
import platform as platform_module
import statistics
import sys
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import openmm
import openmm.app
import openmm.unit as unit
import torch

if TYPE_CHECKING:
    from .simulate import SimulationSettings

SYSTEMS = ("alanine-dipeptide", "chignolin", "water")
FORCE_BACKENDS = ("torch", "python")
MODEL_BACKENDS = ("fused", "reference")
PRECISIONS = {"single": torch.float32, "double": torch.float64}
TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
SEED = 2024
LR_CUTOFF = 12.0  # Å, SO3LR's official long-range cutoff
ML_GROUP = 1  # force group of the ML force; every other force is put into group 0
NL_MIN_REPEATS = 10
# TorchScript's profiling executor profiles and recompiles a module during its first calls (measured for SO3LR:
# calls 2 and 3 take seconds, from the 4th on the steady state), so the first three calls are not timed
MODEL_WARMUP_CALLS = 3
COLUMNS = ("system", "atoms total/ML", "backend", "ms/step", "cpu ms/step", "ns/day", "model ms", "NL ms",
           "OpenMM ms", "rest ms")


@dataclasses.dataclass
class SystemSpec:
    """A benchmark system and its defaults (units in the field names)."""

    name: str
    description: str
    timestep_fs: float
    steps: int                 # timed MD steps per backend (default of --steps)
    warmup_steps: int          # untimed MD steps before them
    minimize_iterations: int   # L-BFGS iterations of the one minimisation per system
    structure: Optional[str] = None  # PDB file in the structures folder (ML/MM systems)


# Defaults sized so that all rows together take a few minutes on 2 CPU cores (one step of the 3,000-atom
# full-ML box costs seconds, one of alanine dipeptide tens of milliseconds).
SYSTEM_SPECS: Dict[str, SystemSpec] = {
    "alanine-dipeptide": SystemSpec("alanine-dipeptide", "alanine dipeptide in water, ML/MM", 1.0, 50, 4, 20,
                                    "alanine-dipeptide-implicit.pdb"),
    "chignolin": SystemSpec("chignolin", "chignolin in water, ML/MM", 1.0, 20, 4, 20,
                            "5awl_chignolin_protonated.pdb"),
    "water": SystemSpec("water", "water box, full ML + PME hand-off", 0.5, 3, 3, 3),
}


# defaults of the --openmm options (check_arguments refuses a changed one without --openmm)
_OPENMM_DEFAULTS = {"systems": list(SYSTEMS), "force_backends": list(FORCE_BACKENDS), "model_backend": "fused",
                    "steps": None, "warmup_steps": None, "minimize_iterations": None, "water_atoms": 3000,
                    "platform": "CPU", "structure_dir": None}


@dataclasses.dataclass
class BuiltSystem:
    """A benchmark system without its ML force, and what is needed to build the System of a row
    (:func:`add_ml_force`).

    ``positions`` [N, 3] nm; ``ml_atoms`` the indices of the ML atoms (all atoms for the full-ML box),
    ``atomic_numbers`` theirs; ``full_ml`` selects the PME hand-off instead of mechanical embedding. Full-ML box:
    ``system`` holds masses, box and a centre-of-mass motion remover, ``total_charge`` is the box's net charge (e).
    ML/MM: ``settings`` and ``topology`` are the main job's, from which :func:`viskrates.simulate.create_system`
    builds the System (``system`` is None); ``total_charge`` is the ML region's force-field net charge (e), which
    openmm-ml also gives the model.
    """

    spec: SystemSpec
    system: Optional[openmm.System]
    positions: np.ndarray
    ml_atoms: List[int]
    atomic_numbers: List[int]
    total_charge: float
    lr_cutoff: float
    full_ml: bool
    settings: Optional["SimulationSettings"] = None
    topology: Optional[openmm.app.Topology] = None


def default_structure_dir() -> Optional[str]:
    """``examples/structures`` of the source checkout this package is installed from (editable install), else of
    the working directory, else None."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(here, "..", "..", "examples", "structures"), os.path.join("examples", "structures")):
        if os.path.isfile(os.path.join(folder, SYSTEM_SPECS["chignolin"].structure)):
            return os.path.normpath(folder)
    return None


def _is_ml_force(force: openmm.Force) -> bool:
    # System.getForces() returns a plugin force (openmm-torch's TorchForce) as a plain openmm.Force: its name,
    # which defaults to the class name, identifies it
    return isinstance(force, openmm.PythonForce) or force.getName() == "TorchForce"


def build_mlmm_system(spec: SystemSpec, structure_dir: str, lr_cutoff: float = LR_CUTOFF) -> BuiltSystem:
    """Solvate ``spec.structure`` with the protein as ML region, through the main job's
    :func:`viskrates.simulate.prepare_system`; the rows build their Systems from it (:func:`add_ml_force`).

    Raises:
        FileNotFoundError: the structure is not in ``structure_dir``.
        ValueError: see :func:`viskrates.simulate.prepare_system`, and a protein whose force-field charges do not
            add up to an integer.
    """
    from .openmm import ml_region_charge, topology_atomic_numbers
    from .simulate import SimulationSettings, forcefield, prepare_system

    path = os.path.join(structure_dir, spec.structure)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure {path!r} of the {spec.name} benchmark does not exist; give the folder "
                                "holding it with --structure-dir (the repository's examples/structures)")
    settings = SimulationSettings(structure=path, ml_region="protein", lr_cutoff_angstrom=lr_cutoff, progress=False)
    topology, positions, ml_atoms = prepare_system(settings)
    charges = forcefield().createSystem(topology)
    return BuiltSystem(spec, None, np.array(positions.value_in_unit(unit.nanometer)), list(ml_atoms),
                       topology_atomic_numbers(topology, ml_atoms), ml_region_charge(charges, ml_atoms), lr_cutoff,
                       full_ml=False, settings=settings, topology=topology)


def build_water_system(spec: SystemSpec, n_atoms: int) -> BuiltSystem:
    """A periodic cubic box of ``n_atoms / 3`` TIP3P waters as a System with masses and a centre-of-mass motion
    remover. OpenMM's Modeller keeps exactly that many waters of its pre-equilibrated box (``numAdded``) and sizes
    the box to them; that leaves about 10 % fewer waters per volume than liquid water. SO3LR's long-range cutoff is
    min(12 Å, half the box edge minus 0.01 Å) because the box must be twice the cutoff wide.

    Raises:
        ValueError: ``n_atoms`` is not a positive multiple of 3.
    """
    from .openmm import topology_atomic_numbers
    from .units import NM_TO_ANGSTROM

    if n_atoms < 3 or n_atoms % 3:
        raise ValueError(f"a water box has a multiple of 3 atoms, got {n_atoms}")
    modeller = openmm.app.Modeller(openmm.app.Topology(), [])
    modeller.addSolvent(openmm.app.ForceField("amber14/tip3p.xml"), model="tip3p", numAdded=n_atoms // 3)
    topology = modeller.topology
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    box = topology.getPeriodicBoxVectors()
    system.setDefaultPeriodicBoxVectors(*box)
    system.addForce(openmm.CMMotionRemover())
    edges = [box[i][i].value_in_unit(unit.nanometer) * NM_TO_ANGSTROM for i in range(3)]
    lr_cutoff = min(LR_CUTOFF, 0.5 * min(edges) - 0.01)
    return BuiltSystem(spec, system, np.array(modeller.positions.value_in_unit(unit.nanometer)),
                       list(range(topology.getNumAtoms())), topology_atomic_numbers(topology), 0.0, lr_cutoff,
                       full_ml=True)


def make_model(built: BuiltSystem, model_backend: str, dtype: torch.dtype) -> torch.nn.Module:
    """The pretrained SO3LR with ``built.lr_cutoff`` (Å), kernels ``model_backend`` ('fused' or 'reference') and
    parameters of ``dtype``, in eval mode."""
    from .models import SO3LR

    return SO3LR(lr_cutoff=built.lr_cutoff, backend=model_backend).to(dtype).eval()


def add_ml_force(built: BuiltSystem, model: torch.nn.Module, force_backend: str):
    """The System of a row: ``built``'s System with the SO3LR force of ``force_backend`` in group :data:`ML_GROUP`,
    every other force in group 0.

    ML/MM: the main job's System (:func:`viskrates.simulate.create_system`), whose openmm-ml force holds an SO3LR
    of ``model``'s kernels and precision; full-ML box: a copy of ``built.system`` with the PME hand-off of
    ``model``.

    Returns:
        ``(system, openmm_model)``: the System and the (unscripted) :class:`viskrates.openmm.OpenMMModel` whose
        TorchScript form the force evaluates (for the full-ML box: the PME hand-off's model, whose
        electrostatics are the switched in-cutoff term).

    Raises:
        RuntimeError: ``force_backend='torch'`` without a working openmm-torch.
    """
    from .openmm import OpenMMModel, add_pme_handoff
    from .simulate import create_system

    if built.full_ml:
        system = copy.deepcopy(built.system)
        handoff = add_pme_handoff(system, model, built.atomic_numbers, built.positions,
                                  total_charge=built.total_charge, backend=force_backend)
        openmm_model = handoff.openmm_model
    else:
        precision = "double" if next(model.parameters()).dtype == torch.float64 else "single"
        settings = dataclasses.replace(built.settings, precision=precision, model_backend=model.network.backend)
        system = create_system(settings, built.topology, built.positions, built.ml_atoms, backend=force_backend)
        openmm_model = OpenMMModel(model, built.atomic_numbers, built.total_charge, periodic=True).eval()
    for force in system.getForces():
        force.setForceGroup(ML_GROUP if _is_ml_force(force) else 0)
    return system, openmm_model


def _timed(call: Callable[[], None]) -> Tuple[float, float]:
    """(wall, process CPU) seconds of one ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def _median_seconds(call: Callable[[], None], repeats: int, warmup: int = 0) -> Tuple[float, float]:
    """Median (wall, process CPU) seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = [_timed(call) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


class ModelTimer:
    """Times energy + ``-dE/dR`` of the TorchScript form of an :class:`viskrates.openmm.OpenMMModel`.

    The module is scripted at the first :meth:`time` call from the OpenMMModel given then (the rows of one system
    evaluate the same model, so one scripted module serves them all) and warmed up with
    :data:`MODEL_WARMUP_CALLS` untimed calls once.
    """

    def __init__(self):
        self.module: Optional[torch.jit.ScriptModule] = None

    def time(self, openmm_model: torch.nn.Module, positions_nm: np.ndarray, box_nm: np.ndarray,
             repeats: int) -> Tuple[float, float]:
        """Median (wall, process CPU) seconds of ``repeats`` calls at ``positions_nm`` [n_ML, 3] nm in the box
        ``box_nm`` [3, 3] nm (rows)."""
        warmup = 0
        if self.module is None:
            self.module = torch.jit.script(openmm_model)
            warmup = MODEL_WARMUP_CALLS
        module = self.module
        dtype = module.total_charge.dtype
        positions = torch.tensor(positions_nm, dtype=dtype)
        box = torch.tensor(box_nm, dtype=dtype)

        def call():
            leaf = positions.clone().requires_grad_(True)
            torch.autograd.grad(module(leaf, box), leaf)

        return _median_seconds(call, repeats, warmup)


def time_neighbor_list(model: torch.nn.Module, positions_nm: np.ndarray, box_nm: np.ndarray,
                       repeats: int) -> Tuple[float, float]:
    """Median (wall, process CPU) seconds of the neighbour lists an SO3LR forward pass builds:
    ``viskrates::neighbor_list`` at ``model.sr_cutoff`` (positions requiring grad, as in the model) and at
    ``model.lr_cutoff`` (detached), on ``positions_nm`` [n_ML, 3] nm in the box ``box_nm`` [3, 3] nm, converted
    to Å as OpenMMModel does; at least :data:`NL_MIN_REPEATS` calls after one untimed call."""
    from .ops import neighbor_list
    from .units import NM_TO_ANGSTROM

    dtype = next(model.parameters()).dtype
    positions = torch.tensor(positions_nm, dtype=dtype) * NM_TO_ANGSTROM
    box = torch.tensor(box_nm, dtype=dtype) * NM_TO_ANGSTROM
    cutoffs = [float(model.sr_cutoff)] + ([] if model.lr_cutoff is None else [float(model.lr_cutoff)])

    def call():
        neighbor_list(positions.clone().requires_grad_(True), cutoffs[0], box)
        for cutoff in cutoffs[1:]:
            neighbor_list(positions, cutoff, box)

    return _median_seconds(call, max(repeats, NL_MIN_REPEATS), 1)


def _platform(name: str, threads: int):
    platform = openmm.Platform.getPlatformByName(name)
    properties = {"Threads": str(threads)} if "Threads" in platform.getPropertyNames() else {}
    return platform, properties


def run_row(built: BuiltSystem, model: torch.nn.Module, timer: ModelTimer, force_backend: str,
            steps: int, warmup_steps: int, minimize_iterations: int, repeats: int, platform: str, threads: int,
            start_positions: Optional[np.ndarray]) -> Dict:
    """Build, (optionally) minimise and run one (system, force backend) row; returns its result dict.

    ``start_positions`` [N, 3] nm: already minimised positions to start from (no minimisation), or None to
    minimise ``built.positions`` with at most ``minimize_iterations`` L-BFGS iterations.

    Returns:
        dict with ``seconds_per_step`` (wall), ``cpu_seconds_per_step`` (process CPU time), ``ns_per_day``,
        ``split`` (wall seconds per step of ``model``, ``neighbor_list``, ``openmm``, ``rest``), ``split_cpu``
        (the same in process CPU time), ``model_total_seconds`` (wall, model incl. neighbour list),
        ``minimized_positions``.

    Raises:
        RuntimeError: the simulation produced a non-finite energy, or the force backend cannot run.
    """
    system, openmm_model = add_ml_force(built, model, force_backend)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond,
                                                 built.spec.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(SEED)
    context = openmm.Context(system, integrator, *_platform(platform, threads))
    if start_positions is None:
        context.setPositions(built.positions)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)  # tolerance kJ/mol/nm
    else:
        context.setPositions(start_positions)
    minimized = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, SEED)
    integrator.step(warmup_steps)
    step_wall, step_cpu = _median_seconds(lambda: integrator.step(1), steps)

    state = context.getState(getPositions=True, getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not np.isfinite(energy):
        raise RuntimeError(f"the simulation of {built.spec.name} produced a non-finite energy ({energy}); shorten "
                           "the time step or minimise longer")
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[built.ml_atoms]
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    model_total = timer.time(openmm_model, positions, box, repeats)
    nl = time_neighbor_list(model, positions, box, repeats)

    integrator.setIntegrationForceGroups({0})
    openmm_step = _median_seconds(lambda: integrator.step(1), steps, 1)

    splits = []
    for k, step in enumerate((step_wall, step_cpu)):
        split = {"model": model_total[k] - nl[k], "neighbor_list": nl[k], "openmm": openmm_step[k]}
        split["rest"] = step - sum(split.values())
        splits.append(split)
    return {"seconds_per_step": step_wall, "cpu_seconds_per_step": step_cpu,
            "ns_per_day": built.spec.timestep_fs * 1e-6 * 86400.0 / step_wall,
            "split": splits[0], "split_cpu": splits[1], "model_total_seconds": model_total[0],
            "minimized_positions": minimized}


def benchmark_system(built: BuiltSystem, force_backends: Sequence[str], model_backend: str = "fused",
                     dtype: torch.dtype = torch.float32, threads: int = 1, steps: Optional[int] = None,
                     warmup_steps: Optional[int] = None, minimize_iterations: Optional[int] = None, repeats: int = 3,
                     platform: str = "CPU", say: Callable[[str], None] = lambda message: None) -> List[Dict]:
    """The rows of one built system: :func:`run_row` for each force backend, sharing one SO3LR model, one
    minimisation (in the first row that runs) and one :class:`ModelTimer`.

    ``steps``, ``warmup_steps``, ``minimize_iterations``: None takes the system's default
    (:data:`SYSTEM_SPECS`). ``threads``: of the OpenMM platform (torch's thread count is the caller's, see
    :func:`run_benchmark`). A row that raises RuntimeError, ValueError or an OpenMM exception gets the status
    ``'failed: …'``; the others ``'ok'`` (see :func:`run_benchmark` for the fields).
    """
    spec = built.spec
    n_steps = spec.steps if steps is None else steps
    n_warmup = spec.warmup_steps if warmup_steps is None else warmup_steps
    n_minimize = spec.minimize_iterations if minimize_iterations is None else minimize_iterations
    model = make_model(built, model_backend, dtype)
    info = {"system": spec.name, "n_atoms": len(built.positions), "n_ml_atoms": len(built.ml_atoms),
            "timestep_fs": spec.timestep_fs, "steps": n_steps}
    start_positions, timer, results = None, ModelTimer(), []
    for backend in force_backends:
        result = dict(info, backend=backend)
        results.append(result)
        say(f"{spec.name}: {backend} backend, {n_steps} steps after {n_warmup} warm-up steps")
        try:
            row = run_row(built, model, timer, backend, n_steps, n_warmup, n_minimize, repeats, platform, threads,
                          start_positions)
        except (RuntimeError, ValueError, openmm.OpenMMException) as error:
            result["status"] = f"failed: {type(error).__name__}: {error}"
            continue
        start_positions = row.pop("minimized_positions")
        result.update(row, status="ok")
    return results


def machine_description(threads: int, platform: str) -> List[str]:
    """Lines describing the machine and software: CPU model, logical CPUs, load average, threads, versions."""
    cpu = platform_module.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"

    def version(*distributions: str) -> str:
        for name in distributions:
            try:
                return f"{importlib.metadata.version(name)} ({name})"
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    pme_threads = os.environ.get("OPENMM_CPU_THREADS", f"{os.cpu_count()} (all logical CPUs)")
    return [f"machine: {cpu}, {os.cpu_count()} logical CPUs, load average {load} (1/5/15 min)",
            f"threads: torch {threads}, OpenMM {platform} platform {threads}, OpenMM CPU PME {pme_threads}",
            f"software: Python {platform_module.python_version()}, torch {torch.__version__}, OpenMM "
            f"{openmm.__version__}, openmm-ml {version('openmmml')}, openmm-torch "
            f"{version('acellera-openmmtorch', 'openmmtorch')}"]


def format_table(results: Sequence[Dict]) -> List[str]:
    """Rows of the result table (header first), columns :data:`COLUMNS`, whitespace-aligned."""
    rows = [list(COLUMNS)]
    for r in results:
        atoms = f"{r['n_atoms']}/{r['n_ml_atoms']}" if "n_atoms" in r else "-"
        if r["status"] != "ok":
            rows.append([r["system"], atoms, r["backend"], r["status"]] + ["-"] * (len(COLUMNS) - 4))
            continue
        split = r["split"]
        rows.append([r["system"], atoms, r["backend"], f"{r['seconds_per_step'] * 1e3:.1f}",
                     f"{r['cpu_seconds_per_step'] * 1e3:.1f}", f"{r['ns_per_day']:.3f} ({r['timestep_fs']:g} fs)"]
                    + [f"{split[k] * 1e3:.1f}" for k in ("model", "neighbor_list", "openmm", "rest")])
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(w) if k < 3 else cell.rjust(w) for k, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def format_ratios(results: Sequence[Dict]) -> List[str]:
    """One line per system with both a ``torch`` and a ``python`` row that ran: PythonForce ms/step / TorchForce
    ms/step (wall and CPU time; above 1 means TorchForce is faster)."""
    lines = []
    for name in dict.fromkeys(r["system"] for r in results):
        rows = {r["backend"]: r for r in results if r["system"] == name and r["status"] == "ok"}
        if "torch" in rows and "python" in rows:
            wall = rows["python"]["seconds_per_step"] / rows["torch"]["seconds_per_step"]
            cpu = rows["python"]["cpu_seconds_per_step"] / rows["torch"]["cpu_seconds_per_step"]
            lines.append(f"{name}: PythonForce/TorchForce ms/step {wall:.2f} (CPU time {cpu:.2f})")
    return lines


def run_benchmark(systems: Sequence[str] = SYSTEMS, force_backends: Sequence[str] = FORCE_BACKENDS,
                  model_backend: str = "fused", precision: str = "single", threads: int = 1,
                  steps: Optional[int] = None, warmup_steps: Optional[int] = None,
                  minimize_iterations: Optional[int] = None, repeats: int = 3, water_atoms: int = 3000,
                  platform: str = "CPU", structure_dir: Optional[str] = None, out=None, progress: bool = True
                  ) -> List[Dict]:
    """Run the OpenMM benchmark (module docstring) and print the machine description and the table.

    Args:
        systems: subset of :data:`SYSTEMS`.
        force_backends: subset of :data:`FORCE_BACKENDS` (``torch``: TorchForce, ``python``: PythonForce).
        model_backend: ``'fused'`` (viskrates kernels) or ``'reference'`` (pure PyTorch) SO3LR.
        precision: ``'single'`` (float32) or ``'double'`` (float64) model evaluation.
        threads: torch intra-op threads and OpenMM CPU-platform threads (restored for torch afterwards).
        steps, warmup_steps, minimize_iterations: per row / per system; None takes each system's default
            (:data:`SYSTEM_SPECS`).
        repeats: timed calls of the model (median) for the cost split; the neighbour list gets at least 10.
        water_atoms: atoms of the full-ML water box (a multiple of 3).
        platform: OpenMM platform name.
        structure_dir: folder with the ML/MM structures (default: :func:`default_structure_dir`).
        out: text stream of the report (default: sys.stdout at call time).
        progress: say on stderr which system and backend is running.

    Returns:
        One dict per (system, force backend): ``system``, ``backend``, ``status`` (``'ok'``, ``'skipped: …'`` or
        ``'failed: …'``), and for built systems ``n_atoms``, ``n_ml_atoms``, ``timestep_fs``, ``steps``; for
        ``'ok'`` rows also ``seconds_per_step``, ``cpu_seconds_per_step``, ``ns_per_day``, ``split`` (wall seconds
        per step: ``model``, ``neighbor_list``, ``openmm``, ``rest``; they add up to ``seconds_per_step``),
        ``split_cpu`` (the same in process CPU time, adding up to ``cpu_seconds_per_step``) and
        ``model_total_seconds``.

    Raises:
        ValueError: unknown system, backend, model backend, precision or platform; empty selection; threads,
            steps or repeats < 1; warm-up steps or minimisation iterations < 0; water_atoms not a positive multiple
            of 3 (with the water system).
        FileNotFoundError: no structure folder for an ML/MM system.
    """
    for name, chosen, allowed in (("system", systems, SYSTEMS), ("force backend", force_backends, FORCE_BACKENDS),
                                  ("model backend", [model_backend], MODEL_BACKENDS),
                                  ("precision", [precision], tuple(PRECISIONS))):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            raise ValueError(f"unknown or no {name}(s) {bad}; choose from {', '.join(allowed)}")
    if "water" in systems and (water_atoms < 3 or water_atoms % 3):
        raise ValueError(f"water_atoms must be a positive multiple of 3 (atoms of whole waters), got {water_atoms}")
    for name, value, least in (("threads", threads, 1), ("steps", steps, 1), ("repeats", repeats, 1),
                               ("warmup_steps", warmup_steps, 0), ("minimize_iterations", minimize_iterations, 0)):
        if value is not None and value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if platform not in available:
        raise ValueError(f"unknown OpenMM platform {platform!r}; this OpenMM has {', '.join(available)}")
    if any(SYSTEM_SPECS[s].structure for s in systems):
        structure_dir = structure_dir or default_structure_dir()
        if structure_dir is None:
            raise FileNotFoundError("the ML/MM structures (examples/structures of the viskrates repository) were not "
                                    "found; run from the repository or give --structure-dir")
    from .openmm import torchforce_unavailable_reason

    out = sys.stdout if out is None else out
    dtype = PRECISIONS[precision]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def say(message: str) -> None:
        if progress:
            print(f"[viskrates bench --openmm] {message}", file=sys.stderr, flush=True)

    print(f"viskrates bench --openmm: SO3LR ({model_backend} backend, {precision} precision) in OpenMM MD, "
          f"Langevin {TEMPERATURE_K:g} K", file=out)
    for line in machine_description(threads, platform):
        print(line, file=out)
    results = []
    try:
        for name in systems:
            spec = SYSTEM_SPECS[name]
            reasons = {b: (torchforce_unavailable_reason() if b == "torch" else None) for b in force_backends}
            runnable = [b for b in force_backends if reasons[b] is None]
            built, error = None, None
            if runnable:
                say(f"{name}: building the System")
                try:
                    built = (build_water_system(spec, water_atoms) if spec.structure is None
                             else build_mlmm_system(spec, structure_dir))
                except (RuntimeError, ValueError) as caught:
                    error = f"failed: {type(caught).__name__}: {caught}"
            rows = benchmark_system(built, runnable, model_backend, dtype, threads, steps, warmup_steps,
                                    minimize_iterations, repeats, platform, say) if built is not None else []
            for backend in force_backends:
                if reasons[backend] is not None:
                    results.append({"system": name, "backend": backend, "status": f"skipped: {reasons[backend]}"})
                elif error is not None:
                    results.append({"system": name, "backend": backend, "status": error})
                else:
                    results.append(rows.pop(0))
    finally:
        torch.set_num_threads(previous_threads)
    for line in format_table(results) + format_ratios(results):
        print(line, file=out)
    for r in results:
        if r["status"] != "ok":
            print(f"{r['system']} {r['backend']}: {r['status']}", file=out)
    for name in systems:
        spec = SYSTEM_SPECS[name]
        print(f"{name}: {spec.description}, {spec.timestep_fs:g} fs, "
              f"{spec.steps if steps is None else steps} timed steps after "
              f"{spec.warmup_steps if warmup_steps is None else warmup_steps} warm-up steps", file=out)
    print("ms/step: wall time per MD step (median of the timed steps); cpu ms/step: process CPU time per step (all "
          "threads); model: forward + backward of the force's TorchScript module called from Python, minus NL; "
          "NL: viskrates::neighbor_list at SO3LR's two cutoffs; OpenMM: an MD step without the ML force (classical "
          "forces, constraints, integrator); rest: ms/step minus the three (PythonForce/TorchForce overhead and data "
          "conversion; negative when parts overlap, e.g. OpenMM's PME thread runs alongside the ML force, or when "
          "other processes disturbed the separate measurements)", file=out)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``viskrates bench --openmm`` (an argument group; ``--openmm`` itself, ``--threads``, ``--repeats``
    and ``--dtype``, shared with the model benchmark, are added by :func:`viskrates.bench.add_arguments`)."""
    group = parser.add_argument_group("OpenMM benchmark (with --openmm)")
    defaults = _OPENMM_DEFAULTS
    group.add_argument("--systems", nargs="+", default=defaults["systems"], choices=SYSTEMS, help="(default: all)")
    group.add_argument("--force-backends", nargs="+", default=defaults["force_backends"], choices=FORCE_BACKENDS,
                       help="torch: openmm-torch TorchForce, python: openmm.PythonForce (default: both)")
    group.add_argument("--model-backend", default=defaults["model_backend"], choices=MODEL_BACKENDS,
                       help="(default: %(default)s)")
    group.add_argument("--steps", type=int, default=None,
                       help="timed MD steps per row (default per system: " +
                            ", ".join(f"{s.name} {s.steps}" for s in SYSTEM_SPECS.values()) + ")")
    group.add_argument("--warmup-steps", type=int, default=None, help="untimed MD steps before them "
                       "(default per system: " + ", ".join(f"{s.name} {s.warmup_steps}" for s in SYSTEM_SPECS.values())
                       + ")")
    group.add_argument("--minimize-iterations", type=int, default=None, help="(default per system: " +
                       ", ".join(f"{s.name} {s.minimize_iterations}" for s in SYSTEM_SPECS.values()) + ")")
    group.add_argument("--water-atoms", type=int, default=defaults["water_atoms"], help="atoms of the full-ML water box, a multiple of 3 "
                       "(default: %(default)s)")
    group.add_argument("--platform", default=defaults["platform"], help="OpenMM platform (default: %(default)s)")
    group.add_argument("--structure-dir", default=None,
                       help="folder with the ML/MM structures (default: the repository's examples/structures)")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse options of one benchmark given to the other (they would be ignored silently).

    Raises:
        ValueError: with ``--openmm``, a non-default ``--models``, ``--sizes``, ``--backends``, ``--no-ptxas`` or
            ``--memory-limit``;
            without it, a non-default option of :func:`add_arguments`.
    """
    from .bench import BACKENDS, DEFAULT_SIZES, MODELS

    if args.openmm:
        model_defaults = {"models": list(MODELS), "sizes": list(DEFAULT_SIZES), "backends": list(BACKENDS),
                          "no_ptxas": False, "memory_limit": None}
        given = [name for name, default in model_defaults.items() if getattr(args, name) != default]
        if given:
            raise ValueError(f"--{', --'.join(g.replace('_', '-') for g in given)} belong(s) to the model benchmark, "
                             "not to --openmm (use --model-backend, --systems)")
    else:
        given = [name for name, default in _OPENMM_DEFAULTS.items() if getattr(args, name) != default]
        if given:
            raise ValueError(f"--{', --'.join(g.replace('_', '-') for g in given)} need(s) --openmm")


def run_from_arguments(args: argparse.Namespace) -> int:
    """Run :func:`run_benchmark` with the options of :func:`add_arguments` (``dtype`` float64 = double precision).

    Also sets ``OPENMM_CPU_THREADS`` to ``--threads`` unless it is set: OpenMM's CPU PME reads it (once per
    process, at its first use) for its own thread pool, which otherwise uses every logical CPU.
    """
    os.environ.setdefault("OPENMM_CPU_THREADS", str(args.threads))
    run_benchmark(args.systems, args.force_backends, args.model_backend,
                  "double" if args.dtype == "float64" else "single", args.threads, args.steps, args.warmup_steps,
                  args.minimize_iterations, args.repeats, args.water_atoms, args.platform, args.structure_dir)
    return 0
