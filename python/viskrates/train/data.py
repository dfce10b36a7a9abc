"""Datasets of labelled structures for training: extended XYZ and NPZ readers with explicit units, splits,
per-element energy shifts and batching of variable-size molecules.

Everything is converted on load to the model convention: Å, eV, eV/Å, e, e·Å.
"""
import hashlib
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..units import EV_TO_KJ_PER_MOL

#: Energy units accepted by the readers, in eV. kcal/mol uses the thermochemical calorie (4.184 J);
#: Hartree is CODATA 2018 (27.211386245988 eV).
ENERGY_UNITS: Dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kJ/mol": 1.0 / EV_TO_KJ_PER_MOL,
    "kcal/mol": 4.184 / EV_TO_KJ_PER_MOL,
    "Hartree": 27.211386245988,
}
#: Length units accepted by the readers, in Å (Bohr: CODATA 2018, 0.529177210903 Å).
LENGTH_UNITS: Dict[str, float] = {"Angstrom": 1.0, "nm": 10.0, "Bohr": 0.529177210903}
#: Dipole units accepted by the readers, in e·Å (1 D = 1e-21/c C·m = 0.20819434 e·Å).
DIPOLE_UNITS: Dict[str, float] = {"e*Angstrom": 1.0, "Debye": 0.20819433622621247, "e*Bohr": 0.529177210903}

_ALIASES = {"Å": "Angstrom", "A": "Angstrom", "angstrom": "Angstrom", "ev": "eV", "hartree": "Hartree",
            "Ha": "Hartree", "bohr": "Bohr", "kcal/mol": "kcal/mol", "kj/mol": "kJ/mol", "D": "Debye",
            "debye": "Debye", "eA": "e*Angstrom"}


def unit_factor(unit: str, table: Dict[str, float], what: str) -> float:
    """Factor that converts a value in ``unit`` into the model unit of ``what`` (a key of ``table``).

    Raises:
        ValueError: unknown unit (the message lists the known ones).
    """
    name = _ALIASES.get(unit, unit)
    if name not in table:
        raise ValueError(f"unknown {what} unit {unit!r}; known: {', '.join(table)}")
    return table[name]


@dataclass
class Structure:
    """One labelled structure in model units.

    Attributes:
        atomic_numbers: [N] int64.
        positions: [N, 3] float64, Å.
        energy: reference energy (eV) or None.
        forces: [N, 3] float64 (eV/Å) or None.
        dipole: [3] float64 (e·Å) or None.
        total_charge: net charge (e).
    """
    atomic_numbers: np.ndarray
    positions: np.ndarray
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    dipole: Optional[np.ndarray] = None
    total_charge: float = 0.0


def read_extxyz(path: str, energy_unit: str, length_unit: str = "Angstrom", energy_key: str = "energy",
                forces_key: str = "forces", dipole_key: Optional[str] = None, dipole_unit: str = "e*Angstrom",
                charge_key: str = "total_charge") -> List[Structure]:
    """Read an extended XYZ file (through ``ase.io.read``) into :class:`Structure` s in Å / eV.

    Energies are taken from ``info[energy_key]`` (or the calculator ase attaches), forces from the per-atom
    array ``forces_key`` in ``energy_unit/length_unit``. A ``units="E,..."`` comment entry, as written by some
    converters, must agree with ``energy_unit``: a file labelled in kcal/mol read as eV is an error, not a
    silent factor of 23.

    Raises:
        FileNotFoundError: missing file. ValueError: unknown unit, units disagreeing with the file's own
        label, a structure without energy or forces of the wrong shape, an empty file.
    """
    import ase.io

    e_factor = unit_factor(energy_unit, ENERGY_UNITS, "energy")
    l_factor = unit_factor(length_unit, LENGTH_UNITS, "length")
    d_factor = unit_factor(dipole_unit, DIPOLE_UNITS, "dipole")
    frames = ase.io.read(path, index=":", format="extxyz")
    if len(frames) == 0:
        raise ValueError(f"{path}: no structures")
    structures = []
    for index, atoms in enumerate(frames):
        declared = atoms.info.get("units")
        if isinstance(declared, str):
            declared_energy = declared.split(",")[1] if "," in declared else declared
            if unit_factor(declared_energy, ENERGY_UNITS, "energy") != e_factor:
                raise ValueError(f"{path}: frame {index} declares units {declared!r} but energy_unit is "
                                 f"{energy_unit!r}; set energy_unit to match the file")
        calc = atoms.calc
        energy = atoms.info.get(energy_key)
        if energy is None and calc is not None and energy_key == "energy":
            energy = calc.results.get("energy")
        forces = atoms.arrays.get(forces_key)
        if forces is None and calc is not None and forces_key == "forces":
            forces = calc.results.get("forces")
        dipole = None
        if dipole_key is not None:
            dipole = atoms.info.get(dipole_key)
            if dipole is None and calc is not None:
                dipole = calc.results.get(dipole_key)
            if dipole is None:
                raise ValueError(f"{path}: frame {index} has no dipole {dipole_key!r}")
            dipole = np.asarray(dipole, dtype=np.float64).reshape(3) * d_factor
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            if forces.shape != (len(atoms), 3):
                raise ValueError(f"{path}: frame {index} forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
            forces = forces * (e_factor / l_factor)
        structures.append(Structure(
            atomic_numbers=atoms.get_atomic_numbers().astype(np.int64),
            positions=np.asarray(atoms.get_positions(), dtype=np.float64) * l_factor,
            energy=None if energy is None else float(energy) * e_factor,
            forces=forces, dipole=dipole,
            total_charge=float(atoms.info.get(charge_key, 0.0))))
    return structures


def read_npz(path: str, energy_unit: str, length_unit: str = "Angstrom", keys: Optional[Dict[str, str]] = None,
             dipole_unit: str = "e*Angstrom") -> List[Structure]:
    """Read an NPZ of equally sized structures (the MD17/rMD17 layout) into :class:`Structure` s in Å / eV.

    Arrays (names changeable through ``keys``): ``atomic_numbers`` [N] or [M, N] (alias ``z``/``nuclear_charges``),
    ``positions`` [M, N, 3] (alias ``R``/``coords``), ``energy`` [M] (alias ``E``/``energies``), optional
    ``forces`` [M, N, 3] (alias ``F``), ``dipole`` [M, 3], ``total_charge`` [M].

    Raises:
        ValueError: unknown unit, missing arrays, inconsistent shapes.
    """
    e_factor = unit_factor(energy_unit, ENERGY_UNITS, "energy")
    l_factor = unit_factor(length_unit, LENGTH_UNITS, "length")
    d_factor = unit_factor(dipole_unit, DIPOLE_UNITS, "dipole")
    keys = dict(keys or {})
    data = np.load(path)
    aliases = {"atomic_numbers": ["atomic_numbers", "z", "nuclear_charges", "Z"],
               "positions": ["positions", "R", "coords"], "energy": ["energy", "E", "energies"],
               "forces": ["forces", "F"], "dipole": ["dipole", "dipoles"], "total_charge": ["total_charge"]}

    def find(name: str, required: bool) -> Optional[np.ndarray]:
        for candidate in ([keys[name]] if name in keys else aliases[name]):
            if candidate in data.files:
                return np.asarray(data[candidate])
        if required:
            raise ValueError(f"{path}: no array for {name} (tried {keys.get(name) or aliases[name]}; "
                             f"file has {data.files})")
        return None

    numbers = find("atomic_numbers", True).astype(np.int64)
    positions = find("positions", True).astype(np.float64) * l_factor
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"{path}: positions must be [M, N, 3], got {positions.shape}")
    count = positions.shape[0]
    if numbers.ndim == 1:
        numbers = np.broadcast_to(numbers, (count, numbers.shape[0]))
    if numbers.shape != positions.shape[:2]:
        raise ValueError(f"{path}: atomic numbers {numbers.shape} do not match positions {positions.shape}")
    energy = find("energy", True).astype(np.float64).reshape(-1) * e_factor
    if energy.shape[0] != count:
        raise ValueError(f"{path}: {energy.shape[0]} energies for {count} structures")
    forces = find("forces", False)
    if forces is not None:
        forces = forces.astype(np.float64) * (e_factor / l_factor)
        if forces.shape != positions.shape:
            raise ValueError(f"{path}: forces {forces.shape} do not match positions {positions.shape}")
    dipole = find("dipole", False)
    if dipole is not None:
        dipole = dipole.astype(np.float64).reshape(count, 3) * d_factor
    charge = find("total_charge", False)
    return [Structure(atomic_numbers=np.array(numbers[m]), positions=positions[m], energy=float(energy[m]),
                      forces=None if forces is None else forces[m], dipole=None if dipole is None else dipole[m],
                      total_charge=0.0 if charge is None else float(charge[m]))
            for m in range(count)]


def dataset_hash(structures: Sequence[Structure]) -> str:
    """SHA-256 over the numbers, positions and labels (model units, float64): identifies the training data."""
    digest = hashlib.sha256()
    for s in structures:
        for array in (s.atomic_numbers.astype(np.int64), s.positions.astype(np.float64)):
            digest.update(np.ascontiguousarray(array).tobytes())
        for label in (s.energy, s.forces, s.dipole):
            if label is not None:
                digest.update(np.ascontiguousarray(np.asarray(label, dtype=np.float64)).tobytes())
    return digest.hexdigest()


def split_dataset(structures: Sequence[Structure], fractions: Sequence[float], seed: int) -> List[List[Structure]]:
    """Random split into consecutive parts of a seeded permutation, e.g. ``fractions=(0.9, 0.1)``.

    Each part gets ``floor(f·M)`` structures, the last part (if the fractions add up to 1) takes the rest.

    Raises:
        ValueError: negative fractions, fractions summing above 1, or an empty part.
    """
    if any(f < 0 for f in fractions) or sum(fractions) > 1.0 + 1e-9:
        raise ValueError(f"split fractions must be ≥ 0 and add up to at most 1, got {list(fractions)}")
    order = np.random.default_rng(seed).permutation(len(structures))
    parts, start = [], 0
    for k, fraction in enumerate(fractions):
        last = k == len(fractions) - 1 and abs(sum(fractions) - 1.0) < 1e-9
        stop = len(structures) if last else start + int(math.floor(fraction * len(structures)))
        if stop <= start:
            raise ValueError(f"split {list(fractions)} of {len(structures)} structures leaves part {k} empty")
        parts.append([structures[i] for i in order[start:stop]])
        start = stop
    return parts


def fit_energy_shifts(structures: Sequence[Structure], num_elements: int,
                      baseline: Optional[Sequence[float]] = None) -> np.ndarray:
    """Per-element energy shifts ε_Z (eV) by least squares, ``E_m − baseline_m ≈ Σ_Z n_mZ ε_Z``.

    Elements absent from the data get 0. With a single composition (one molecule), the system is
    rank-deficient; ``numpy.linalg.lstsq`` returns the minimum-norm solution, which reproduces the mean
    energy exactly, which is all a fixed composition can determine.

    Args:
        structures: with energies. num_elements: size of the returned table (indexed by Z).
        baseline: optional [M] energies (eV) to subtract first (fine-tuning: the pretrained prediction).

    Returns:
        [num_elements] float64 shifts (eV).

    Raises:
        ValueError: a structure without energy, or an element ≥ num_elements.
    """
    counts = np.zeros((len(structures), num_elements))
    targets = np.zeros(len(structures))
    for m, s in enumerate(structures):
        if s.energy is None:
            raise ValueError(f"structure {m} has no energy; energy shifts need energies")
        if s.atomic_numbers.max() >= num_elements:
            raise ValueError(f"element Z={s.atomic_numbers.max()} is outside the model's table of {num_elements}")
        np.add.at(counts[m], s.atomic_numbers, 1.0)
        targets[m] = s.energy - (0.0 if baseline is None else baseline[m])
    present = counts.sum(0) > 0
    solution = np.linalg.lstsq(counts[:, present], targets, rcond=None)[0]
    shifts = np.zeros(num_elements)
    shifts[present] = solution
    return shifts


def read_isolated_atom_energies(path: str, energy_unit: str) -> Dict[int, float]:
    """Energies (eV) of single-atom frames of an extended XYZ file, as ``{Z: E0}`` (MACE's ``E0s``).

    Raises:
        ValueError: the file has no single-atom frame.
    """
    result = {}
    for s in read_extxyz(path, energy_unit, forces_key="__none__"):
        if len(s.atomic_numbers) == 1 and s.energy is not None:
            result[int(s.atomic_numbers[0])] = s.energy
    if not result:
        raise ValueError(f"{path}: no single-atom frames with an energy")
    return result


def collate(structures: Sequence[Structure], dtype: torch.dtype = torch.float64) -> Dict[str, Tensor]:
    """Concatenate structures into one batch for the models' ``batch`` argument.

    Returns a dict with ``atomic_numbers`` [N] int64, ``positions`` [N, 3] (Å, ``dtype``), ``batch`` [N]
    int64 (sorted structure index), ``total_charge`` [B], ``num_atoms`` [B] int64 and, if every structure
    has them, ``energy`` [B] (eV), ``forces`` [N, 3] (eV/Å), ``dipole`` [B, 3] (e·Å).
    """
    out = {
        "atomic_numbers": torch.from_numpy(np.concatenate([s.atomic_numbers for s in structures])),
        "positions": torch.from_numpy(np.concatenate([s.positions for s in structures])).to(dtype),
        "batch": torch.cat([torch.full((len(s.atomic_numbers),), b, dtype=torch.long)
                            for b, s in enumerate(structures)]),
        "total_charge": torch.tensor([s.total_charge for s in structures], dtype=dtype),
        "num_atoms": torch.tensor([len(s.atomic_numbers) for s in structures], dtype=torch.long),
    }
    if all(s.energy is not None for s in structures):
        out["energy"] = torch.tensor([s.energy for s in structures], dtype=dtype)
    if all(s.forces is not None for s in structures):
        out["forces"] = torch.from_numpy(np.concatenate([s.forces for s in structures])).to(dtype)
    if all(s.dipole is not None for s in structures):
        out["dipole"] = torch.from_numpy(np.stack([s.dipole for s in structures])).to(dtype)
    return out


def batches(structures: Sequence[Structure], batch_size: int, shuffle: bool, seed: int,
            epoch: int) -> List[List[Structure]]:
    """Split into batches of ``batch_size`` structures (the last may be smaller).

    The order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone, so a resumed run sees
    exactly the batches an uninterrupted one would, without saving a data-loader state.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(len(structures), generator=generator).tolist()
    else:
        order = list(range(len(structures)))
    return [[structures[i] for i in order[k:k + batch_size]] for k in range(0, len(order), batch_size)]


def shard(structures: Sequence[Structure], rank: int, world_size: int) -> List[Structure]:
    """The structures of a batch that data-parallel rank ``rank`` of ``world_size`` evaluates (strided)."""
    return list(structures[rank::world_size])


def label_statistics(structures: Sequence[Structure]) -> Tuple[float, float]:
    """(mean energy per atom in eV, RMS force component in eV/Å) of a data set (0/1 if a label is missing)."""
    energies = [s.energy / len(s.atomic_numbers) for s in structures if s.energy is not None]
    forces = [s.forces.reshape(-1) for s in structures if s.forces is not None]
    rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else 1.0
    return (float(np.mean(energies)) if energies else 0.0), rms
