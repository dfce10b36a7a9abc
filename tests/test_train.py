"""Training package: unit conversion of datasets, energy shifts, splits, config errors, a short training run,
bitwise checkpoint resume, export (TorchScript + openmm-ml) and 2-process data-parallel gradients."""
import os
import time

import numpy as np
import pytest
import torch

from viskrates.train import (ExponentialMovingAverage, Structure, Trainer, export_checkpoint, fit_energy_shifts,
                             load_config, load_exported, model_from_checkpoint, parse_config, read_extxyz, read_npz,
                             split_dataset)
from viskrates.train.data import batches, collate
from viskrates.train.trainer import build_model, evaluate_batch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "train")
ETHANOL = os.path.join(DATA, "ethanol_12.xyz")
ASPIRIN_KCAL = os.path.join(DATA, "aspirin_4_kcal.xyz")

# From the SI defining constants and CODATA 2018, independent of the tables in viskrates.train.data:
# 1 kcal/mol = 4184 J / (N_A · e) = 0.0433641043 eV (thermochemical calorie)
KCAL_PER_MOL_IN_EV = 4184.0 / (6.02214076e23 * 1.602176634e-19)
HARTREE_IN_EV = 27.211386245988
BOHR_IN_ANGSTROM = 0.529177210903


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    # Trainer applies training.num_threads process-wide; later test modules keep their thread count
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_config(output_dir, **training):
    values = {
        "model": {"name": "visnet", "dtype": "float64",
                  "options": {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "num_heads": 2, "max_z": 10,
                              "cutoff": 4.0}},
        "data": {"train": {"path": ETHANOL, "energy_unit": "eV"}, "validation_fraction": 0.25, "seed": 3},
        "optimizer": {"lr": 2e-3},
        "scheduler": {"name": "constant"},
        "training": {"epochs": 4, "batch_size": 3, "validation_batch_size": 3, "output_dir": str(output_dir),
                     "progress": False, "plots": False, "num_threads": 1, **training},
    }
    return parse_config(values)


def _first_frame_labels(path):
    """Energy and first force row of the first frame, parsed by hand (no ase), in the file's units."""
    with open(path) as handle:
        handle.readline()
        comment = handle.readline()
        first_atom = handle.readline().split()
    energy = float(comment.split("energy=")[1].split()[0])
    return energy, np.array([float(v) for v in first_atom[4:7]])


def test_extxyz_kcal_per_mol_converted_to_ev():
    structures = read_extxyz(ASPIRIN_KCAL, energy_unit="kcal/mol")
    energy, force = _first_frame_labels(ASPIRIN_KCAL)
    assert len(structures) == 4
    assert structures[0].atomic_numbers.tolist()[:3] == [6, 6, 6]
    assert structures[0].energy == pytest.approx(energy * KCAL_PER_MOL_IN_EV, rel=1e-9)
    np.testing.assert_allclose(structures[0].forces[0], force * KCAL_PER_MOL_IN_EV, rtol=1e-9)
    # the file says kcal/mol: reading it as eV is an error, not a silent factor of 23
    with pytest.raises(ValueError, match="declares units"):
        read_extxyz(ASPIRIN_KCAL, energy_unit="eV")
    with pytest.raises(ValueError, match="unknown energy unit 'kcal'"):
        read_extxyz(ASPIRIN_KCAL, energy_unit="kcal")


def test_npz_hartree_bohr_converted(tmp_path):
    rng = np.random.default_rng(0)
    positions = rng.normal(size=(3, 4, 3))
    energy = rng.normal(size=3)
    forces = rng.normal(size=(3, 4, 3))
    path = tmp_path / "set.npz"
    np.savez(path, z=np.array([8, 1, 1, 6]), R=positions, E=energy, F=forces)
    structures = read_npz(str(path), energy_unit="Hartree", length_unit="Bohr")
    assert [s.atomic_numbers.tolist() for s in structures] == [[8, 1, 1, 6]] * 3
    np.testing.assert_allclose(structures[2].positions, positions[2] * BOHR_IN_ANGSTROM, rtol=1e-12)
    assert structures[1].energy == pytest.approx(energy[1] * HARTREE_IN_EV, rel=1e-12)
    # Hartree/Bohr: CODATA 2018 atomic unit of force 8.2387234983e-8 N, in eV/Å (1 eV/Å = 1.602176634e-9 N)
    np.testing.assert_allclose(structures[0].forces, forces[0] * 8.2387234983e-8 / 1.602176634e-9, rtol=1e-9)


def test_least_squares_energy_shifts_recover_per_element_energies():
    true = {1: -13.6, 6: -1025.3, 8: -2035.6}
    rng = np.random.default_rng(1)
    structures = []
    for _ in range(20):
        numbers = rng.choice([1, 6, 8], size=rng.integers(2, 9))
        energy = sum(true[int(z)] for z in numbers)
        structures.append(Structure(numbers.astype(np.int64), np.zeros((len(numbers), 3)), energy))
    shifts = fit_energy_shifts(structures, 10)
    np.testing.assert_allclose(shifts[[1, 6, 8]], [true[1], true[6], true[8]], rtol=1e-10)
    assert np.all(shifts[[0, 2, 3, 4, 5, 7, 9]] == 0)


def test_isolated_atom_energy_shifts(tmp_path):
    config = tiny_config(tmp_path)
    config.data.energy_shifts = os.path.join(DATA, "ethanol_isolated_atoms.xyz")
    trainer = Trainer(config)
    # values of the file (eV), read by hand here
    expected = {1: -13.568422383046626, 6: -1025.2770951782686, 7: -1479.0665594928669, 8: -2035.5709809589698}
    for z, e0 in expected.items():
        assert float(trainer.model.atomref[z]) == pytest.approx(e0, rel=1e-14)
    assert float(trainer.model.std) == pytest.approx(
        np.sqrt(np.mean(np.concatenate([s.forces.ravel() for s in trainer.train_set]) ** 2)), rel=1e-12)


def test_split_is_seeded_and_disjoint():
    structures = read_extxyz(ETHANOL, "eV")
    a = split_dataset(structures, [0.25, 0.75], seed=5)
    b = split_dataset(structures, [0.25, 0.75], seed=5)
    c = split_dataset(structures, [0.25, 0.75], seed=6)
    ids = lambda part: [id(s) for s in part]  # noqa: E731
    assert [len(p) for p in a] == [3, 9]
    assert ids(a[0]) == ids(b[0]) and ids(a[0]) != ids(c[0])
    assert not set(ids(a[0])) & set(ids(a[1]))
    with pytest.raises(ValueError, match="empty"):
        split_dataset(structures, [0.01, 0.99], seed=1)


def test_collate_batches_variable_sizes():
    structures = read_extxyz(ETHANOL, "eV")[:2] + read_extxyz(ASPIRIN_KCAL, "kcal/mol")[:1]
    batch = collate(structures)
    assert batch["batch"].tolist() == [0] * 9 + [1] * 9 + [2] * 21
    assert batch["num_atoms"].tolist() == [9, 9, 21]
    assert batch["forces"].shape == (39, 3) and batch["energy"].shape == (3,)


@pytest.mark.parametrize("values, message", [
    ({"model": {"name": "mace"}}, "model.name must be one of"),
    ({"model": {"name": "visnet"}, "data": {"train": {"path": "x.xyz"}}}, "energy_unit is required"),
    ({"model": {"name": "visnet"}, "data": {"train": {"path": "x.xyz", "energy_unit": "eV"}},
      "training": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in config section 'training'"),
    ({"model": {"name": "visnet"}, "data": {"train": {"path": "x.xyz", "energy_unit": "eV"}},
      "loss": {"dipole_weight": 1.0}}, "dipole output"),
    ({"model": {"name": "visnet"}, "data": {"train": {"path": "x.xyz", "energy_unit": "eV"}},
      "training": {"batch_size": 0}}, "training.batch_size must be a positive integer"),
    ({"model": {"name": "visnet", "initial_weights": "run/checkpoint_best.pt"},
      "data": {"train": {"path": "x.xyz", "energy_unit": "eV"}, "energy_shifts": "isolated.xyz"}},
     "initial_weights carries its per-element energies"),
])
def test_bad_config_gives_clear_error(values, message):
    with pytest.raises(ValueError, match=message):
        parse_config(values)


def test_example_configs_are_valid():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "examples", "train_visnet_rmd17.yaml"))
    assert config.model.name == "visnet" and config.data.train.energy_unit == "kcal/mol"
    assert os.path.exists(config.data.train.path)  # relative to the YAML file
    config = load_config(os.path.join(root, "examples", "train_visnet_rmd17_ethanol.yaml"))
    assert config.model.name == "visnet" and config.data.train.energy_unit == "eV"
    assert os.path.exists(config.data.train.path)
    for name, first in (("train_visnet_rmd17_warm.yaml", "train_visnet_rmd17.yaml"),
                        ("train_visnet_rmd17_warm2.yaml", "train_visnet_rmd17_warm.yaml"),
                        ("train_visnet_rmd17_ethanol_warm.yaml", "train_visnet_rmd17_ethanol.yaml"),
                        ("train_visnet_rmd17_ethanol_warm2.yaml", "train_visnet_rmd17_ethanol_warm.yaml"),
                        ("train_visnet_rmd17_ethanol_warm3.yaml", "train_visnet_rmd17_ethanol_warm2.yaml"),
                        ("train_visnet_rmd17_ethanol_warm4.yaml", "train_visnet_rmd17_ethanol_warm3.yaml")):
        warm, cold = (load_config(os.path.join(root, "examples", n)) for n in (name, first))
        # a warm restart continues the previous stage's model on its data, from that run's best checkpoint
        assert (warm.model.name, warm.model.options, warm.data.train.path) == \
            (cold.model.name, cold.model.options, cold.data.train.path)
        assert warm.model.initial_weights == os.path.join(cold.training.output_dir, "checkpoint_best.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(os.path.join(root, "examples", "no_such_config.yaml"))


def test_bad_config_through_cli(tmp_path, capsys):
    from viskrates.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: visnet}\ndata: {train: {path: d.xyz, energy_unit: furlongs}}\n")
    assert main(["train", str(path)]) == 2
    assert "unknown energy unit 'furlongs'" in capsys.readouterr().err


def test_missing_labels_give_clear_error(tmp_path):
    config = tiny_config(tmp_path)
    config.model.name = "so3lr"
    config.model.options = {}
    config.loss.dipole_weight = 1.0
    with pytest.raises(ValueError, match="training structure\\(s\\) have no dipole"):
        Trainer(config)
    config = tiny_config(tmp_path)
    config.data.train.path = str(tmp_path / "missing.xyz")
    with pytest.raises(FileNotFoundError, match="missing.xyz does not exist"):
        Trainer(config)


def test_stage_two_loss_weights():
    config = tiny_config("unused")
    config.loss.stage_two_epoch = 5
    assert config.loss.at_epoch(4).energy_weight == 1.0
    assert (config.loss.at_epoch(5).energy_weight, config.loss.at_epoch(5).forces_weight) == (1000.0, 100.0)


def test_ema_average_and_swap():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = ExponentialMovingAverage([p], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # d = min(0.5, 2/11)
    d = 2.0 / 11.0
    assert ema.shadow[0].item() == pytest.approx(1.0 - d)
    ema.swap()
    assert p.item() == pytest.approx(1.0 - d) and ema.shadow[0].item() == 1.0


def test_short_training_lowers_the_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=8))
    parts = batches(trainer.train_set, 9, False, 0, 0)
    before = trainer.compute_gradients(parts[0])
    metrics = trainer.fit()
    after = trainer.compute_gradients(parts[0])
    assert after < 0.5 * before
    assert metrics["epoch"] == 8 and len(trainer.validation_set) == 3
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss,val_loss,val_energy_mae_meV")
    assert len(rows) == 9


def test_so3krates_trains_from_scratch(tmp_path):
    config = tiny_config(tmp_path, epochs=10)
    config.model.name = "so3krates"
    config.model.options = {"num_features": 16, "num_heads": 2, "lmax": 2, "num_layers": 1, "num_basis": 8,
                             "cutoff": 4.0, "num_elements": 10}
    config.optimizer.lr = 5e-3
    trainer = Trainer(config)
    part = batches(trainer.train_set, 9, False, 0, 0)[0]
    before = trainer.compute_gradients(part)
    trainer.fit()
    assert trainer.compute_gradients(part) < 0.8 * before
    trainer.ema.swap()
    export_checkpoint(str(tmp_path / "checkpoint_last.pt"), str(tmp_path / "so3krates.pt"))
    assert_exported_matches(str(tmp_path / "so3krates.pt"), trainer.model, trainer.validation_set[0])


def test_so3lr_fine_tuning_with_dipoles(tmp_path):
    structures = read_extxyz(ETHANOL, "eV")[:6]
    path = tmp_path / "ethanol_dipoles.npz"
    # NPZ in kJ/mol and Debye: labels for the dipole term (a fixed 1 D along x, not a DFT dipole)
    np.savez(path, z=structures[0].atomic_numbers, R=np.stack([s.positions for s in structures]),
             E=np.array([s.energy for s in structures]) * 96.48533212331002,
             F=np.stack([s.forces for s in structures]) * 96.48533212331002,
             dipole=np.tile([1.0, 0.0, 0.0], (6, 1)))
    config = parse_config({
        "model": {"name": "so3lr", "dtype": "float64", "options": {"lr_cutoff": None}},
        "data": {"train": {"path": str(path), "energy_unit": "kJ/mol", "dipole_unit": "Debye"},
                 "validation_fraction": 0.34},
        "loss": {"energy_weight": 1.0, "forces_weight": 10.0, "dipole_weight": 10.0},
        "optimizer": {"lr": 1e-4}, "scheduler": {"name": "constant"},
        "training": {"epochs": 2, "batch_size": 2, "output_dir": str(tmp_path / "run"), "progress": False,
                     "plots": False}})
    trainer = Trainer(config)
    assert trainer.train_set[0].dipole == pytest.approx([0.20819434, 0.0, 0.0])
    # energy shifts are fitted to the residual of the pretrained model: its mean error is 0 at the start
    assert float(np.mean([s.energy for s in trainer.train_set]) - np.mean(trainer.predict_energies(trainer.train_set))) \
        == pytest.approx(0.0, abs=1e-9)
    part = trainer.train_set
    before = trainer.compute_gradients(part)
    trainer.fit()
    assert trainer.compute_gradients(part) < 0.5 * before
    assert "val_dipole_mae_eA" in trainer.history[-1]
    trainer.ema.swap()
    export_checkpoint(str(tmp_path / "run" / "checkpoint_last.pt"), str(tmp_path / "so3lr.pt"))
    assert_exported_matches(str(tmp_path / "so3lr.pt"), trainer.model, trainer.validation_set[0])


@pytest.mark.parametrize("name, options", [
    ("visnet", {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "num_heads": 2, "max_z": 10, "cutoff": 4.0,
                "lmax": 2, "vector_cutoff": True}),
    ("so3krates", {"num_features": 16, "num_heads": 2, "lmax": 2, "num_layers": 2, "num_basis": 8, "cutoff": 4.0,
                   "num_elements": 10}),
    ("so3lr", {"lr_cutoff": None}),
])
def test_finite_difference_force_gradient_matches_double_backward(tmp_path, name, options):
    """The parameter gradient of the loss with the force term by finite differences (fused kernels, first
    derivatives only) equals the double-backward one (reference kernels) to the O(h²) truncation, float64."""
    trainers = []
    for method in ("double_backward", "finite_difference"):
        config = tiny_config(tmp_path / method, force_gradient=method, finite_difference_displacement=1e-4)
        config.model.name, config.model.options = name, options
        trainers.append(Trainer(config))
    exact, approximate = trainers
    backends = [getattr(t.model, "backend", None) or t.model.network.backend for t in trainers]
    assert backends == ["reference", "fused"]
    approximate.model.load_state_dict(exact.model.state_dict())
    part = exact.train_set[:3]

    def gradient(trainer):
        loss = trainer.compute_gradients(part)
        return loss, torch.cat([p.grad.reshape(-1) for p in trainer.parameters])

    (loss, reference), (loss_fd, finite) = gradient(exact), gradient(approximate)
    assert loss_fd == pytest.approx(loss, rel=1e-10)
    assert float((finite - reference).norm() / reference.norm()) < 1e-5
    exact.config.loss.forces_weight = 0.0  # the force term matters: without it the gradient is another one
    _, energy_only = gradient(exact)
    assert float((energy_only - reference).norm() / reference.norm()) > 1e-2


def test_resume_continues_bitwise(tmp_path):
    def config(path, epochs):
        values = tiny_config(path, epochs=epochs)
        values.loss.stage_two_epoch = 3  # the resumed part crosses into stage two
        return values

    straight = Trainer(config(tmp_path / "a", 4))
    straight.fit()
    first = Trainer(config(tmp_path / "b", 2))
    first.fit()
    resumed = Trainer(config(tmp_path / "b", 4), resume=str(tmp_path / "b" / "checkpoint_last.pt"))
    assert resumed.epoch == 2 and resumed.step == first.step
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(straight.ema.shadow, resumed.ema.shadow):
        assert torch.equal(a, b)
    assert straight.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]
    with pytest.raises(ValueError, match="other data"):
        config = tiny_config(tmp_path / "c")
        config.data.seed = 4
        Trainer(config, resume=str(tmp_path / "b" / "checkpoint_last.pt"))


def test_cosine_schedule_anneals_within_the_time_budget(tmp_path, monkeypatch):
    import math

    import viskrates.train.trainer as trainer_module

    clock = [1000.0]  # seconds; frozen unless a test line moves it
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock[0])
    config = tiny_config(tmp_path, epochs=1000, max_minutes=10.0)
    config.scheduler.name, config.scheduler.min_lr, config.scheduler.warmup_steps = "cosine", 1e-5, 0
    trainer = Trainer(config)
    trainer.config.training.epochs = 1
    trainer.fit()  # no time passes: the step count sets the schedule
    steps = 1000 * trainer.step

    def cosine(progress):
        return 1e-5 + (2e-3 - 1e-5) * 0.5 * (1.0 + math.cos(math.pi * progress))

    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cosine(trainer.step / steps), rel=1e-12)
    # the clock is read at the end of each epoch: 60 % of the budget spent during epoch 2, then all of it
    for epochs, minutes, progress in ((2, 6.0, 0.6), (3, 11.0, 1.0)):
        clock[0] = 1000.0 + 60.0 * minutes
        trainer.config.training.epochs = epochs
        trainer.fit()
        trainer.scheduler.step()  # the first step after that epoch end
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cosine(progress), rel=1e-12)
    trainer.config.training.epochs = 6
    trainer.fit()  # already over budget: stops after one epoch
    assert trainer.epoch == 4 and trainer.history[-1]["minutes"] == pytest.approx(11.0)


def test_initial_weights_start_a_fresh_run_from_the_ema_weights(tmp_path):
    first = Trainer(tiny_config(tmp_path / "a", epochs=2))
    first.fit()
    config = tiny_config(tmp_path / "b", epochs=2)
    config.model.initial_weights = str(tmp_path / "a" / "checkpoint_last.pt")
    warm = Trainer(config)
    assert (warm.epoch, warm.step, warm.history) == (0, 0, [])
    assert all(not state for state in warm.optimizer.state.values())  # fresh AdamW moments
    first.ema.swap()
    batch = collate(warm.train_set, torch.float64)
    old, new = (evaluate_batch(model, batch, True, False) for model in (first.model, warm.model))
    torch.testing.assert_close(new["forces"], old["forces"], rtol=0, atol=1e-12)
    # the per-element energies are refitted as an offset to the (possibly new) reference level: on the same data
    # ethanol's one composition moves all energies by one constant that zeroes the mean training residual
    shift = (new["energy"] - old["energy"]).detach()
    torch.testing.assert_close(shift, shift[0].expand_as(shift), rtol=0, atol=1e-10)
    assert float((batch["energy"] - new["energy"]).detach().mean()) == pytest.approx(0.0, abs=1e-10)
    assert abs(float(shift[0])) > 1e-6  # the offset really was refitted, so the mean-residual check can fail
    warm.fit()
    assert warm.history[-1]["epoch"] == 2

    config.model.options = {**config.model.options, "hidden_channels": 8}
    with pytest.raises(ValueError, match="holds model"):
        Trainer(config)
    config.model.initial_weights = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="initial_weights"):
        Trainer(config)
    torch.save({"model": warm.model.state_dict()}, tmp_path / "weights_only.pt")
    config.model.initial_weights = str(tmp_path / "weights_only.pt")
    with pytest.raises(ValueError, match="weights_only.pt is not a viskrates training checkpoint"):
        Trainer(config)
    with pytest.raises(ValueError, match="weights_only.pt is not a viskrates training checkpoint"):
        Trainer(tiny_config(tmp_path / "c", epochs=2), resume=str(tmp_path / "weights_only.pt"))


def assert_exported_matches(path, model, structure, rtol=1e-13, atol=1e-10):
    """The exported model at ``path`` runs on the fused kernels and gives ``model``'s energy and forces (float64)."""
    exported, metadata = load_exported(path)
    assert metadata["model"]["backend"] == "fused"
    results = []
    for module in (model, exported):
        positions = torch.tensor(structure.positions, requires_grad=True)
        energy = module(torch.tensor(structure.atomic_numbers), positions, None, None, None)["energy"]
        results.append((energy.detach(), -torch.autograd.grad(energy.sum(), positions)[0]))
    assert float(results[0][1].abs().max()) > 1e-3  # forces to compare
    torch.testing.assert_close(results[1][0], results[0][0], rtol=rtol, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=atol)


def test_training_refuses_a_backend_in_the_model_options():
    for name, options in (("visnet", {"cutoff": 4.0}), ("so3krates", {"num_features": 8, "num_heads": 2, "lmax": 2}),
                          ("so3lr", {})):
        with pytest.raises(ValueError, match="must not choose a backend"):
            build_model(name, {**options, "backend": "fused"}, torch.float64)


def test_export_equals_in_memory_model_and_loads_in_openmm(tmp_path):
    import openmm
    import openmm.app as app
    from openmmml import MLPotential

    trainer = Trainer(tiny_config(tmp_path, epochs=1))
    trainer.fit()
    checkpoint = str(tmp_path / "checkpoint_last.pt")
    exported_path = str(tmp_path / "model.pt")
    metadata = export_checkpoint(checkpoint, exported_path, backend="reference")
    assert metadata["elements"] == [1, 6, 8] and metadata["cutoff"] == 4.0
    assert metadata["units"]["energy"] == "eV" and len(metadata["training_data_sha256"]) == 64
    model, _ = model_from_checkpoint(checkpoint)
    exported, loaded_metadata = load_exported(exported_path)
    assert loaded_metadata == metadata
    # EMA weights are exported, not the live ones
    trainer.ema.swap()
    for (name, a), b in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name

    structure = trainer.validation_set[0]
    results = []
    for module in (trainer.model, exported):
        positions = torch.tensor(structure.positions, requires_grad=True)
        energy = module(torch.tensor(structure.atomic_numbers), positions, None, None, None)["energy"]
        results.append((energy.detach(), -torch.autograd.grad(energy.sum(), positions)[0]))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-12)
    # by default the same weights are exported on the fused kernels
    fused_path = str(tmp_path / "fused.pt")
    assert export_checkpoint(checkpoint, fused_path)["model"]["backend"] == "fused"
    assert_exported_matches(fused_path, trainer.model, structure)

    topology = app.Topology()
    residue = topology.addResidue("ETH", topology.addChain())
    for z in structure.atomic_numbers:
        topology.addAtom("X", app.Element.getByAtomicNumber(int(z)), residue)
    system = MLPotential("visnet", modelPath=exported_path).createSystem(topology, precision="double")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(structure.positions / 10.0)  # Å -> nm
    state = context.getState(getEnergy=True, getForces=True)
    kj_per_mol_per_ev = 96.48533212331002
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) / kj_per_mol_per_ev
    forces = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    assert energy == pytest.approx(float(results[0][0]), rel=1e-12)
    np.testing.assert_allclose(forces / (10 * kj_per_mol_per_ev), results[0][1].numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="holds a trained 'visnet' model"):
        MLPotential("so3lr", modelPath=exported_path).createSystem(topology)


def _ddp_worker(rank, init_file, output_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
    try:
        trainer = Trainer(tiny_config(output_dir))
        assert (trainer.rank, trainer.world_size) == (rank, 2)
        loss = trainer.compute_gradients(batches(trainer.train_set, 5, False, 0, 0)[0])
        # the ranks' clocks disagree (rank 1 started fit 10 min earlier): all must see the same time budget spent
        trainer._fit_start = time.monotonic() - 600.0 * rank
        minutes = trainer.elapsed_minutes()
        torch.save({"loss": loss, "grads": [p.grad for p in trainer.parameters], "minutes": minutes},
                   output_dir + ".pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_gradients_equal_single_process(tmp_path):
    import multiprocessing

    # the single-process reference first: the forked workers then inherit every module it imported
    # (torch.optim imports torch._dynamo on first use, ~10 s), instead of importing them again
    single = Trainer(tiny_config(tmp_path / "single"))
    loss = single.compute_gradients(batches(single.train_set, 5, False, 0, 0)[0])
    context = multiprocessing.get_context("fork")
    init_file = str(tmp_path / "store")
    workers = [context.Process(target=_ddp_worker, args=(rank, init_file, str(tmp_path / f"rank{rank}")))
               for rank in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    assert any(float(p.grad.abs().max()) > 0 for p in single.parameters)
    for rank in range(2):
        result = torch.load(str(tmp_path / f"rank{rank}.pt"))
        rank_loss, grads = result["loss"], result["grads"]
        assert rank_loss == pytest.approx(loss, rel=1e-12)
        assert result["minutes"] == pytest.approx(5.0, abs=0.1)  # the mean of ~0 and ~10 minutes
        for p, g in zip(single.parameters, grads):
            torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-13)
