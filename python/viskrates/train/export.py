"""Export of a trained model (EMA weights) to TorchScript with metadata, and loading of such files."""
import json
from typing import Dict, Tuple

import torch

from .. import __version__
from .config import parse_config
from .trainer import ExponentialMovingAverage, build_model, read_checkpoint

METADATA_FILE = "viskrates_metadata.json"
"""Name of the metadata entry inside an exported TorchScript archive (``torch.jit.save`` extra file)."""


def model_from_checkpoint(path: str, use_ema: bool = True, backend: str = "reference"
                          ) -> Tuple[torch.nn.Module, Dict]:
    """Rebuild the trained model of a training checkpoint (EMA weights by default) in evaluation mode.

    Args:
        path: ``checkpoint_*.pt`` written by :class:`~viskrates.train.trainer.Trainer`.
        use_ema: take the exponential moving average of the weights (what validation measured).
        backend: ``"reference"`` (the training kernels, differentiable twice) or ``"fused"`` (the viskrates
            kernels: same numbers up to rounding, faster, inference only).

    Returns:
        (model, checkpoint dict).

    Raises:
        ValueError: not a viskrates checkpoint, or an unknown backend.
    """
    state = read_checkpoint(path)
    config = parse_config(state["config"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[config.model.dtype]
    model = build_model(config.model.name, config.model.options, dtype)
    model.load_state_dict(state["model"])
    if use_ema:
        ema = ExponentialMovingAverage([p for p in model.parameters() if p.requires_grad], 0.0)
        ema.load_state_dict(state["ema"])
        ema.swap()
    if backend != "reference":
        inference = build_model(config.model.name, config.model.options, dtype, backend=backend)
        inference.load_state_dict(model.state_dict())
        model = inference
    model.requires_grad_(False)
    return model.eval(), state


def export_checkpoint(path: str, output: str, use_ema: bool = True, backend: str = "fused") -> Dict:
    """Write the model of a checkpoint as TorchScript (``torch.jit.save``) with a JSON metadata entry, by default
    on the fused kernels (training ran on the reference ones; same numbers up to rounding).

    Metadata: ``format``, ``model`` (name, options, dtype, backend), ``units`` (Å, eV, eV/Å, e), ``elements`` (atomic
    numbers in the training data), ``cutoff`` (Å), ``training_data_sha256``, ``epoch``, ``step``, the last
    validation metrics and the viskrates version. The file loads with :func:`load_exported` and, as
    ``modelPath``, with ``MLPotential('visnet' | 'so3lr' | 'so3krates', modelPath=...)``.

    Returns:
        the metadata dict.
    """
    model, state = model_from_checkpoint(path, use_ema, backend)
    config = state["config"]["model"]
    metadata = {
        "format": "viskrates-exported-model", "version": 1, "viskrates_version": __version__,
        "model": {"name": config["name"], "options": config["options"], "dtype": config["dtype"],
                  "backend": backend},
        "units": {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom", "charge": "e"},
        "elements": state["elements"], "cutoff": float(model.cutoff),
        "training_data_sha256": state["data_hash"], "epoch": state["epoch"], "step": state["step"],
        "weights": "ema" if use_ema else "live",
        "validation": state["history"][-1] if state["history"] else {},
    }
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, output, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return metadata


def is_exported_model(path: str) -> bool:
    """True if ``path`` is a TorchScript archive written by :func:`export_checkpoint`."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/extra/" + METADATA_FILE) for name in archive.namelist())


def load_exported(path: str, map_location: str = "cpu") -> Tuple[torch.jit.ScriptModule, Dict]:
    """Load an exported model: (TorchScript module taking (atomic_numbers, positions Å, box, batch,
    total_charge) and returning {'energy': [B] eV, ...}, metadata dict).

    Raises:
        ValueError: the file is not a viskrates export (no metadata entry).
    """
    import viskrates  # noqa: F401  (loads the op library the scripted model calls)

    extra = {METADATA_FILE: ""}
    module = torch.jit.load(path, map_location=map_location, _extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path} is a TorchScript file without viskrates metadata; export it with "
                         "`viskrates export CHECKPOINT -o model.pt`")
    return module, json.loads(extra[METADATA_FILE])
