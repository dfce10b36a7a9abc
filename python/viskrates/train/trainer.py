"""Training loop: weighted energy/force/dipole loss, AdamW with a cosine or plateau schedule, EMA weights,
gradient clipping, early stopping, resumable checkpoints, metrics CSV and plots; data parallel over
``torch.distributed`` (gloo) processes."""
import csv
import dataclasses
import math
import os
import random
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .config import TrainConfig
from .data import (Structure, batches, collate, dataset_hash, fit_energy_shifts, label_statistics, read_extxyz,
                   read_isolated_atom_energies, read_npz, shard, split_dataset)
from . import distributed

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---- models ----------------------------------------------------------------------------------------------

def build_model(name: str, options: Dict, dtype: torch.dtype, backend: str = "reference") -> nn.Module:
    """A fresh model by config name (``visnet``, ``so3krates``) or the pretrained SO3LR (``so3lr``, all
    parameters made trainable for fine-tuning), in ``dtype``, on the kernels ``backend``: ``'reference'`` (the one
    with double backward, which training on forces needs) or ``'fused'`` (inference, e.g. an exported model).

    Raises:
        ValueError: unknown name, options the model rejects, or a ``backend`` in the options (training needs the
            reference kernels; the backend is chosen at export).
    """
    from ..models import SO3LR, SO3kratesPotential, ViSNet

    if "backend" in options:
        raise ValueError("model.options must not choose a backend: training.force_gradient does (double_backward: "
                         "the reference kernels, finite_difference: the fused ones); export chooses the backend of "
                         "the exported model")
    constructors = {"visnet": ViSNet, "so3krates": SO3kratesPotential, "so3lr": SO3LR}
    if name not in constructors:
        raise ValueError(f"unknown model {name!r}; known: visnet, so3krates, so3lr")
    try:
        model = constructors[name](**options, backend=backend)
    except TypeError as error:
        raise ValueError(f"bad model.options for {name}: {error}") from None
    if name == "so3lr":
        model.requires_grad_(True)
    return model.to(dtype)


def read_checkpoint(path: str) -> Dict:
    """The dict a :meth:`Trainer.save_checkpoint` wrote to ``path`` (loaded on the CPU).

    Raises:
        ValueError: the file is not a viskrates training checkpoint.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != "viskrates-checkpoint":
        raise ValueError(f"{path} is not a viskrates training checkpoint")
    return state


def energy_shift_table(model: nn.Module) -> Tensor:
    """The per-element additive energy table of a model (indexed by Z, eV): ViSNet's ``atomref``,
    SO3krates'/SO3LR's ``atomic_offsets``."""
    for name in ("atomref", "atomic_offsets"):
        table = getattr(model, name, None)
        if isinstance(table, Tensor):
            return table
    raise ValueError(f"{type(model).__name__} has no per-element energy table")


def _set_energy_scale(model: nn.Module, scale: float) -> None:
    # The network's raw outputs are O(1); scaling them by the RMS force puts the initial force errors at the
    # size of the forces themselves (MACE's "rms_forces_scaling").
    with torch.no_grad():
        if hasattr(model, "std") and isinstance(model.std, Tensor):
            model.std.fill_(scale)
        elif hasattr(model, "atomic_scales") and not isinstance(model.atomic_scales, nn.Parameter):
            model.atomic_scales.fill_(scale)


# ---- EMA ---------------------------------------------------------------------------------------------------

class ExponentialMovingAverage:
    """Exponential moving average of the trainable parameters, ``θ̄ ← d·θ̄ + (1−d)·θ`` with the warm-up
    ``d = min(decay, (1+n)/(10+n))`` after n updates (Polyak & Juditsky 1992; the TensorFlow convention).
    Validation and export use θ̄."""

    def __init__(self, parameters: Sequence[nn.Parameter], decay: float):
        self.parameters = list(parameters)
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for average, p in zip(self.shadow, self.parameters):
            average.mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live parameters with the averages (call twice to undo)."""
        for average, p in zip(self.shadow, self.parameters):
            live = p.detach().clone()
            p.copy_(average)
            average.copy_(live)

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: Dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for average, saved in zip(self.shadow, state["shadow"]):
            average.copy_(saved)


# ---- loss and metrics --------------------------------------------------------------------------------------

def model_outputs(model: nn.Module, batch: Dict[str, Tensor], positions: Tensor) -> Dict[str, Tensor]:
    """The model's output dict for a collated batch (open boundaries) at ``positions`` [N, 3] Å."""
    return model(batch["atomic_numbers"], positions, None, batch["batch"], batch["total_charge"])


def evaluate_batch(model: nn.Module, batch: Dict[str, Tensor], need_forces: bool,
                   create_graph: bool) -> Dict[str, Tensor]:
    """Model outputs for a collated batch: ``energy`` [B], ``forces`` [N, 3] (if asked) and ``dipole`` [B, 3]
    (if the model gives one)."""
    positions = batch["positions"].clone().requires_grad_(need_forces)
    out = model_outputs(model, batch, positions)
    result = {"energy": out["energy"]}
    if need_forces:
        grad, = torch.autograd.grad(out["energy"].sum(), positions, create_graph=create_graph)
        result["forces"] = -grad
    if "dipole" in out:
        result["dipole"] = out["dipole"]
    return result


def loss_terms(pred: Dict[str, Tensor], batch: Dict[str, Tensor], weights, counts: Dict[str, float]) -> Tensor:
    """Weighted loss of a (possibly sharded) batch, normalised by the counts of the *global* batch so that
    the shards' losses add up to the loss of the whole batch:

    ``L = w_E/B·Σ_b ((Ê_b − E_b)/N_b)² + w_F/(3N)·Σ_i |F̂_i − F_i|² + w_μ/(3B)·Σ_b |μ̂_b − μ_b|²``

    (per-atom energy errors, as in MACE, Batatia et al., NeurIPS 2022, so that molecules of different size
    weigh alike). ``counts``: ``structures`` B and ``atoms`` N of the global batch.
    """
    loss = pred["energy"].new_zeros(())
    if weights.energy_weight > 0:
        per_atom = (pred["energy"] - batch["energy"]) / batch["num_atoms"].to(pred["energy"].dtype)
        loss = loss + weights.energy_weight * per_atom.pow(2).sum() / counts["structures"]
    if weights.forces_weight > 0:
        loss = loss + weights.forces_weight * (pred["forces"] - batch["forces"]).pow(2).sum() / (3 * counts["atoms"])
    if weights.dipole_weight > 0:
        loss = loss + weights.dipole_weight * (pred["dipole"] - batch["dipole"]).pow(2).sum() / (3 * counts["structures"])
    return loss


_METRIC_SUMS = ("loss", "energy_abs", "energy_sq", "forces_abs", "forces_sq", "dipole_abs", "structures",
                "force_components", "dipole_components")


def validate(model: nn.Module, structures: Sequence[Structure], config: TrainConfig, dtype: torch.dtype,
             rank: int = 0, world_size: int = 1, epoch: int = 0) -> Dict[str, float]:
    """Errors of ``model`` on ``structures``: loss (weights of epoch ``epoch``), energy MAE/RMSE (meV per
    structure), force MAE/RMSE (meV/Å per component), dipole MAE (e·Å per component; if labelled). Sharded over
    the data-parallel ranks."""
    weights = config.loss.at_epoch(epoch)
    sums = dict.fromkeys(_METRIC_SUMS, 0.0)
    counts = {"structures": float(len(structures)),
              "atoms": float(sum(len(s.atomic_numbers) for s in structures))}
    for part in batches(structures, config.training.validation_batch_size, False, 0, 0):
        mine = shard(part, rank, world_size)
        if not mine:
            continue
        batch = collate(mine, dtype)
        pred = evaluate_batch(model, batch, "forces" in batch, create_graph=False)
        with torch.no_grad():
            sums["loss"] += float(loss_terms(pred, batch, weights, counts))
            sums["structures"] += len(mine)
            error = (pred["energy"] - batch["energy"]).double()
            sums["energy_abs"] += float(error.abs().sum())
            sums["energy_sq"] += float(error.pow(2).sum())
            if "forces" in batch:
                error = (pred["forces"] - batch["forces"]).double()
                sums["forces_abs"] += float(error.abs().sum())
                sums["forces_sq"] += float(error.pow(2).sum())
                sums["force_components"] += error.numel()
            if "dipole" in batch and "dipole" in pred:
                sums["dipole_abs"] += float((pred["dipole"] - batch["dipole"]).abs().sum())
                sums["dipole_components"] += batch["dipole"].numel()
    total = distributed.all_reduce_sum(torch.tensor([sums[k] for k in _METRIC_SUMS], dtype=torch.float64),
                                       world_size)
    s = dict(zip(_METRIC_SUMS, total.tolist()))
    n, c = max(s["structures"], 1.0), max(s["force_components"], 1.0)
    metrics = {"loss": s["loss"], "energy_mae_meV": 1000 * s["energy_abs"] / n,
               "energy_rmse_meV": 1000 * math.sqrt(s["energy_sq"] / n),
               "forces_mae_meV_per_A": 1000 * s["forces_abs"] / c,
               "forces_rmse_meV_per_A": 1000 * math.sqrt(s["forces_sq"] / c)}
    if s["dipole_components"] > 0:
        metrics["dipole_mae_eA"] = s["dipole_abs"] / s["dipole_components"]
    return metrics


def check_labels(structures: Sequence[Structure], weights, name: str) -> None:
    """Raise ValueError if a structure lacks a label that a non-zero loss weight (or validation) needs."""
    needed = [("energy", True), ("forces", weights.forces_weight > 0), ("dipole", weights.dipole_weight > 0)]
    for label, required in needed:
        if not required:
            continue
        missing = [k for k, s in enumerate(structures) if getattr(s, label) is None]
        if missing:
            raise ValueError(f"{len(missing)} {name} structure(s) have no {label} (first: #{missing[0]}), but the "
                             f"loss needs it; give the label (e.g. data.*.{label}_key) or set its weight to 0")


# ---- data ----------------------------------------------------------------------------------------------------

def load_source(source) -> List[Structure]:
    """Read one configured data source (extended XYZ or NPZ, by ``format`` or file extension)."""
    fmt = source.format
    if fmt == "auto":
        fmt = "npz" if source.path.endswith(".npz") else "extxyz"
    if not os.path.exists(source.path):
        raise FileNotFoundError(f"data file {source.path} does not exist")
    if fmt == "npz":
        structures = read_npz(source.path, source.energy_unit, source.length_unit, dipole_unit=source.dipole_unit)
    else:
        structures = read_extxyz(source.path, source.energy_unit, source.length_unit, source.energy_key,
                                 source.forces_key, source.dipole_key, source.dipole_unit)
    if source.max_structures is not None:
        structures = structures[:source.max_structures]
    return structures


def load_splits(config: TrainConfig) -> Tuple[List[Structure], List[Structure], List[Structure]]:
    """(train, validation, test) structures: the given files, or a seeded split of ``data.train``."""
    data = config.data
    train = load_source(data.train)
    fractions = []
    if data.validation is None:
        fractions.append(data.validation_fraction)
    if data.test is None and data.test_fraction > 0:
        fractions.append(data.test_fraction)
    if fractions:
        parts = split_dataset(train, fractions + [1.0 - sum(fractions)], data.seed)
        held_out, train = parts[:-1], parts[-1]
    else:
        held_out = []
    validation = load_source(data.validation) if data.validation is not None else held_out.pop(0)
    test = load_source(data.test) if data.test is not None else (held_out.pop(0) if held_out else [])
    return train, validation, test


# ---- trainer -------------------------------------------------------------------------------------------------

class Trainer:
    """Trains a model as configured (:class:`~viskrates.train.config.TrainConfig`).

    Writes into ``training.output_dir``: ``checkpoint_last.pt`` (every validated epoch), ``checkpoint_best.pt``
    (best validation loss of the EMA weights), ``metrics.csv`` (one row per validated epoch), and at the end
    ``learning_curve.png`` and ``forces_parity.png`` (matplotlib). Only rank 0 writes.

    A checkpoint holds the config, the model, optimizer, scheduler and EMA states, the RNG states, the epoch and
    step, the early-stopping state and the training-data hash; ``Trainer(config, resume=path)`` continues from it
    and reproduces an uninterrupted run bitwise (same hardware and threads), because each epoch's batch order is
    drawn from (seed, epoch) only (not with ``training.max_minutes``: the cosine schedule then also follows the
    clock, read at the end of each epoch). ``model.initial_weights`` instead starts a new run from a checkpoint's
    EMA weights (a warm restart, or fine-tuning on other data).

    The force term of the loss reaches the parameters by double backward through the model's reference kernels
    (``training.force_gradient: double_backward``, exact) or by a central difference of first-order gradients on
    its fused kernels (``finite_difference``, see :meth:`_finite_difference_objective`).

    Raises:
        ValueError: bad config or data (see :func:`~viskrates.train.config.parse_config`), a checkpoint from
            another config or data set, initial weights of another model.
        FileNotFoundError: ``model.initial_weights`` does not exist.
    """

    def __init__(self, config: TrainConfig, resume: Optional[str] = None, rank: Optional[int] = None,
                 world_size: Optional[int] = None):
        self.config = config
        t = config.training
        self.rank, self.world_size = distributed.rank_and_size(rank, world_size)
        if t.num_threads is not None:
            torch.set_num_threads(t.num_threads)
        self.dtype = _DTYPES[config.model.dtype]
        self.train_set, self.validation_set, self.test_set = load_splits(config)
        for structures, name in ((self.train_set, "training"), (self.validation_set, "validation")):
            check_labels(structures, config.loss, name)
        self.data_hash = dataset_hash(self.train_set)
        self.elements = sorted({int(z) for s in self.train_set for z in s.atomic_numbers})
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        np.random.seed(t.seed)
        # finite-difference force gradients need first derivatives only: the model trains on its fused kernels
        self.model = build_model(config.model.name, config.model.options, self.dtype,
                                 backend="fused" if t.force_gradient == "finite_difference" else "reference")
        if resume is None:
            if config.model.initial_weights is not None:
                self._load_initial_weights(config.model.initial_weights)
            self._initialise_energy_scale_and_shifts()
        self.history: List[Dict[str, float]] = []
        self._fit_start: Optional[float] = None  # time.monotonic() when fit() started
        self._minutes_before = 0.0  # training minutes before fit() started (a resumed run's history)
        self._budget_spent = 0.0  # share of training.max_minutes spent, as of the last epoch end
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        o = config.optimizer
        self.optimizer = torch.optim.AdamW(self.parameters, lr=o.lr, weight_decay=o.weight_decay,
                                           betas=tuple(o.betas), amsgrad=o.amsgrad)
        steps_per_epoch = math.ceil(len(self.train_set) / t.batch_size)
        self.scheduler = self._make_scheduler(steps_per_epoch * t.epochs)
        self.ema = ExponentialMovingAverage(self.parameters, t.ema_decay)
        self.epoch = 0
        self.step = 0
        self.best_loss = math.inf
        self.bad_epochs = 0
        if resume is not None:
            self.load_checkpoint(resume)

    # -- set-up
    def _load_initial_weights(self, path: str) -> None:
        """Start from the EMA weights (and energy scale and shifts) of the viskrates checkpoint at ``path``.

        Raises:
            FileNotFoundError: no such file. ValueError: not a viskrates checkpoint, or one of another model
                (name, dtype or options).
        """
        from .export import model_from_checkpoint

        if not os.path.exists(path):
            raise FileNotFoundError(f"model.initial_weights: {path} does not exist")
        trained, state = model_from_checkpoint(path)
        theirs, ours = dict(state["config"]["model"]), self.config.to_dict()["model"]
        for model_config in (theirs, ours):
            model_config.pop("initial_weights", None)  # a chain of warm restarts is still the same model
        if theirs != ours:
            raise ValueError(f"model.initial_weights: {path} holds model {theirs}, not {ours}")
        self.model.load_state_dict(trained.state_dict())

    def _initialise_energy_scale_and_shifts(self) -> None:
        pretrained = self.config.model.name == "so3lr" or self.config.model.initial_weights is not None
        _, force_rms = label_statistics(self.train_set)
        if not pretrained:
            _set_energy_scale(self.model, force_rms)
        table = energy_shift_table(self.model)
        shifts_source = self.config.data.energy_shifts
        if shifts_source == "least_squares":
            baseline = None
            if pretrained:
                # fine-tuning: fit only the offset between the pretrained model's and the new reference level
                baseline = self.predict_energies(self.train_set)
            shifts = fit_energy_shifts(self.train_set, table.shape[0], baseline)
        else:
            e0 = read_isolated_atom_energies(shifts_source, self.config.data.isolated_atoms_energy_unit)
            missing = [z for z in self.elements if z not in e0]
            if missing:
                raise ValueError(f"{shifts_source} has no isolated-atom energy for Z = {missing}")
            shifts = np.zeros(table.shape[0])
            for z, value in e0.items():
                if z < table.shape[0]:
                    shifts[z] = value
        with torch.no_grad():
            table.add_(torch.as_tensor(shifts, dtype=table.dtype))

    def _make_scheduler(self, total_steps: int):
        s = self.config.scheduler
        base = self.config.optimizer.lr
        if s.name == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=s.factor, patience=s.patience,
                                                              min_lr=s.min_lr)
        if s.name == "constant":
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        floor = s.min_lr / base

        def cosine(step: int) -> float:
            if step < s.warmup_steps:
                return (step + 1) / s.warmup_steps
            # a run that the time budget will stop (slow or shared machine) still anneals to min_lr; the time is
            # read once per epoch (fit), not in every step
            progress = (step - s.warmup_steps) / max(1, total_steps - s.warmup_steps)
            progress = min(1.0, max(progress, self._budget_spent))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)

    def predict_energies(self, structures: Sequence[Structure]) -> np.ndarray:
        """Energies (eV) the current model predicts for ``structures``."""
        out = []
        with torch.no_grad():
            for part in batches(structures, self.config.training.validation_batch_size, False, 0, 0):
                b = collate(part, self.dtype)
                out.append(model_outputs(self.model, b, b["positions"])["energy"].double().numpy())
        return np.concatenate(out)

    def elapsed_minutes(self) -> float:
        """Training minutes so far: those of the checkpoint's history (a resumed run counts on) plus the time since
        :meth:`fit` started; with several processes the mean over the ranks (a collective: every rank must call
        it at the same point)."""
        if self._fit_start is None:
            minutes = self.history[-1]["minutes"] if self.history else 0.0
        else:
            minutes = self._minutes_before + (time.monotonic() - self._fit_start) / 60.0
        if self.world_size > 1:
            # the time-budgeted learning rate and the stop at the budget must be the same on every rank, or the
            # replicas' weights drift apart and a rank that stops early leaves the others waiting in all_reduce
            total = distributed.all_reduce_sum(torch.tensor([minutes], dtype=torch.float64), self.world_size)
            minutes = float(total[0]) / self.world_size
        return minutes

    # -- one step
    def compute_gradients(self, structures: Sequence[Structure]) -> float:
        """Set ``.grad`` of the trainable parameters to the gradient of the loss of a global batch (each rank
        evaluates its shard, then the gradients are summed over the ranks); returns the batch loss."""
        counts = {"structures": float(len(structures)),
                  "atoms": float(sum(len(s.atomic_numbers) for s in structures))}
        self.optimizer.zero_grad(set_to_none=False)
        mine = shard(structures, self.rank, self.world_size)
        loss_value = torch.zeros((), dtype=torch.float64)
        if mine:
            batch = collate(mine, self.dtype)
            weights = self.config.loss.at_epoch(self.epoch)
            need_forces = weights.forces_weight > 0
            if need_forces and self.config.training.force_gradient == "finite_difference":
                loss, objective = self._finite_difference_objective(batch, weights, counts)
            else:
                pred = evaluate_batch(self.model, batch, need_forces, create_graph=True)
                loss = objective = loss_terms(pred, batch, weights, counts)
            objective.backward()
            loss_value = loss.detach().double()
        for p in self.parameters:
            if p.grad is None:  # a parameter the loss does not reach (e.g. ViSNet's last edge update)
                p.grad = torch.zeros_like(p)
        if self.world_size > 1:
            distributed.all_reduce_gradients(self.parameters)
            loss_value = distributed.all_reduce_sum(loss_value.reshape(1), self.world_size)[0]
        return float(loss_value)

    def _finite_difference_objective(self, batch: Dict[str, Tensor], weights,
                                     counts: Dict[str, float]) -> Tuple[Tensor, Tensor]:
        """``(loss, objective)``: the loss of ``batch`` and a scalar whose parameter gradient is the loss's, from
        first derivatives only (the model may run on kernels without double backward).

        With the force residual ``r = F̂ − F`` (held fixed) and ``F̂ = −∇E``, the force term's gradient is

        ``∂/∂θ [w_F/(3N)·Σ|F̂ − F|²] = −2w_F/(3N) · ∂/∂θ D_r E``,  ``D_r E = Σ_i r_i·∇_i E``,

        and the directional derivative is a central difference ``D_r E ≈ (E(x + h·r) − E(x − h·r)) / (2h)``, h
        such that the largest displacement ``h·max_i|r_i|`` is ``training.finite_difference_displacement``: the
        Hessian-vector product that double backward forms is taken as a difference of two first-order parameter
        gradients. The energy and dipole terms take their gradients at the mean of the two displaced
        evaluations. Both approximations are O(h²).

        Args:
            batch: the collated shard; weights: loss weights of this epoch; counts: ``structures`` and ``atoms``
                of the global batch.
        """
        # the residual needs the forces only: no parameter graph for this evaluation
        for p in self.parameters:
            p.requires_grad_(False)
        try:
            pred = evaluate_batch(self.model, batch, True, create_graph=False)
        finally:
            for p in self.parameters:
                p.requires_grad_(True)
        loss = loss_terms({k: v.detach() for k, v in pred.items()}, batch, weights, counts)
        residual = pred["forces"].detach() - batch["forces"]
        largest = float(torch.linalg.vector_norm(residual, dim=-1).max())
        h = self.config.training.finite_difference_displacement / max(largest, 1.0e-12)
        plus, minus = (model_outputs(self.model, batch, batch["positions"] + sign * h * residual)
                       for sign in (1.0, -1.0))
        mean = {key: 0.5 * (plus[key] + minus[key]) for key in ("energy", "dipole") if key in plus}
        force_term = -(2.0 * weights.forces_weight / (3.0 * counts["atoms"])) * \
            (plus["energy"].sum() - minus["energy"].sum()) / (2.0 * h)
        other_terms = loss_terms(mean, batch, dataclasses.replace(weights, forces_weight=0.0), counts)
        return loss, other_terms + force_term

    def train_step(self, structures: Sequence[Structure]) -> float:
        """One optimisation step on a global batch (gradients, clipping, AdamW, EMA, schedule); returns the
        batch loss."""
        loss_value = self.compute_gradients(structures)
        clip = self.config.training.clip_grad_norm
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, clip)
        self.optimizer.step()
        self.ema.update()
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        self.step += 1
        return loss_value

    # -- loop
    def fit(self) -> Dict[str, float]:
        """Train until ``training.epochs``, early stopping or ``training.max_minutes``; returns the last
        validation metrics (EMA weights)."""
        t = self.config.training
        os.makedirs(t.output_dir, exist_ok=True)
        self._minutes_before = self.elapsed_minutes()
        if t.max_minutes is not None:
            self._budget_spent = self._minutes_before / t.max_minutes
        self._fit_start = time.monotonic()
        metrics: Dict[str, float] = self.history[-1] if self.history else {}
        progress = None
        if t.progress and self.rank == 0:
            from tqdm import tqdm
            steps_per_epoch = math.ceil(len(self.train_set) / t.batch_size)
            progress = tqdm(total=t.epochs * steps_per_epoch, initial=self.step, desc="training", unit="step",
                            dynamic_ncols=True)
        while self.epoch < t.epochs:
            if self.epoch == self.config.loss.stage_two_epoch:
                # the validation loss changes its meaning with the weights: compare only within a stage
                self.best_loss = math.inf
                self.bad_epochs = 0
            losses = []
            for part in batches(self.train_set, t.batch_size, True, t.seed, self.epoch):
                losses.append(self.train_step(part))
                if progress is not None:
                    progress.update(1)
                    progress.set_description(f"epoch {self.epoch + 1}")
            self.epoch += 1
            minutes = self.elapsed_minutes()
            if t.max_minutes is not None:
                self._budget_spent = minutes / t.max_minutes
            out_of_time = t.max_minutes is not None and minutes > t.max_minutes
            if self.epoch % t.validate_every == 0 or self.epoch == t.epochs or out_of_time:
                self.ema.swap()
                metrics = validate(self.model, self.validation_set, self.config, self.dtype, self.rank,
                                   self.world_size, self.epoch - 1)
                self.ema.swap()
                metrics = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                           "train_loss": float(np.mean(losses)),
                           **{"val_" + k: v for k, v in metrics.items()},
                           "minutes": minutes}
                self.history.append(metrics)
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(metrics["val_loss"])
                improved = metrics["val_loss"] < self.best_loss
                if improved:
                    self.best_loss = metrics["val_loss"]
                    self.bad_epochs = 0
                else:
                    self.bad_epochs += t.validate_every
                if self.rank == 0:
                    self._write_metrics(metrics)
                    self.save_checkpoint(os.path.join(t.output_dir, "checkpoint_last.pt"))
                    if improved:
                        self.save_checkpoint(os.path.join(t.output_dir, "checkpoint_best.pt"))
                if progress is not None:
                    progress.set_postfix(E_meV=f"{metrics['val_energy_mae_meV']:.1f}",
                                         F_meV_A=f"{metrics['val_forces_mae_meV_per_A']:.1f}")
                if t.early_stopping_patience is not None and self.bad_epochs >= t.early_stopping_patience:
                    break
            if out_of_time:
                break
        if progress is not None:
            progress.close()
        if self.rank == 0 and t.plots:
            self.plot()
        return metrics

    def _write_metrics(self, metrics: Dict[str, float]) -> None:
        path = os.path.join(self.config.training.output_dir, "metrics.csv")
        fields = list(metrics)
        new = not os.path.exists(path) or len(self.history) == 1
        with open(path, "w" if new else "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow(metrics)

    # -- checkpoints
    def save_checkpoint(self, path: str) -> None:
        """Write the full training state to ``path`` (atomically: a temporary file, then rename)."""
        state = {
            "format": "viskrates-checkpoint", "version": 1, "config": self.config.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "epoch": self.epoch, "step": self.step, "best_loss": self.best_loss, "bad_epochs": self.bad_epochs,
            "history": self.history, "data_hash": self.data_hash, "elements": self.elements,
        }
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str) -> None:
        """Restore the training state written by :meth:`save_checkpoint`.

        Raises:
            ValueError: not a viskrates checkpoint, another model, or another training set (data hash).
        """
        state = read_checkpoint(path)
        if state["config"]["model"] != self.config.to_dict()["model"]:
            raise ValueError(f"{path} was written for model {state['config']['model']}, not "
                             f"{self.config.to_dict()['model']}")
        if state["data_hash"] != self.data_hash:
            raise ValueError(f"{path} was trained on other data (hash {state['data_hash'][:12]}…, this config "
                             f"gives {self.data_hash[:12]}…)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_loss, self.bad_epochs = state["best_loss"], state["bad_epochs"]
        self.history = list(state["history"])

    # -- plots
    def plot(self) -> None:
        """``learning_curve.png`` (validation MAEs per epoch) and ``forces_parity.png`` (predicted vs reference
        validation force components, EMA weights). Skipped with a note when matplotlib is missing."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plots")
            return
        out = self.config.training.output_dir
        if self.history:
            epochs = [h["epoch"] for h in self.history]
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.semilogy(epochs, [h["val_energy_mae_meV"] for h in self.history], label="energy MAE (meV)")
            ax.semilogy(epochs, [h["val_forces_mae_meV_per_A"] for h in self.history], label="force MAE (meV/Å)")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation error (EMA weights)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(os.path.join(out, "learning_curve.png"), dpi=120)
            plt.close(fig)
        if self.config.loss.forces_weight > 0:
            reference, predicted = [], []
            self.ema.swap()
            try:
                for part in batches(self.validation_set, self.config.training.validation_batch_size, False, 0, 0):
                    b = collate(part, self.dtype)
                    predicted.append(evaluate_batch(self.model, b, True, False)["forces"].detach().reshape(-1))
                    reference.append(b["forces"].reshape(-1))
            finally:
                self.ema.swap()
            reference = torch.cat(reference).double().numpy()
            predicted = torch.cat(predicted).double().numpy()
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.plot(reference, predicted, ".", markersize=2, alpha=0.4)
            lim = [min(reference.min(), predicted.min()), max(reference.max(), predicted.max())]
            ax.plot(lim, lim, "k-", linewidth=0.8)
            mae = 1000 * np.mean(np.abs(reference - predicted))
            ax.set_title(f"validation forces, MAE {mae:.1f} meV/Å")
            ax.set_xlabel("reference force component (eV/Å)")
            ax.set_ylabel("predicted (eV/Å)")
            fig.tight_layout()
            fig.savefig(os.path.join(out, "forces_parity.png"), dpi=120)
            plt.close(fig)
