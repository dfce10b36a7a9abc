"""Build OpenMM forces from viskrates models.

The model works in Å and eV; OpenMM in nm and kJ/mol. :class:`OpenMMModel` is the single place where
the units are converted: it maps OpenMM positions and box vectors (nm) to the model's energy in
kJ/mol, so that forces in kJ/mol/nm are plain autograd gradients with respect to the positions.
"""
import io
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import openmm
import openmm.app
import torch
from torch import Tensor

from ..elements import ELEMENT_SYMBOLS
from ..units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM

def element_symbol(atomic_number: int) -> str:
    """Chemical symbol of ``atomic_number`` (1..118); ``'Z=<n>'`` for anything else."""
    return ELEMENT_SYMBOLS[atomic_number] if 0 < atomic_number < len(ELEMENT_SYMBOLS) else f"Z={atomic_number}"


def check_elements(model: torch.nn.Module, atomic_numbers: Sequence[int], model_name: str = "the model") -> None:
    """Raise ValueError naming every element of ``atomic_numbers`` outside ``model.supported_elements``."""
    supported = set(int(z) for z in model.supported_elements)
    unknown = sorted(set(int(z) for z in atomic_numbers) - supported)
    if unknown:
        names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in unknown)
        allowed = ", ".join(element_symbol(z) for z in sorted(supported)) if len(supported) < 30 else \
            f"Z = {min(supported)}..{max(supported)}"
        raise ValueError(f"{model_name} cannot evaluate element(s) {names}; it supports {allowed}. "
                         "Remove these atoms from the ML region (e.g. keep ions in the MM region).")


class OpenMMModel(torch.nn.Module):
    """A viskrates model seen from OpenMM: positions and box in nm in, potential energy in kJ/mol out.

    Args:
        model: a viskrates model (see ``viskrates.models``), in Å/eV.
        atomic_numbers: atomic numbers of the atoms the force acts on, in OpenMM particle order.
        total_charge: net charge of these atoms (e); used by charge-aware models (SO3LR).
        periodic: if True, ``forward`` requires the periodic box vectors.

    Raises:
        ValueError: an element the model was not trained on, or no atoms.

    ``forward(positions [N, 3] nm, box_vectors [3, 3] nm or None) -> energy`` (0-dim tensor, kJ/mol,
    the model's dtype). Forces in kJ/mol/nm are ``-autograd.grad(energy, positions)``. The signature is the
    one OpenMM-Torch's ``TorchForce`` expects, so the scripted module also serves that path.
    """

    def __init__(self, model: torch.nn.Module, atomic_numbers: Sequence[int], total_charge: float = 0.0,
                 periodic: bool = False):
        super().__init__()
        if len(atomic_numbers) == 0:
            raise ValueError("the ML region is empty: give at least one atom to the viskrates force")
        check_elements(model, atomic_numbers, type(model).__name__)
        self.model = model
        self.periodic = periodic
        dtype = next(model.parameters()).dtype
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers), dtype=torch.long))
        self.register_buffer("total_charge", torch.tensor([float(total_charge)], dtype=dtype))
        self.length_scale = NM_TO_ANGSTROM
        self.energy_scale = EV_TO_KJ_PER_MOL

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        return self._model_outputs(positions, box_vectors)["energy"].sum() * self.energy_scale

    def partial_charges(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        """The model's partial charges [N] (e) at ``positions`` [N, 3] nm (charge-predicting models, SO3LR).

        Raises:
            ValueError: the model predicts no partial charges.
        """
        out = self._model_outputs(positions, box_vectors)
        if "partial_charges" not in out:
            raise ValueError(f"{type(self.model).__name__} predicts no partial charges")
        return out["partial_charges"]

    def _model_outputs(self, positions: Tensor, box_vectors: Optional[Tensor]) -> Dict[str, Tensor]:
        dtype = self.total_charge.dtype
        box: Optional[Tensor] = None
        if self.periodic:
            if box_vectors is None:
                raise ValueError("this force is periodic but no box vectors were given")
            box = box_vectors.to(dtype) * self.length_scale
        return self.model(self.atomic_numbers, positions.to(dtype) * self.length_scale, box, None,
                          self.total_charge)


class _Evaluator:
    """The callable a PythonForce invokes: energy and forces of a scripted :class:`OpenMMModel`.

    Picklable (the TorchScript module travels as bytes) so that Systems containing the force can be
    written with ``XmlSerializer``.
    """

    def __init__(self, module: torch.jit.ScriptModule):
        self.module = module
        self.periodic = bool(module.periodic)
        self.dtype = module.total_charge.dtype

    def __call__(self, state: openmm.State):
        positions = torch.from_numpy(state.getPositions(asNumpy=True)._value).to(self.dtype)
        positions.requires_grad_(True)
        box = None
        if self.periodic:
            box = torch.from_numpy(state.getPeriodicBoxVectors(asNumpy=True)._value).to(self.dtype)
        energy = self.module(positions, box)
        (grad,) = torch.autograd.grad(energy, positions)
        return float(energy.detach()), (-grad).numpy().astype(np.float64)

    def __getstate__(self):
        buffer = io.BytesIO()
        torch.jit.save(self.module, buffer)
        return {"module": buffer.getvalue()}

    def __setstate__(self, state):
        import viskrates  # noqa: F401  (loads the op library the TorchScript module calls)
        self.__init__(torch.jit.load(io.BytesIO(state["module"])))


class _ParticleSubset(torch.nn.Module):
    """Restricts an :class:`OpenMMModel` to some particles of the System (TorchForce sees all of them)."""

    def __init__(self, model: OpenMMModel, atoms: Sequence[int]):
        super().__init__()
        self.model = model
        self.register_buffer("atoms", torch.tensor(list(atoms), dtype=torch.long))

    def forward(self, positions: Tensor, box_vectors: Optional[Tensor] = None) -> Tensor:
        return self.model(positions.index_select(0, self.atoms), box_vectors)


_TORCHFORCE_STATUS: Optional[str] = None


def torchforce_unavailable_reason() -> Optional[str]:
    """Why ``openmmtorch.TorchForce`` cannot be used here, or None if it works.

    "Works" means: ``openmmtorch`` imports and a TorchForce evaluates a small TorchScript module correctly
    on the Reference platform (an openmm-torch wheel built against another torch version imports but fails
    at the first evaluation, ENVIRONMENT.md). Checked once per process.
    """
    global _TORCHFORCE_STATUS
    if _TORCHFORCE_STATUS is None:
        _TORCHFORCE_STATUS = _probe_torchforce()
    return _TORCHFORCE_STATUS or None


def _probe_torchforce() -> str:
    try:
        import openmmtorch
    except Exception as error:  # ImportError, or a missing/ABI-incompatible libtorch (OSError)
        return f"openmm-torch does not import ({type(error).__name__}: {error})"
    _load_torchforce_kernels(openmmtorch)
    try:
        module = torch.jit.script(_ProbeModule())
        force = openmmtorch.TorchForce(module)
        system = openmm.System()
        for _ in range(2):
            system.addParticle(1.0)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions([openmm.Vec3(0.0, 0.0, 0.0), openmm.Vec3(0.3, 0.0, 0.0)])
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        force_x = state.getForces()[0][0].value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    except Exception as error:
        return f"openmm-torch imports but a TorchForce fails to evaluate ({type(error).__name__}: {error})"
    # E = Σ|x|² = 0.09 kJ/mol; F_0 = -2·x_0 = 0 and F_1,x = -0.6
    if abs(energy - 0.09) > 1e-6 or abs(force_x) > 1e-6:
        return f"openmm-torch evaluates a test module wrongly (energy {energy}, expected 0.09)"
    return ""


def _load_torchforce_kernels(openmmtorch_module) -> None:
    """Load openmm-torch's CPU kernel plugin when it is not in OpenMM's plugin directory.

    OpenMM loads plugins from its own ``OpenMM.libs/lib/plugins`` at import. When openmm-torch is
    installed into a different site-packages than OpenMM (a venv over a system-wide OpenMM), its
    kernels sit next to ``openmmtorch.py`` instead, and every TorchForce Context would fail with
    "does not support all required kernels".
    """
    own = os.path.join(os.path.dirname(os.path.abspath(openmmtorch_module.__file__)), "OpenMM.libs", "lib",
                       "plugins")
    if os.path.realpath(own) == os.path.realpath(openmm.Platform.getDefaultPluginsDirectory()) or \
            os.path.realpath(own) == os.path.realpath(os.path.join(openmm.version.openmm_library_path, "plugins")):
        return
    reference_kernels = os.path.join(own, "libOpenMMTorchReference.so")
    if os.path.exists(reference_kernels):
        openmm.Platform.loadPluginLibrary(reference_kernels)


class _ProbeModule(torch.nn.Module):
    def forward(self, positions: Tensor) -> Tensor:
        return (positions ** 2).sum()


_BACKENDS = ("auto", "torch", "python")


def create_force(model: torch.nn.Module, atomic_numbers: Sequence[int], atoms: Optional[Sequence[int]] = None,
                 total_charge: float = 0.0, periodic: bool = False, backend: str = "python") -> openmm.Force:
    """Create an OpenMM force evaluating ``model`` on a set of atoms.

    Args:
        model: a viskrates model (Å, eV), e.g. ``viskrates.models.SO3LR()``; its dtype (``model.double()``)
            sets the precision of the evaluation.
        atomic_numbers: atomic numbers of the ML atoms, in the order of ``atoms``.
        atoms: indices of the ML atoms in the System; ``None`` means all particles (then
            ``atomic_numbers`` must cover every particle).
        total_charge: net charge of the ML atoms in e (SO3LR uses it; ViSNet ignores it).
        periodic: use the System's periodic box (minimum image; the box must be at least twice the
            model's cutoff wide).
        backend: ``'python'`` (default): ``openmm.PythonForce`` calling the TorchScript module from
            Python; works with any torch. ``'torch'``: ``openmmtorch.TorchForce`` (openmm-torch; no Python
            per step). ``'auto'``: TorchForce when openmm-torch imports and works with this torch
            (see :func:`torchforce_unavailable_reason`), else PythonForce. Both give the same energies
            and forces. A System holding a TorchForce serialises the TorchScript module itself; the
            viskrates op library must be loaded (``import viskrates``) before such a System is
            deserialised or a Context is created from it. Known defect of the tested stack:
            acellera-openmmtorch 1.6 with PyPI's OpenMM 8.6.1 serialises a TorchForce but crashes the
            process (segfault in its TorchForceProxy::deserialize) when reading it back; use
            ``'python'`` for Systems you write with ``XmlSerializer``.

    Returns:
        The force (energy in kJ/mol, forces in kJ/mol/nm). Add it with ``system.addForce(force)``.

    Raises:
        ValueError: empty ML region, elements the model does not support, ``atoms`` and
            ``atomic_numbers`` of different lengths, or an unknown backend.
        RuntimeError: ``backend='torch'`` when openmm-torch is missing or does not work with this torch.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
    if atoms is not None and len(atoms) != len(atomic_numbers):
        raise ValueError(f"{len(atoms)} atoms but {len(atomic_numbers)} atomic numbers")
    openmm_model = OpenMMModel(model, atomic_numbers, total_charge, periodic).eval()
    if backend != "python":
        reason = torchforce_unavailable_reason()
        if reason is None:
            import openmmtorch
            module = openmm_model if atoms is None else _ParticleSubset(openmm_model, atoms)
            force = openmmtorch.TorchForce(torch.jit.script(module))
            force.setUsesPeriodicBoundaryConditions(periodic)
            return force
        if backend == "torch":
            raise RuntimeError(f"backend='torch' needs a working openmm-torch: {reason}. Install "
                               "acellera-openmmtorch==1.6 (built for torch 2.10.0), or use backend='python'.")
    force = openmm.PythonForce(_Evaluator(torch.jit.script(openmm_model)))
    force.setUsesPeriodicBoundaryConditions(periodic)
    if atoms is not None:
        force.setParticles(list(atoms))
    return force


def topology_atomic_numbers(topology: openmm.app.Topology, atoms: Optional[Sequence[int]] = None) -> List[int]:
    """Atomic numbers of ``atoms`` (all atoms if None) of an OpenMM Topology.

    Raises:
        ValueError: an atom without element (virtual site, unknown PDB element), naming the atom.
    """
    all_atoms = list(topology.atoms())
    selected = all_atoms if atoms is None else [all_atoms[i] for i in atoms]
    numbers = []
    for atom in selected:
        if atom.element is None:
            raise ValueError(f"atom {atom.name} of residue {atom.residue.name}{atom.residue.id} (index "
                             f"{atom.index}) has no element; fix the element column of the structure file")
        numbers.append(atom.element.atomic_number)
    return numbers
