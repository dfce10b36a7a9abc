"""OpenMM-ML plugin: ``MLPotential('so3lr')`` and ``MLPotential('visnet', modelPath=...)``.

Registered through the ``openmmml.potentials`` entry-point group (see pyproject.toml), so that
``createSystem`` and ``createMixedSystem`` (mechanical embedding, link atoms) of openmm-ml work with
viskrates models.
"""
from typing import Iterable, List, Optional, Tuple

import openmm
import openmm.app
import torch
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

from .force import create_force, topology_atomic_numbers

_PRECISIONS = {"single": torch.float32, "double": torch.float64}


def ml_region_charge(system: openmm.System, atoms: Optional[Iterable[int]] = None) -> float:
    """Net charge of the ML region (e) from the force field: the sum of the charges of ``atoms`` (System particle
    indices; None: all particles) in the System's ``NonbondedForce``, rounded to an integer; 0 if the System has
    no NonbondedForce. This is the total charge the ML potential is given when ``createSystem`` /
    ``createMixedSystem`` get no ``charge`` argument (charge-aware models, SO3LR).

    Raises:
        ValueError: the force-field charges of the region do not add up to an integer (to within 1e-3 e), which
            happens when the ML region splits a residue: the model needs an integer net charge.
    """
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            indices = range(system.getNumParticles()) if atoms is None else atoms
            total = sum(force.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                        for i in indices)
            if abs(total - round(total)) > 1e-3:
                raise ValueError(
                    f"the ML region's force-field charges add up to {total:.4f} e, not an integer, so its net "
                    "charge is undefined (the region probably splits a residue); select whole residues or "
                    "pass charge=<integer> to createSystem/createMixedSystem")
            return float(round(total))
    return 0.0


class ViskratesPotentialImpl(MLPotentialImpl):
    """Adds a viskrates model to a System as an ``openmm.PythonForce`` or ``openmmtorch.TorchForce``.

    Constructor arguments (given to ``MLPotential(name, ...)``):
        name: ``'so3lr'`` (the packaged pretrained SO3LR) or ``'visnet'``.
        modelPath: for ``'visnet'``, a PyTorch-Geometric ViSNet state dict (``.pt``); for any name, a model
            written by ``viskrates export`` (TorchScript with metadata; its model name must match, and the
            ML atoms must be of elements in its training data).
        modelConfig: for ``'visnet'``, the ViSNet hyperparameters (dict of PyG ``ViSNet`` arguments).
        lrCutoff: for ``'so3lr'``, the long-range (electrostatics, dispersion) cutoff in Å (default 12,
            the official MD setting).

    Arguments of ``createSystem``/``createMixedSystem`` understood here:
        precision: ``'single'`` (default) or ``'double'``.
        charge: net charge of the ML region (e). Default: the rounded sum of the System's force-field
            charges of the ML atoms (0 for a System without a NonbondedForce).
        backend: ``'python'`` (default, ``openmm.PythonForce``), ``'torch'`` (``openmmtorch.TorchForce``;
            RuntimeError without a working openmm-torch) or ``'auto'``; see
            :func:`viskrates.openmm.create_force`.
        modelBackend: the kernels of an SO3LR or ViSNet model, ``'reference'`` (default, pure PyTorch) or
            ``'fused'`` (the viskrates ops: same energies and forces up to rounding, faster); ValueError for a
            model loaded from a ``viskrates export`` file, whose kernels were fixed at export.
    """

    def __init__(self, name: str, modelPath: Optional[str] = None, modelConfig: Optional[dict] = None,
                 lrCutoff: float = 12.0):
        self.name = name
        self.modelPath = modelPath
        self.modelConfig = modelConfig or {}
        self.lrCutoff = lrCutoff
        if name == "visnet" and modelPath is None:
            raise ValueError("MLPotential('visnet') needs modelPath=<ViSNet state dict .pt> and modelConfig")

    def _create_model(self, model_backend: Optional[str] = None) -> torch.nn.Module:
        from ..models import SO3LR, ViSNet
        if self.modelPath is not None:
            from ..train.export import is_exported_model, load_exported
            if is_exported_model(self.modelPath):
                if model_backend is not None:
                    raise ValueError(f"{self.modelPath} is an exported model whose kernels were chosen at export "
                                     f"(viskrates export --backend); do not pass modelBackend={model_backend!r}")
                model, metadata = load_exported(self.modelPath)
                if metadata["model"]["name"] != self.name:
                    raise ValueError(f"{self.modelPath} holds a trained {metadata['model']['name']!r} model, not "
                                     f"{self.name!r}; use MLPotential({metadata['model']['name']!r}, modelPath=...)")
                self.trainedElements = metadata["elements"]
                return model
        kernels = {} if model_backend is None else {"backend": model_backend}
        if self.name == "so3lr":
            return SO3LR(lr_cutoff=self.lrCutoff, **kernels)
        if self.name == "so3krates":
            raise ValueError("MLPotential('so3krates') needs modelPath=<model exported by `viskrates export`>")
        state_dict = torch.load(self.modelPath, map_location="cpu", weights_only=True)
        return ViSNet.from_pyg_state_dict(state_dict, **{**self.modelConfig, **kernels})

    def addForces(self, topology: openmm.app.Topology, system: openmm.System, atoms: Optional[Iterable[int]],
                  forceGroup: int, precision: str = "single", charge: Optional[float] = None,
                  backend: str = "python", modelBackend: Optional[str] = None, **args):
        atoms = None if atoms is None else list(atoms)
        model, numbers, charge = self.create_model_for(topology, system, atoms, precision, charge, modelBackend)
        periodic = topology.getPeriodicBoxVectors() is not None
        force = create_force(model, numbers, atoms, total_charge=charge, periodic=periodic, backend=backend)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def create_model_for(self, topology: openmm.app.Topology, system: openmm.System,
                         atoms: Optional[Iterable[int]], precision: str = "single",
                         charge: Optional[float] = None, model_backend: Optional[str] = None
                         ) -> Tuple[torch.nn.Module, List[int], float]:
        """The model (Å, eV) in the requested precision and kernels (``model_backend``, None: the model's
        default), the atomic numbers and the net charge of the ML atoms.

        Raises:
            ValueError: an unknown precision or model backend, a model backend for an exported model, a
                non-integer force-field charge of the region, or elements outside an exported model's training
                data.
        """
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
        atoms = None if atoms is None else list(atoms)
        numbers = topology_atomic_numbers(topology, atoms)
        if charge is None:
            charge = ml_region_charge(system, atoms)
        model = self._create_model(model_backend).to(_PRECISIONS[precision])
        trained = getattr(self, "trainedElements", None)
        if trained is not None and not set(numbers) <= set(trained):
            raise ValueError(f"the ML region contains elements Z = {sorted(set(numbers) - set(trained))} that "
                             f"are not in the training data of {self.modelPath} (Z = {trained})")
        return model, numbers, charge

    def getMLLongRange(self) -> bool:
        # Both models see only pairs within their cutoffs (SO3LR: minimum image within lrCutoff), so the
        # ML-ML interactions with other periodic images must come from the force field.
        return False


class ViskratesPotentialImplFactory(MLPotentialImplFactory):
    """Factory behind the ``so3lr`` and ``visnet`` entry points of ``openmmml.potentials``."""

    def createImpl(self, name: str, **args) -> MLPotentialImpl:
        return ViskratesPotentialImpl(name, **args)
