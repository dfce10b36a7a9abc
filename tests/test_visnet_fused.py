"""Fused ViS-MP kernels (viskrates.ops.vismp_attention, vismp_vector_message, vismp_edge_update) and
ViSNet(backend='fused').

The ops are checked against their pure-PyTorch references (forward and gradients, float64, random graphs
with isolated atoms, self-loops, single-neighbour atoms and repeated pairs as from periodic images) and
with torch.autograd.gradcheck; the fused model against the reference model on every ViSNet reference
pack (tests/data/visnet) and on a periodic water box, plus determinism and TorchScript export.
"""
import io
import os

import numpy as np
import pytest
import torch

from viskrates import ops
from viskrates.models.visnet import ViSNet, load_pyg_visnet

DATA = os.path.join(os.path.dirname(__file__), "data", "visnet")
F64 = torch.float64


def random_graph(num_nodes: int, seed: int):
    """Receiver-sorted random graph: atom 0 isolated (no edges at all), atom 1 with a single neighbour,
    self-loops on the others, and one pair repeated (as two periodic images of the same neighbour)."""
    gen = torch.Generator().manual_seed(seed)
    adjacency = torch.rand(num_nodes, num_nodes, generator=gen) < 0.4
    adjacency[0, :] = False
    adjacency[:, 0] = False
    adjacency[1, :] = False
    adjacency[1, 2] = True
    adjacency |= torch.eye(num_nodes, dtype=torch.bool)
    adjacency[0, 0] = False
    receivers, senders = adjacency.nonzero(as_tuple=True)
    receivers = torch.cat([receivers, torch.tensor([3])])
    senders = torch.cat([senders, torch.tensor([4])])
    order = torch.sort(receivers, stable=True)[1]
    receivers, senders = receivers[order], senders[order]
    row_ptr, col_ptr, col_edges = ops.vismp_graph(receivers, senders, num_nodes)
    return row_ptr, receivers, senders, col_ptr, col_edges


def leaf(*shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).requires_grad_(True)


def compare(fused, reference, inputs):
    """Forward and gradients (for a random upstream gradient) of two functions of the same inputs."""
    out_f, out_r = fused(*inputs), reference(*inputs)
    assert out_f.shape == out_r.shape
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    used = [x for x in inputs if x is not None]
    # an input a function does not depend on (the harmonics of the lmax-2 dihedral term) has gradient 0
    grads_f = torch.autograd.grad(out_f, used, upstream, materialize_grads=True)
    grads_r = torch.autograd.grad(out_r, used, upstream, materialize_grads=True)
    for gf, gr in zip(grads_f, grads_r):
        torch.testing.assert_close(gf, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [5, 37])  # 37: two blocks of 16 channels and a remainder on CPU
@pytest.mark.parametrize("components", [3, 8])
@pytest.mark.parametrize("with_vectors", [True, False])
@pytest.mark.parametrize("with_weights", [True, False])
def test_vector_message_matches_reference(channels, components, with_vectors, with_weights):
    graph = random_graph(9, seed=channels + components)
    n, e = 9, graph[1].shape[0]
    vectors = leaf(n, components, channels, seed=1) if with_vectors else None
    weights = leaf(e, seed=5) if with_weights else None
    width = 2 * channels if with_vectors else channels  # (s1 | s2), or s2 alone when v̂ = 0

    def run(op):
        # the filters are a column block of a wider projection (a row-strided view)
        return lambda v, f, y, w: op(*graph, v, f[:, :width], y, w)

    inputs = (vectors, leaf(e, width + 3, seed=2), leaf(e, components, seed=4), weights)
    compare(run(ops.vismp_vector_message), run(ops.vismp_vector_message_reference), inputs)
    out = run(ops.vismp_vector_message)(*inputs)
    assert bool((out[0] == 0).all())  # the isolated atom receives nothing


@pytest.mark.parametrize("channels", [5, 37])
@pytest.mark.parametrize("components", [3, 8])
def test_edge_update_matches_reference(channels, components):
    graph = random_graph(9, seed=channels * components)
    n, e = 9, graph[1].shape[0]
    inputs = (leaf(e, channels, seed=4), leaf(e, channels, seed=5), leaf(n, components, channels, seed=1),
              leaf(n, components, channels, seed=2), leaf(e, components, seed=3))
    compare(lambda *x: ops.vismp_edge_update(*graph, *x), lambda *x: ops.vismp_edge_update_reference(*graph, *x),
            inputs)


@pytest.mark.parametrize("channels, heads", [(8, 2), (64, 8), (6, 1)])
def test_attention_matches_reference(channels, heads):
    graph = random_graph(9, seed=channels + heads)
    n, e = 9, graph[1].shape[0]
    c = channels

    def run(op):
        # the filters (dk | dv) are a column block of a wider projection (a row-strided view); messages and their
        # per-receiver sums are compared (and differentiated) together
        return lambda q, k, v, f, w: torch.cat([x.flatten() for x in op(*graph, q, k, v, f[:, :2 * c], w, heads)])

    inputs = (leaf(n, c, seed=1), leaf(n, c, seed=2), leaf(n, c, seed=3), leaf(e, 3 * c, seed=4), leaf(e, seed=5))
    compare(run(ops.vismp_attention), run(ops.vismp_attention_reference), inputs)


def test_dihedral_of_unit_harmonics_is_rejection_product():
    """For unit Y (lmax 1) the op's dihedral term (zero residual, unit gate) is the inner product of the true vector
    rejections."""
    graph = random_graph(6, seed=3)
    n, e = 6, graph[1].shape[0]
    t, s = leaf(n, 3, 4, seed=1).detach(), leaf(n, 3, 4, seed=2).detach()
    y = torch.nn.functional.normalize(leaf(e, 3, seed=3).detach(), dim=1)
    ti, sj = t[graph[1]], s[graph[2]]
    w1 = ti - (ti * y.unsqueeze(-1)).sum(1, keepdim=True) * y.unsqueeze(-1)
    w2 = sj - (sj * y.unsqueeze(-1)).sum(1, keepdim=True) * y.unsqueeze(-1)
    zero, one = torch.zeros(e, 4, dtype=F64), torch.ones(e, 4, dtype=F64)
    torch.testing.assert_close(ops.vismp_edge_update(*graph, zero, one, t, s, y), (w1 * w2).sum(1), rtol=1e-12,
                               atol=1e-12)


def test_dihedral_lmax2_equals_full_expansion():
    """For lmax 2 the op evaluates t·s only; with real harmonics (Y·Y = 2, Y = 0 on self-loops) that is the full
    expansion t·s − (t·Y)(s·Y)(2 − Y·Y), forward and gradients."""
    from viskrates.nn.vismp import spherical_harmonics

    graph = random_graph(7, seed=5)
    n, e = 7, graph[1].shape[0]
    units = torch.nn.functional.normalize(leaf(e, 3, seed=3).detach(), dim=1)
    units[graph[1] == graph[2]] = 0.0
    y = spherical_harmonics(units, 2)
    t, s = leaf(n, 8, 4, seed=1), leaf(n, 8, 4, seed=2)

    f, gate = leaf(e, 4, seed=4).detach(), leaf(e, 4, seed=5).detach()

    def full(t, s):
        ti, sj, ye = t[graph[1]], s[graph[2]], y.unsqueeze(-1)
        dihedral = (ti * sj).sum(1) - (ti * ye).sum(1) * (sj * ye).sum(1) * (2.0 - (y * y).sum(1, keepdim=True))
        return f + gate * dihedral

    compare(lambda t, s: ops.vismp_edge_update(*graph, f, gate, t, s, y), full, (t, s))


def test_gradcheck():
    graph = random_graph(5, seed=11)
    n, e = 5, graph[1].shape[0]
    args = (leaf(n, 3, 3, seed=1), leaf(e, 6, seed=2), leaf(e, 3, seed=4), leaf(e, seed=5))
    assert torch.autograd.gradcheck(lambda *x: ops.vismp_vector_message(*graph, *x), args)
    args = (leaf(e, 3, seed=3), leaf(e, 3, seed=4))
    assert torch.autograd.gradcheck(lambda *x: ops.vismp_vector_message(*graph, None, *x, None), args)
    for components in (3, 8):
        args = (leaf(e, 3, seed=15), leaf(e, 3, seed=16), leaf(n, components, 3, seed=6),
                leaf(n, components, 3, seed=7), leaf(e, components, seed=8))
        assert torch.autograd.gradcheck(lambda *x: ops.vismp_edge_update(*graph, *x), args)
    args = (leaf(n, 4, seed=9), leaf(n, 4, seed=10), leaf(n, 4, seed=11), leaf(e, 8, seed=12), leaf(e, seed=14))
    assert torch.autograd.gradcheck(lambda *x: ops.vismp_attention(*graph, *x, 2), args)
    # each output alone: the other's gradient comes back undefined and counts as zero
    for output in range(2):
        assert torch.autograd.gradcheck(lambda *x: ops.vismp_attention(*graph, *x, 2)[output], args)


def test_double_backward_raises():
    graph = random_graph(5, seed=2)
    e = graph[1].shape[0]
    t, s, y = leaf(5, 3, 4, seed=1), leaf(5, 3, 4, seed=2), leaf(e, 3, seed=3)
    out = ops.vismp_edge_update(*graph, leaf(e, 4, seed=4), leaf(e, 4, seed=5), t, s, y).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out, t, create_graph=True)


def test_bad_inputs_raise_value_error():
    graph = random_graph(5, seed=2)
    e = graph[1].shape[0]
    with pytest.raises(ValueError, match=r"filters must be a floating-point \[E, 2C\]"):  # odd width with vectors
        ops.vismp_vector_message(*graph, torch.zeros(5, 3, 4, dtype=F64), torch.zeros(e, 7, dtype=F64),
                                 torch.zeros(e, 3, dtype=F64), None)
    with pytest.raises(ValueError, match="vectors has shape"):  # [E, 8] filters with vectors: C = 4, not 8
        ops.vismp_vector_message(*graph, torch.zeros(5, 3, 8, dtype=F64), torch.zeros(e, 8, dtype=F64),
                                 torch.zeros(e, 3, dtype=F64), None)
    with pytest.raises(ValueError, match="harmonic components"):
        ops.vismp_edge_update(*graph, torch.zeros(e, 2, dtype=F64), torch.zeros(e, 2, dtype=F64),
                              torch.zeros(5, 9, 2, dtype=F64), torch.zeros(5, 9, 2, dtype=F64),
                              torch.zeros(e, 9, dtype=F64))
    with pytest.raises(ValueError, match="gate has shape"):
        ops.vismp_edge_update(*graph, torch.zeros(e, 2, dtype=F64), torch.zeros(e, 3, dtype=F64),
                              torch.zeros(5, 3, 2, dtype=F64), torch.zeros(5, 3, 2, dtype=F64),
                              torch.zeros(e, 3, dtype=F64))
    with pytest.raises(ValueError, match="num_heads"):
        x = torch.zeros(5, 6, dtype=F64)
        ops.vismp_attention(*graph, x, x, x, torch.zeros(e, 12, dtype=F64), torch.zeros(e, dtype=F64), 4)
    with pytest.raises(ValueError, match=r"filters has shape \[\d+, 6\], expected \[\d+, 12\]"):
        ops.vismp_attention(*graph, x, x, x, torch.zeros(e, 6, dtype=F64), torch.zeros(e, dtype=F64), 3)
    with pytest.raises(ValueError, match="backend"):
        ViSNet(backend="cuda")


def load(config: str, backend: str, vector_cutoff: bool = False) -> ViSNet:
    return load_pyg_visnet(os.path.join(DATA, f"weights_{config}.pt"), os.path.join(DATA, f"config_{config}.json"),
                           vector_cutoff=vector_cutoff, backend=backend).to(F64)


def energy_forces(model, z, pos, box=None, batch=None):
    pos = pos.detach().clone().requires_grad_(True)
    energy = model(z, pos, box, batch)["energy"]
    return energy.detach(), -torch.autograd.grad(energy.sum(), pos)[0]


def water_box(n_side: int = 3, spacing: float = 3.4):
    grid = torch.arange(n_side, dtype=F64) * spacing
    oxygens = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(0)
    oxygens = oxygens + 0.2 * torch.randn(oxygens.shape, generator=gen, dtype=F64)
    pos = torch.stack([oxygens, oxygens + torch.tensor([0.9572, 0.0, 0.0], dtype=F64),
                       oxygens + torch.tensor([-0.24, 0.9266, 0.0], dtype=F64)], 1).reshape(-1, 3)
    z = torch.tensor([8, 1, 1] * oxygens.shape[0])
    return z, pos, torch.eye(3, dtype=F64) * (n_side * spacing)


@pytest.mark.parametrize("config", ["A", "B", "B3"])
def test_fused_model_matches_reference_and_pyg(config):
    """Fused vs reference backend on the small packs (the reference itself is checked against PyG in
    tests/test_visnet.py), and fused vs the PyG arrays on every pack (chignolin included)."""
    reference, fused = load(config, "reference"), load(config, "fused")
    for system in ("ala2", "water3", "chignolin", "batch_ala2_water3"):
        ref = np.load(os.path.join(DATA, f"ref_{config}_{system}.npz"))
        z, pos = torch.from_numpy(ref["z"]), torch.from_numpy(ref["pos"]).to(F64)
        batch = torch.from_numpy(ref["batch"])
        batch = batch if int(batch.max()) > 0 else None
        e_fused, f_fused = energy_forces(fused, z, pos, None, batch)
        if system != "chignolin":
            e_ref, f_ref = energy_forces(reference, z, pos, None, batch)
            assert float(((e_fused - e_ref).abs() / e_ref.abs()).max()) <= 1e-10, system
            assert float((f_fused - f_ref).abs().max()) <= 1e-8, system
        # the fused model meets the PyG acceptance criteria of tests/test_visnet.py itself
        e_pyg, f_pyg = torch.from_numpy(ref["energy_f64"]), torch.from_numpy(ref["forces_f64"])
        assert float(((e_fused - e_pyg).abs()).max()) <= 1e-10 * float(e_pyg.abs().max()), system
        assert float((f_fused - f_pyg).abs().max()) <= 1e-9 * float(f_pyg.abs().max()), system


@pytest.mark.parametrize("config", ["A", "B"])
def test_fused_model_float32(config):
    """float32 fused model within the float32 acceptance criteria of tests/test_visnet.py (vs PyG float64)."""
    fused = load(config, "fused").to(torch.float32)
    for system in ("ala2", "batch_ala2_water3"):
        ref = np.load(os.path.join(DATA, f"ref_{config}_{system}.npz"))
        z, pos = torch.from_numpy(ref["z"]), torch.from_numpy(ref["pos"]).to(torch.float32)
        batch = torch.from_numpy(ref["batch"])
        batch = batch if int(batch.max()) > 0 else None
        energy, forces = energy_forces(fused, z, pos, None, batch)
        e_pyg, f_pyg = torch.from_numpy(ref["energy_f64"]), torch.from_numpy(ref["forces_f64"])
        assert float((energy.double() - e_pyg).abs().max()) <= 5e-6 * float(e_pyg.abs().max()), system
        assert float((forces.double() - f_pyg).abs().max()) <= 1e-4 * float(f_pyg.abs().max()), system


@pytest.mark.parametrize("vector_cutoff", [False, True])
def test_fused_model_matches_reference_periodic(vector_cutoff):
    z, pos, box = water_box()
    reference, fused = load("B3", "reference", vector_cutoff), load("B3", "fused", vector_cutoff)
    e_ref, f_ref = energy_forces(reference, z, pos, box)
    e_fused, f_fused = energy_forces(fused, z, pos, box)
    assert float((e_fused - e_ref).abs() / e_ref.abs()) <= 1e-10
    assert float((f_fused - f_ref).abs().max()) <= 1e-8


def test_fused_model_is_deterministic():
    z, pos, box = water_box()
    fused = load("A", "fused")
    threads = torch.get_num_threads()
    try:
        e1, f1 = energy_forces(fused, z, pos, box)
        e2, f2 = energy_forces(fused, z, pos, box)
        torch.set_num_threads(1)
        e3, f3 = energy_forces(fused, z, pos, box)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(e1, e2) and torch.equal(f1, f2)
    assert torch.equal(e1, e3) and torch.equal(f1, f3)


def test_fused_model_torchscript_roundtrip():
    ref = np.load(os.path.join(DATA, "ref_B_ala2.npz"))
    z, pos = torch.from_numpy(ref["z"]), torch.from_numpy(ref["pos"]).to(F64)
    fused = load("B", "fused")
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(fused), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    e_eager, f_eager = energy_forces(fused, z, pos)
    e_script, f_script = energy_forces(scripted, z, pos)
    torch.testing.assert_close(e_script, e_eager, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(f_script, f_eager, rtol=0.0, atol=1e-13)
