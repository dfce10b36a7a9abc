"""ViSNet against PyTorch Geometric 2.8.1 reference energies and forces, plus symmetry and smoothness checks.

The reference data (tests/data/visnet, see tests/data/SOURCES.md) are PyG ``ViSNet`` outputs for
seeded, perturbed weights in three configurations (A: lmax 1, 3 layers; B: lmax 2, 2 layers; B3: lmax 2,
3 layers), computed in float64 and float32. Acceptance criteria are those of the reference README: float64
|ΔE| ≤ 1e-10·|E|, max|ΔF| ≤ 1e-9·max|F|; float32 |ΔE| ≤ 5e-6·|E|, max|ΔF| ≤ 1e-4·max|F|, always against the
float64 arrays.
"""
import io
import json
import math
import os

import numpy as np
import pytest
import torch

from viskrates.models.visnet import ViSNet, load_pyg_visnet

DATA = os.path.join(os.path.dirname(__file__), "data", "visnet")
CONFIGS = ("A", "B", "B3")
SYSTEMS = ("ala2", "water3", "chignolin", "batch_ala2_water3")
TOLERANCES = {torch.float64: (1e-10, 1e-9), torch.float32: (5e-6, 1e-4)}


def _model(config: str, dtype: torch.dtype = torch.float64, vector_cutoff: bool = False) -> ViSNet:
    return load_pyg_visnet(os.path.join(DATA, f"weights_{config}.pt"), os.path.join(DATA, f"config_{config}.json"),
                           vector_cutoff=vector_cutoff).to(dtype)


_CACHE = {}


def model(config: str, dtype: torch.dtype = torch.float64) -> ViSNet:
    key = (config, dtype)
    if key not in _CACHE:
        _CACHE[key] = _model(config, dtype)
    return _CACHE[key]


def reference(config: str, system: str):
    return np.load(os.path.join(DATA, f"ref_{config}_{system}.npz"))


def energy_forces(net, z, pos, box=None, batch=None):
    pos = pos.detach().clone().requires_grad_(True)
    energy = net(z, pos, box, batch)["energy"]
    forces = -torch.autograd.grad(energy.sum(), pos)[0]
    return energy.detach(), forces


def inputs(ref, dtype=torch.float64):
    z = torch.from_numpy(ref["z"])
    pos = torch.from_numpy(ref["pos"]).to(dtype)
    batch = torch.from_numpy(ref["batch"])
    return z, pos, (batch if int(batch.max()) > 0 else None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("config", CONFIGS)
def test_matches_pyg_reference(config, system, dtype):
    ref = reference(config, system)
    z, pos, batch = inputs(ref, dtype)
    net = model(config, dtype)
    pos.requires_grad_(True)
    out = net(z, pos, None, batch)
    energy = out["energy"].detach()
    forces = -torch.autograd.grad(out["energy"].sum(), pos)[0]
    assert energy.dtype == dtype and forces.dtype == dtype
    e_ref, f_ref = ref["energy_f64"], ref["forces_f64"]
    assert energy.shape == e_ref.shape
    e_tol, f_tol = TOLERANCES[dtype]
    e_err = np.abs(energy.double().numpy() - e_ref)
    assert np.all(e_err <= e_tol * np.abs(e_ref)), (e_err / np.abs(e_ref)).max()
    f_err = np.abs(forces.double().numpy() - f_ref).max()
    assert f_err <= f_tol * np.abs(f_ref).max(), f_err / np.abs(f_ref).max()
    if dtype == torch.float64:
        atomic = out["atomic_energies"].detach().numpy()
        np.testing.assert_allclose(atomic, ref["atom_energy_f64"], rtol=0, atol=1e-10 * np.abs(e_ref).max())


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_torchscript_round_trip():
    net = model("B3")
    scripted = torch.jit.script(net)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    ref = reference("B3", "batch_ala2_water3")
    z, pos, batch = inputs(ref)
    e0, f0 = energy_forces(net, z, pos, None, batch)
    e1, f1 = energy_forces(loaded, z, pos, None, batch)
    torch.testing.assert_close(e1, e0, rtol=1e-14, atol=0)
    torch.testing.assert_close(f1, f0, rtol=1e-12, atol=1e-13)
    assert loaded.cutoff == 5.0 and list(loaded.supported_elements) == list(range(1, 100))
    with pytest.raises(torch.jit.Error, match="Z=100"):
        loaded(torch.tensor([1, 100]), torch.zeros(2, 3, dtype=torch.float64))


def test_forces_match_finite_differences():
    net = model("B3")
    ref = reference("B3", "ala2")
    z, pos, _ = inputs(ref)
    _, forces = energy_forces(net, z, pos)
    step = 1e-5  # every pair is ≥ 5.6e-3 Å away from the cutoff, so no pair crosses it
    for atom, axis in ((0, 0), (5, 1), (10, 2), (17, 0), (21, 1)):
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += step
        minus[atom, axis] -= step
        with torch.no_grad():
            derivative = (net(z, plus)["energy"] - net(z, minus)["energy"]).item() / (2 * step)
        assert abs(-derivative - forces[atom, axis].item()) <= 1e-7 * forces.abs().max().item()


def _rotation(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("config", ["A", "B3"])
def test_rotation_translation_invariance(config):
    net = model(config)
    ref = reference(config, "batch_ala2_water3")
    z, pos, batch = inputs(ref)
    e0, f0 = energy_forces(net, z, pos, None, batch)
    rotation = _rotation(7)
    e1, f1 = energy_forces(net, z, pos @ rotation.T + torch.tensor([3.1, -7.2, 12.5], dtype=torch.float64),
                           None, batch)
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=0)
    torch.testing.assert_close(f1, f0 @ rotation.T, rtol=0, atol=1e-10 * f0.abs().max().item())


def test_permutation_invariance():
    net = model("B3")
    ref = reference("B3", "ala2")
    z, pos, _ = inputs(ref)
    e0, f0 = energy_forces(net, z, pos)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(3))
    e1, f1 = energy_forces(net, z[perm], pos[perm])
    torch.testing.assert_close(e1, e0, rtol=1e-13, atol=0)
    torch.testing.assert_close(f1, f0[perm], rtol=0, atol=1e-12 * f0.abs().max().item())


def test_periodic_box_minimum_image():
    """A molecule wrapped into a large triclinic cell, scattered over its corners, has the energy and
    forces of the free molecule (each perpendicular width exceeds its extent + cutoff)."""
    net = model("A")
    ref = reference("A", "ala2")
    z, pos, _ = inputs(ref)
    e0, f0 = energy_forces(net, z, pos)
    box = torch.tensor([[24.0, 0.0, 0.0], [5.0, 23.0, 0.0], [-4.0, 3.0, 25.0]], dtype=torch.float64)
    shifted = pos - pos.mean(0)  # centred on a corner: wrapping splits the molecule over the cell
    fractional = torch.linalg.solve(box.T, shifted.T).T
    wrapped = (fractional - torch.floor(fractional)) @ box
    assert (wrapped - shifted).abs().max() > 5.0
    e1, f1 = energy_forces(net, z, wrapped, box)
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=0)
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-10 * f0.abs().max().item())


def test_bad_input_raises_value_error():
    net = model("A")
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.2, 0.0]], dtype=torch.float64)
    assert net.supported_elements == list(range(1, 100))
    with pytest.raises(ValueError, match=r"Z=0.*supports Z = 1\.\.99"):
        net(torch.tensor([0, 1, 8]), pos)
    with pytest.raises(ValueError, match=r"Fm \(Z=100\)"):
        net(torch.tensor([1, 100, 8]), pos)
    nan = pos.clone()
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        net(torch.tensor([1, 1, 8]), nan)
    with pytest.raises(ValueError, match="box too small"):
        net(torch.tensor([1, 1, 8]), pos, 6.0 * torch.eye(3, dtype=torch.float64))


def test_parameter_count_matches_pyg():
    """PyG's config A has 234,022 parameters; 65 of them provably never act and are not kept: the last
    head block's vector projection [1, 32] and its gate row of ``update_net.2`` (32 weights + 1 bias)."""
    assert sum(p.numel() for p in model("A").parameters()) == 234_022 - 65


def test_config_mismatch_raises():
    config = json.load(open(os.path.join(DATA, "config_A.json")))
    config["hidden_channels"] = 128
    state_dict = torch.load(os.path.join(DATA, "weights_A.pt"), weights_only=True)
    with pytest.raises(ValueError, match="shape"):
        ViSNet.from_pyg_state_dict(state_dict, **config)
    config = json.load(open(os.path.join(DATA, "config_A.json")))
    config["num_layers"] = 2
    with pytest.raises(ValueError, match="vis_mp_layers.2"):
        ViSNet.from_pyg_state_dict(state_dict, **config)


@pytest.mark.parametrize("config", CONFIGS)
def test_vector_cutoff_makes_energy_continuous(config):
    """Alanine dipeptide atoms 2 and 10 are 5.0056 Å apart (the pair closest to the cutoff; the next is
    0.022 Å from it). Atom 10 is put at rc ∓ δ along the same line: PyG's ViS-MP (default) jumps, the
    ``vector_cutoff`` variant changes only by ~|F|·2δ."""
    ref = reference(config, "ala2")
    z, pos, _ = inputs(ref)
    i, j, delta = 2, 10, 1e-6
    direction = (pos[j] - pos[i]) / torch.linalg.norm(pos[j] - pos[i])

    def placed(distance):
        moved = pos.clone()
        moved[j] = pos[i] + direction * distance
        return moved

    inside, outside = placed(5.0 - delta), placed(5.0 + delta)
    pyg = model(config)
    smooth = _model(config, vector_cutoff=True)
    e_in, _ = energy_forces(pyg, z, inside)
    e_out, _ = energy_forces(pyg, z, outside)
    assert abs((e_out - e_in).item()) > 1e-2
    e_in, f_in = energy_forces(smooth, z, inside)
    e_out, f_out = energy_forces(smooth, z, outside)
    assert abs((e_out - e_in).item()) <= 2 * delta * 10 * f_in.abs().max().item()
    assert (f_out - f_in).abs().max().item() <= 1e-4 * f_in.abs().max().item()


def test_vector_cutoff_is_off_by_default_and_pyg_defaults():
    net = ViSNet()
    assert (net.hidden_channels, net.num_layers, net.lmax, net.num_heads, net.cutoff, net.max_z) == \
        (128, 6, 1, 8, 5.0, 100)
    assert not net.vector_cutoff
    with pytest.raises(ValueError, match="lmax"):
        ViSNet(lmax=3)
    with pytest.raises(ValueError, match="vertex"):
        ViSNet(vertex=True)
    assert math.isclose(float(net.radial.betas[0]), (2 / 32 * (1 - math.exp(-5.0))) ** -2, rel_tol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_radial_features_have_no_float32_subnormals(backend):
    """The radial features entering the first linear layer (φ·ExpNormal basis) have no subnormal float32 entries
    on either path (they slowed the weight-gradient products of training several-fold); the others equal the
    float64 features of the same float32 distances to float32 rounding."""
    from viskrates.nn.cutoff import cosine_cutoff
    from viskrates.ops import neighbor_list

    net = load_pyg_visnet(os.path.join(DATA, "weights_B.pt"), os.path.join(DATA, "config_B.json"),
                          backend=backend).float()
    captured = []
    handle = net.radial_proj.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    z, pos, _ = inputs(reference("B", "chignolin"), torch.float32)
    try:
        net(z, pos)
    finally:
        handle.remove()
    features = captured[0].double()
    _, _, _, _, edge_vectors = neighbor_list(pos, net.cutoff, None, None, True)
    distances = torch.linalg.vector_norm(edge_vectors, dim=-1).double()  # the float32 distances the model sees
    expected = net.radial.double()(distances) * cosine_cutoff(distances, net.cutoff).unsqueeze(-1)
    smallest_normal = float(torch.finfo(torch.float32).tiny)
    assert int(((expected > 0) & (expected < smallest_normal)).sum()) > 100  # the basis has a subnormal tail
    assert not bool(((features > 0) & (features < smallest_normal)).any())
    # away from the cutoff, where φ = (cos + 1)/2 cancels in float32
    normal = (expected > 2.0 * smallest_normal) & (distances < 4.5).unsqueeze(-1)
    torch.testing.assert_close(features[normal], expected[normal], rtol=1e-4, atol=0.0)
    assert bool((features[expected < 0.5 * smallest_normal] == 0).all())
