"""Training and fine-tuning of viskrates models (ViSNet and SO3krates from scratch, SO3LR fine-tuning):
datasets (extended XYZ, NPZ) with explicit units, energy/force/dipole losses, AdamW with a cosine or plateau
schedule, EMA weights, checkpoints, data parallelism (gloo), export to TorchScript with metadata.

Command line: ``viskrates train CONFIG.yaml`` and ``viskrates export CHECKPOINT -o model.pt``.
"""
from .config import TrainConfig, load_config, parse_config
from .data import (Structure, collate, fit_energy_shifts, read_extxyz, read_isolated_atom_energies, read_npz,
                   split_dataset)
from .export import export_checkpoint, is_exported_model, load_exported, model_from_checkpoint
from .trainer import ExponentialMovingAverage, Trainer, build_model

__all__ = ["TrainConfig", "load_config", "parse_config", "Structure", "collate", "fit_energy_shifts", "read_extxyz",
           "read_isolated_atom_energies", "read_npz", "split_dataset", "export_checkpoint", "is_exported_model",
           "load_exported", "model_from_checkpoint", "ExponentialMovingAverage", "Trainer", "build_model"]
