"""Training configuration: a YAML file mapped onto typed sections, with clear errors for bad input."""
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

MODEL_NAMES = ("visnet", "so3krates", "so3lr")


@dataclass
class DataSource:
    """One labelled data file; ``energy_unit`` is required because files do not agree on units."""
    path: str = ""
    energy_unit: str = ""
    length_unit: str = "Angstrom"
    format: str = "auto"          # auto (by extension), extxyz or npz
    energy_key: str = "energy"
    forces_key: str = "forces"
    dipole_key: Optional[str] = None
    dipole_unit: str = "e*Angstrom"
    max_structures: Optional[int] = None


@dataclass
class DataConfig:
    train: DataSource = field(default_factory=DataSource)
    validation: Optional[DataSource] = None
    test: Optional[DataSource] = None
    #: fractions of ``train`` used for validation and test when those files are not given
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 1
    #: "least_squares" (fit to the training energies) or the path of an extended XYZ of isolated atoms
    energy_shifts: str = "least_squares"
    isolated_atoms_energy_unit: str = "eV"


@dataclass
class ModelConfig:
    name: str = ""
    dtype: str = "float32"
    options: Dict[str, Any] = field(default_factory=dict)
    # a viskrates checkpoint of the same model (name, dtype, options) whose EMA weights start a new run: a warm
    # restart with a fresh optimizer and schedule, or fine-tuning on other data
    initial_weights: Optional[str] = None


@dataclass
class LossConfig:
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    dipole_weight: float = 0.0
    #: from this epoch on (0-based count of finished epochs) use the stage-two weights: a high energy weight
    #: at the end, when the forces are learnt, fits the energies (MACE's second stage, Batatia et al. 2022)
    stage_two_epoch: Optional[int] = None
    stage_two_energy_weight: float = 1000.0
    stage_two_forces_weight: float = 100.0

    def at_epoch(self, epoch: int) -> "LossConfig":
        """The weights in force during epoch ``epoch`` (0-based)."""
        if self.stage_two_epoch is None or epoch < self.stage_two_epoch:
            return self
        return dataclasses.replace(self, energy_weight=self.stage_two_energy_weight,
                                   forces_weight=self.stage_two_forces_weight)


@dataclass
class OptimizerConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    amsgrad: bool = True


@dataclass
class SchedulerConfig:
    name: str = "cosine"           # cosine (per step, to min_lr) or plateau (per epoch, on the validation loss)
    min_lr: float = 1e-6
    warmup_steps: int = 0
    factor: float = 0.5
    patience: int = 5


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 5
    validation_batch_size: int = 20
    ema_decay: float = 0.99
    clip_grad_norm: Optional[float] = 10.0
    early_stopping_patience: Optional[int] = None
    seed: int = 1
    output_dir: str = "viskrates_train"
    num_threads: Optional[int] = None
    progress: bool = True
    max_minutes: Optional[float] = None
    validate_every: int = 1
    plots: bool = True
    #: how the force term of the loss reaches the parameters: ``double_backward`` (exact, through the models'
    #: reference kernels) or ``finite_difference`` (a central difference of the energy along the force residual,
    #: first derivatives only, so the model trains on its fused kernels)
    force_gradient: str = "double_backward"
    #: largest atom displacement (Å) of the finite difference
    finite_difference_displacement: float = 1e-3


@dataclass
class TrainConfig:
    """The whole configuration (sections ``model``, ``data``, ``loss``, ``optimizer``, ``scheduler``,
    ``training``); see ``examples/train_visnet_rmd17.yaml``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_NESTED = {(TrainConfig, "model"): ModelConfig, (TrainConfig, "data"): DataConfig,
           (TrainConfig, "loss"): LossConfig, (TrainConfig, "optimizer"): OptimizerConfig,
           (TrainConfig, "scheduler"): SchedulerConfig, (TrainConfig, "training"): TrainingConfig,
           (DataConfig, "train"): DataSource, (DataConfig, "validation"): DataSource,
           (DataConfig, "test"): DataSource}


def _build(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"config section '{where}' must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section '{where}'; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        if nested is not None and value is not None:
            value = _build(nested, value, f"{where}.{name}" if where else name)
        kwargs[name] = value
    return cls(**kwargs)


def _check(config: TrainConfig) -> None:
    from .data import ENERGY_UNITS, LENGTH_UNITS, unit_factor

    def positive(value, name, allow_none=False):
        if value is None and allow_none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")

    if config.model.name not in MODEL_NAMES:
        raise ValueError(f"model.name must be one of {list(MODEL_NAMES)}, got {config.model.name!r}")
    if config.model.initial_weights is not None and config.data.energy_shifts != "least_squares":
        raise ValueError("model.initial_weights carries its per-element energies: use data.energy_shifts "
                         "'least_squares' (fits only the offset to the new reference level)")
    if config.model.dtype not in ("float32", "float64"):
        raise ValueError(f"model.dtype must be 'float32' or 'float64', got {config.model.dtype!r}")
    for section in ("train", "validation", "test"):
        source = getattr(config.data, section)
        if source is None:
            continue
        if not source.path:
            raise ValueError(f"data.{section}.path is required")
        if not source.energy_unit:
            raise ValueError(f"data.{section}.energy_unit is required (e.g. eV, kcal/mol, kJ/mol, Hartree): "
                             "data files do not agree on units")
        unit_factor(source.energy_unit, ENERGY_UNITS, "energy")
        unit_factor(source.length_unit, LENGTH_UNITS, "length")
        if source.format not in ("auto", "extxyz", "npz"):
            raise ValueError(f"data.{section}.format must be auto, extxyz or npz, got {source.format!r}")
    for name in ("validation_fraction", "test_fraction"):
        value = getattr(config.data, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"data.{name} must be in [0, 1), got {value}")
    if config.data.validation is None and config.data.validation_fraction <= 0:
        raise ValueError("give data.validation or a data.validation_fraction > 0: validation drives EMA "
                         "checkpoints and early stopping")
    loss = config.loss
    for name in ("energy_weight", "forces_weight", "dipole_weight"):
        if getattr(loss, name) < 0:
            raise ValueError(f"loss.{name} must be ≥ 0, got {getattr(loss, name)}")
    if loss.stage_two_epoch is not None and (loss.stage_two_energy_weight < 0 or loss.stage_two_forces_weight < 0):
        raise ValueError("loss.stage_two_*_weight must be ≥ 0")
    if loss.energy_weight + loss.forces_weight + loss.dipole_weight == 0:
        raise ValueError("all loss weights are 0: nothing to train")
    if loss.dipole_weight > 0 and config.model.name != "so3lr":
        raise ValueError("loss.dipole_weight > 0 needs a model with a dipole output (so3lr)")
    positive(config.optimizer.lr, "optimizer.lr")
    if config.scheduler.name not in ("cosine", "plateau", "constant"):
        raise ValueError(f"scheduler.name must be cosine, plateau or constant, got {config.scheduler.name!r}")
    t = config.training
    for name in ("epochs", "batch_size", "validation_batch_size", "validate_every"):
        value = getattr(t, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"training.{name} must be a positive integer, got {value!r}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ValueError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")
    positive(t.clip_grad_norm, "training.clip_grad_norm", allow_none=True)
    positive(t.max_minutes, "training.max_minutes", allow_none=True)
    if t.force_gradient not in ("double_backward", "finite_difference"):
        raise ValueError(f"training.force_gradient must be double_backward or finite_difference, got "
                         f"{t.force_gradient!r}")
    positive(t.finite_difference_displacement, "training.finite_difference_displacement")


def parse_config(values: Dict[str, Any], base_dir: str = ".") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a dict (as read from YAML).

    Relative data paths are taken relative to ``base_dir`` (the directory of the YAML file);
    ``training.output_dir`` and ``model.initial_weights`` (run outputs) relative to the working directory.

    Raises:
        ValueError: unknown keys (named with their section), missing required keys (model.name,
            data.train.path, data.*.energy_unit), out-of-range values or unknown units.
    """
    if values is None:
        raise ValueError("the config is empty")
    config = _build(TrainConfig, values, "")
    _check(config)
    for section in ("train", "validation", "test"):
        source = getattr(config.data, section)
        if source is not None and not os.path.isabs(source.path):
            source.path = os.path.normpath(os.path.join(base_dir, source.path))
    shifts = config.data.energy_shifts
    if shifts != "least_squares" and not os.path.isabs(shifts):
        config.data.energy_shifts = os.path.normpath(os.path.join(base_dir, shifts))
    return config


def load_config(path: str) -> TrainConfig:
    """Read a YAML training config (see :func:`parse_config`).

    Raises:
        FileNotFoundError: no such file. ValueError: invalid YAML or config.
    """
    import yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as handle:
        try:
            values = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
    return parse_config(values, os.path.dirname(os.path.abspath(path)))
