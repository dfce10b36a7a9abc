"""Fused Euclidean attention (viskrates::euclidean_attention) and SO3LR(backend='fused').

The op is checked against its pure-PyTorch reference (viskrates.ops.euclidean_attention_reference) and by
gradcheck; the fused model against the reference model (float64: same numbers up to rounding) and against
the official JAX numbers in tests/data/so3lr (SOURCES.md).
"""
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import viskrates  # noqa: F401  (loads the op library)
from viskrates.models import SO3LR
from viskrates.ops import (edge_filter_graph, euclidean_attention, euclidean_attention_reference, neighbor_list,
                           pair_filter_graph, vismp_graph)

DATA = Path(__file__).parent / "data" / "so3lr"


def random_graph(edges, num_nodes):
    """Receiver-sorted graph tensors (row_ptr, receivers, senders, col_ptr, col_edges) from (receiver, sender)."""
    edges = sorted(edges)
    receivers = torch.tensor([e[0] for e in edges], dtype=torch.long)
    senders = torch.tensor([e[1] for e in edges], dtype=torch.long)
    row_ptr, col_ptr, col_edges = vismp_graph(receivers, senders, num_nodes)
    return row_ptr, receivers, senders, col_ptr, col_edges


def random_features(num_nodes, num_filters, num_edges, heads=4, degrees=4, dim=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    components = (degrees + 1) ** 2 - 1
    return [rnd(num_nodes, heads, dim), rnd(num_nodes, heads, dim), rnd(num_nodes, heads, dim),
            rnd(num_filters, heads, dim), rnd(num_nodes, degrees, dim), rnd(num_nodes, degrees, dim),
            rnd(num_filters, degrees, dim), rnd(num_edges, components),
            torch.rand(num_edges, generator=g, dtype=dtype)]


# atom 0 isolated; atom 1 has one neighbour (2); atom 3 sees two periodic images of atom 4 and one of
# itself; atoms 5, 6 form a symmetric pair
EDGES = [(1, 2), (2, 1), (2, 3), (3, 4), (3, 4), (3, 3), (4, 3), (3, 2), (5, 6), (6, 5), (6, 2)]
NUM_NODES = 7


def run(fn, graph, filters, features, normalization=3.5):
    return fn(*graph, *filters, *features, normalization)


def test_op_matches_reference_forward_and_backward():
    graph = random_graph(EDGES, NUM_NODES)
    num_edges = graph[1].shape[0]
    filters = edge_filter_graph(num_edges, torch.device("cpu"))
    results = []
    for fn in (euclidean_attention, euclidean_attention_reference):
        features = [t.requires_grad_(True) for t in random_features(NUM_NODES, num_edges, num_edges)]
        dx, dev = run(fn, graph, filters, features)
        g = torch.Generator().manual_seed(1)
        loss = (dx * torch.randn(dx.shape, generator=g, dtype=dx.dtype)).sum() \
            + (dev * torch.randn(dev.shape, generator=g, dtype=dev.dtype)).sum()
        grads = torch.autograd.grad(loss, features)
        results.append((dx, dev, grads))
    (dx, dev, grads), (dx_ref, dev_ref, grads_ref) = results
    assert dx[0].abs().max() == 0 and dev[0].abs().max() == 0  # the isolated atom gets nothing
    assert dx.abs().max() > 0.1
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dev, dev_ref, rtol=1e-12, atol=1e-12)
    names = ["x_query", "x_key", "x_value", "x_filter", "ev_query", "ev_key", "ev_filter", "harmonics", "cutoff"]
    for name, a, b in zip(names, grads, grads_ref):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_op_with_shared_pair_filters():
    edges = [(i, j) for i in range(5) for j in range(5) if i != j and (i + j) % 3 != 0]
    graph = random_graph(edges, 5)
    pair_edges, *filters = pair_filter_graph(graph[1], graph[2], 5)
    assert pair_edges.shape[0] * 2 == graph[1].shape[0]
    assert torch.equal(filters[0].index_select(0, pair_edges), torch.arange(pair_edges.shape[0]))
    features = [t.requires_grad_(True) for t in random_features(5, pair_edges.shape[0], graph[1].shape[0], 3, 2, 5)]
    out = run(euclidean_attention, graph, filters, features, 2.0)
    ref = run(euclidean_attention_reference, graph, filters, features, 2.0)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    loss = out[0].square().sum() + out[1].sin().sum()
    loss_ref = ref[0].square().sum() + ref[1].sin().sum()
    for a, b in zip(torch.autograd.grad(loss, features), torch.autograd.grad(loss_ref, features)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_op_gradcheck():
    edges = [(0, 1), (1, 0), (1, 2), (2, 2), (2, 1), (2, 1)]
    graph = random_graph(edges, 3)
    filters = edge_filter_graph(len(edges), torch.device("cpu"))
    features = [t.requires_grad_(True) for t in random_features(3, len(edges), len(edges), 2, 2, 3, seed=3)]
    assert torch.autograd.gradcheck(lambda *f: run(euclidean_attention, graph, filters, f, 1.7), features)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_op_cuda_matches_cpu():
    graph = random_graph(EDGES, NUM_NODES)
    num_edges = graph[1].shape[0]
    filters = edge_filter_graph(num_edges, torch.device("cpu"))
    features = random_features(NUM_NODES, num_edges, num_edges)
    results = []
    for device in ("cpu", "cuda"):
        inputs = [t.to(device).requires_grad_(True) for t in features]
        dx, dev = run(euclidean_attention, [t.to(device) for t in graph], [t.to(device) for t in filters], inputs)
        grads = torch.autograd.grad(dx.sin().sum() + dev.square().sum(), inputs)
        results.append([t.cpu() for t in (dx, dev) + grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_op_errors():
    graph = random_graph(EDGES, NUM_NODES)
    num_edges = graph[1].shape[0]
    filters = edge_filter_graph(num_edges, torch.device("cpu"))
    features = random_features(NUM_NODES, num_edges, num_edges)
    bad = list(features)
    bad[7] = features[7][:, :8]
    with pytest.raises(ValueError, match="harmonics"):
        run(euclidean_attention, graph, filters, bad)
    bad = list(features)
    bad[1] = features[1].float()
    with pytest.raises(ValueError, match="x_key"):
        run(euclidean_attention, graph, filters, bad)
    with pytest.raises(ValueError, match="normalization"):
        run(euclidean_attention, graph, filters, features, 0.0)
    with pytest.raises(ValueError, match="reverse edge"):
        pair_filter_graph(torch.tensor([0, 1]), torch.tensor([1, 2]), 3)
    # double backward is not implemented by the fused kernel: a clear error, not a silent wrong gradient
    features = [t.requires_grad_(True) for t in features]
    dx, dev = run(euclidean_attention, graph, filters, features)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(dx.square().sum(), features[0], create_graph=True)


# ---- SO3LR(backend='fused') ------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def reference_data(name):
    with np.load(DATA / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


@lru_cache(maxsize=None)
def so3lr(lr_cutoff, damping, backend, dtype=torch.float64):
    return SO3LR(lr_cutoff=lr_cutoff, dispersion_damping=damping, backend=backend).to(dtype)


def evaluate(name, backend, dtype=torch.float64):
    ref = reference_data(name)
    model = so3lr(float(ref["lr_cutoff"]), float(ref["dispersion_damping"]), backend, dtype)
    z = torch.from_numpy(ref["Z"])
    r = torch.from_numpy(ref["R"]).to(dtype).requires_grad_(True)
    box = torch.from_numpy(ref["box"]).to(dtype) if "box" in ref else None
    out = model(z, r, box, None, torch.tensor([float(ref["total_charge"])], dtype=dtype))
    forces, = torch.autograd.grad(out["energy"].sum(), r)
    return {"energy": out["energy"].detach(), "forces": -forces, "charges": out["partial_charges"].detach()}


# each structure is evaluated once per backend and dtype and shared by the tests below (time budget)
cached_evaluate = lru_cache(maxsize=None)(evaluate)


@pytest.mark.parametrize("name", ["ala2", "lys_capped", "waterbox_210_lr9"])
def test_fused_equals_reference_float64(name):
    fused = cached_evaluate(name, "fused")
    ref = cached_evaluate(name, "reference")
    assert abs(float(fused["energy"] / ref["energy"]) - 1.0) < 1e-10
    assert float((fused["forces"] - ref["forces"]).abs().max()) < 1e-8
    assert float((fused["charges"] - ref["charges"]).abs().max()) < 1e-10


def test_fused_float32():
    """float32 fused vs float64 reference on the periodic water box: float32 rounding (printed with -s)."""
    fused = cached_evaluate("waterbox_210_lr9", "fused", torch.float32)
    exact = cached_evaluate("waterbox_210_lr9", "reference")
    de = float((fused["energy"].double() - exact["energy"]).abs().max())
    df = float((fused["forces"].double() - exact["forces"]).abs().max())
    dq = float((fused["charges"].double() - exact["charges"]).abs().max())
    print(f"waterbox_210_lr9 float32 fused - float64: energy {de:.2e} eV, forces {df:.2e} eV/Å, charges {dq:.2e} e")
    assert de < 2e-3 and df < 2e-3 and dq < 1e-4


@pytest.mark.parametrize("name", ["ala2", "lys_capped", "chignolin", "waterbox_210_lr9"])
def test_fused_matches_official_float64(name):
    ref = reference_data(name)
    out = cached_evaluate(name, "fused")
    # charged structures: ~1e-7 eV of float32 noise in the official charge embedding (see test_so3lr.py)
    tol = 1e-9 if float(ref["total_charge"]) == 0.0 else 1e-6
    assert abs(float(out["energy"]) - float(ref["energy"])) < tol * max(1.0, abs(float(ref["energy"])))
    assert float((out["forces"] - torch.from_numpy(ref["forces"])).abs().max()) < tol
    assert float((out["charges"] - torch.from_numpy(ref["partial_charges"])).abs().max()) < max(tol, 1e-12)


def test_fused_is_deterministic():
    first = evaluate("chignolin", "fused", torch.float32)
    second = evaluate("chignolin", "fused", torch.float32)
    assert torch.equal(first["energy"], second["energy"])
    assert torch.equal(first["forces"], second["forces"])


def test_fused_backend_errors():
    with pytest.raises(ValueError, match="backend"):
        SO3LR(backend="fast")
    model = so3lr(1000.0, 2.0, "fused")
    ref = reference_data("ala2")
    r = torch.from_numpy(ref["R"]).requires_grad_(True)
    energy = model(torch.from_numpy(ref["Z"]), r)["energy"]
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(energy.sum(), r, create_graph=True)


def test_fused_single_atom_and_isolated_molecules():
    """No edges at all (one atom), and a molecule far from another one, against the reference backend."""
    model = so3lr(1000.0, 2.0, "fused")
    reference = so3lr(1000.0, 2.0, "reference")
    for z, r in [(torch.tensor([8]), torch.zeros(1, 3, dtype=torch.float64)),
                 (torch.tensor([8, 1, 1, 8]), torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                                            [30.0, 0, 0]], dtype=torch.float64))]:
        a = model(z, r)
        b = reference(z, r)
        torch.testing.assert_close(a["energy"], b["energy"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a["partial_charges"], b["partial_charges"], rtol=1e-12, atol=1e-12)


def test_fused_torchscript_round_trip(tmp_path):
    """The scripted fused model, saved and run in a fresh process that only imports viskrates."""
    ref = reference_data("ala2")
    model = so3lr(1000.0, 2.0, "fused", torch.float32)
    path = tmp_path / "so3lr_fused.pt"
    torch.jit.script(model).save(str(path))
    z = torch.from_numpy(ref["Z"])
    r = torch.from_numpy(ref["R"]).float()
    torch.save({"z": z, "r": r}, tmp_path / "inputs.pt")
    script = (
        "import sys, torch, viskrates\n"
        "m = torch.jit.load(sys.argv[1]); d = torch.load(sys.argv[2])\n"
        "r = d['r'].requires_grad_(True)\n"
        "e = m(d['z'], r)['energy']\n"
        "f, = torch.autograd.grad(e.sum(), r)\n"
        "torch.save({'energy': e.detach(), 'forces': -f}, sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                   check=True, timeout=120)
    result = torch.load(tmp_path / "out.pt")
    r = r.clone().requires_grad_(True)
    energy = model(z, r)["energy"]
    forces, = torch.autograd.grad(energy.sum(), r)
    torch.testing.assert_close(result["energy"], energy.detach(), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(result["forces"], -forces, rtol=1e-5, atol=1e-4)
    assert float(forces.abs().max()) > 0.1
