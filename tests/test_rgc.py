"""viskrates.ops.rgc_geometry (ViSNet's runtime geometry calculation) and the ``viskrates bench`` command.

The op is checked against its pure-PyTorch reference (forward and all gradients, float64, random edges with
self-loops, a single-neighbour atom, an isolated atom, two periodic images of one pair and edges beyond the
cutoff), with gradcheck, against finite differences of the model-level geometry, for determinism across
thread counts; ViSNet(backend='fused'), which uses it, against the reference backend on the
tests/data/visnet packs (float64: relative 1e-10 in energy, 1e-8 eV/Å in forces), including the gradient
of a trainable RBF. The benchmark command is smoke-tested on a tiny box (its table's rows and columns; no
timing is asserted).
"""
import io
import os
import shutil
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from viskrates import bench, cli, ops
from viskrates.models.visnet import ViSNet, load_pyg_visnet
from viskrates.nn.radial import ExpNormalSmearing

DATA = os.path.join(os.path.dirname(__file__), "data", "visnet")
F64 = torch.float64
CUTOFF = 5.0


def random_edges(seed: int, num_atoms: int = 7):
    """Receiver-sorted edges over ``num_atoms`` atoms: atom 0 isolated (no edge), atom 1 with one neighbour,
    a self-loop (zero vector) on the others, the pair (2, 3) twice with different vectors (periodic images),
    random other pairs at 0.4..6.5 Å (some beyond the cutoff)."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [(1, 4)] + [(i, i) for i in range(2, num_atoms)] + [(2, 3), (2, 3)]
    for i in range(2, num_atoms):
        for j in range(2, num_atoms):
            if i != j and bool(torch.rand(1, generator=gen) < 0.5):
                pairs.append((i, j))
    pairs.sort(key=lambda p: p[0])
    receivers = torch.tensor([p[0] for p in pairs])
    senders = torch.tensor([p[1] for p in pairs])
    directions = torch.nn.functional.normalize(torch.randn(len(pairs), 3, generator=gen, dtype=F64), dim=1)
    lengths = 0.4 + 6.1 * torch.rand(len(pairs), 1, generator=gen, dtype=F64)
    vectors = directions * lengths
    vectors[receivers == senders] = 0.0
    return vectors, receivers, senders


def basis(num_basis: int = 6):
    radial = ExpNormalSmearing(CUTOFF, num_basis).to(F64)
    gen = torch.Generator().manual_seed(3)
    # perturbed, so that every basis function has its own centre and width
    means = (radial.means + 0.05 * torch.rand(num_basis, generator=gen, dtype=F64)).requires_grad_(True)
    betas = (radial.betas * (1 + 0.2 * torch.rand(num_basis, generator=gen, dtype=F64))).requires_grad_(True)
    return means, betas, radial.alpha


@pytest.mark.parametrize("lmax", [1, 2])
def test_rgc_matches_reference(lmax):
    vectors, receivers, senders = random_edges(seed=lmax)
    vectors.requires_grad_(True)
    means, betas, alpha = basis()
    args = (vectors, receivers, senders, CUTOFF, lmax, means, betas, alpha)
    fused, reference = ops.rgc_geometry(*args), ops.rgc_geometry_reference(*args)
    assert fused[0].shape == (len(receivers), 3 if lmax == 1 else 8)
    for f, r in zip(fused, reference):
        torch.testing.assert_close(f, r, rtol=1e-13, atol=1e-14)
    is_self = receivers == senders
    assert bool((fused[0][is_self] == 0).all()) and bool((fused[1][is_self] == 1).all())
    beyond = vectors.detach().norm(dim=1) >= CUTOFF
    assert bool(beyond.any()) and bool((fused[1][beyond] == 0).all()) and bool((fused[2][beyond] == 0).all())
    gen = torch.Generator().manual_seed(11)
    upstream = [torch.randn(r.shape, generator=gen, dtype=F64) for r in reference]
    grads_f = torch.autograd.grad(fused, (vectors, means, betas), upstream)
    grads_r = torch.autograd.grad(reference, (vectors, means, betas), upstream)
    for gf, gr in zip(grads_f, grads_r):
        torch.testing.assert_close(gf, gr, rtol=1e-12, atol=1e-13)
    assert bool((grads_f[0][is_self] == 0).all())


@pytest.mark.parametrize("used", [0, 1, 2])
def test_rgc_backward_with_one_output_used(used):
    """Unused outputs reach the C++ backward as undefined gradients."""
    vectors, receivers, senders = random_edges(seed=5)
    vectors.requires_grad_(True)
    means, betas, alpha = basis()
    args = (vectors, receivers, senders, CUTOFF, 2, means, betas, alpha)
    out_f = ops.rgc_geometry(*args)[used]
    out_r = ops.rgc_geometry_reference(*args)[used]
    (grad_f,) = torch.autograd.grad((out_f * out_f).sum(), vectors)
    (grad_r,) = torch.autograd.grad((out_r * out_r).sum(), vectors)
    torch.testing.assert_close(grad_f, grad_r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("lmax", [1, 2])
def test_rgc_gradcheck(lmax):
    vectors, receivers, senders = random_edges(seed=7, num_atoms=5)
    # keep finite differences away from the cutoff, where φ is only once differentiable
    keep = (vectors.norm(dim=1) - CUTOFF).abs() > 0.05
    vectors, receivers, senders = vectors[keep], receivers[keep], senders[keep]
    means, betas, alpha = basis(num_basis=4)
    assert torch.autograd.gradcheck(
        lambda v, m, b: ops.rgc_geometry(v, receivers, senders, CUTOFF, lmax, m, b, alpha),
        (vectors.requires_grad_(True), means, betas))


def test_rgc_harmonics_are_equivariant_and_normalised():
    """Y(Ru) = D(R)·Y(u): each degree block has unit norm and its Gram matrix over edges is rotation invariant."""
    vectors, receivers, senders = random_edges(seed=9)
    means, betas, alpha = basis()
    y = ops.rgc_geometry(vectors, receivers, senders, CUTOFF, 2, means, betas, alpha)[0]
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=F64))[0]
    y_rot = ops.rgc_geometry(vectors @ rotation.T, receivers, senders, CUTOFF, 2, means, betas, alpha)[0]
    real = receivers != senders
    for block in (slice(0, 3), slice(3, 8)):
        torch.testing.assert_close(y[real, block].norm(dim=1), torch.ones(int(real.sum()), dtype=F64))
        torch.testing.assert_close(y_rot[:, block] @ y_rot[:, block].T, y[:, block] @ y[:, block].T)


def test_rgc_is_deterministic():
    vectors, receivers, senders = random_edges(seed=4, num_atoms=40)
    means, betas, alpha = basis()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            v = vectors.clone().requires_grad_(True)
            out = ops.rgc_geometry(v, receivers, senders, CUTOFF, 2, means, betas, alpha)
            grads = torch.autograd.grad([o.sum() for o in out], (v, means, betas))
            results.append([o.detach() for o in out] + list(grads))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_rgc_bad_inputs_raise_value_error():
    vectors, receivers, senders = random_edges(seed=2)
    means, betas, alpha = basis()
    with pytest.raises(ValueError, match="lmax"):
        ops.rgc_geometry(vectors, receivers, senders, CUTOFF, 3, means, betas, alpha)
    with pytest.raises(ValueError, match="cutoff"):
        ops.rgc_geometry(vectors, receivers, senders, 0.0, 1, means, betas, alpha)
    with pytest.raises(ValueError, match="edge_vectors"):
        ops.rgc_geometry(vectors[:, :2], receivers, senders, CUTOFF, 1, means, betas, alpha)
    with pytest.raises(ValueError, match="senders"):
        ops.rgc_geometry(vectors, receivers, senders[1:], CUTOFF, 1, means, betas, alpha)
    with pytest.raises(ValueError, match="betas"):
        ops.rgc_geometry(vectors, receivers, senders, CUTOFF, 1, means, betas.float(), alpha)


def test_rgc_double_backward_raises():
    vectors, receivers, senders = random_edges(seed=2)
    vectors.requires_grad_(True)
    means, betas, alpha = basis()
    out = ops.rgc_geometry(vectors, receivers, senders, CUTOFF, 1, means, betas, alpha)[2].sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out, vectors, create_graph=True)


def load(config: str, backend: str) -> ViSNet:
    return load_pyg_visnet(os.path.join(DATA, f"weights_{config}.pt"), os.path.join(DATA, f"config_{config}.json"),
                           backend=backend).to(F64)


@pytest.mark.parametrize("config, system", [("A", "batch_ala2_water3"), ("B3", "ala2")])  # lmax 1 and 2
def test_fused_visnet_matches_reference(config, system):
    reference, fused = load(config, "reference"), load(config, "fused")
    ref = np.load(os.path.join(DATA, f"ref_{config}_{system}.npz"))
    z, pos, batch = torch.from_numpy(ref["z"]), torch.from_numpy(ref["pos"]).to(F64), torch.from_numpy(ref["batch"])
    batch = batch if int(batch.max()) > 0 else None
    results = []
    for model in (reference, fused):
        p = pos.clone().requires_grad_(True)
        energy = model(z, p, None, batch)["energy"]
        results.append((energy.detach(), -torch.autograd.grad(energy.sum(), p)[0]))
    (e_ref, f_ref), (e_fused, f_fused) = results
    assert float(((e_fused - e_ref).abs() / e_ref.abs()).max()) <= 1e-10
    assert float((f_fused - f_ref).abs().max()) <= 1e-8
    assert float(f_ref.abs().max()) > 0.1  # forces of a realistic size, so the bound means something


def test_fused_visnet_trainable_rbf_gradients():
    """With trainable_rbf the fused model's gradients of the RBF centres and widths match the reference."""
    torch.manual_seed(0)
    reference = ViSNet(hidden_channels=16, num_layers=2, num_heads=2, trainable_rbf=True).to(F64)
    fused = ViSNet(hidden_channels=16, num_layers=2, num_heads=2, trainable_rbf=True, backend="fused").to(F64)
    fused.load_state_dict(reference.state_dict())
    ref = np.load(os.path.join(DATA, "ref_A_ala2.npz"))
    z, pos = torch.from_numpy(ref["z"]), torch.from_numpy(ref["pos"]).to(F64)
    grads = []
    for model in (reference, fused):
        energy = model(z, pos)["energy"].sum()
        grads.append(torch.autograd.grad(energy, (model.radial.means, model.radial.betas)))
    for gf, gr in zip(grads[1], grads[0]):
        assert float(gr.abs().max()) > 0
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)


def test_bench_ptxas_kernel_names():
    """The ptxas report names kernels without namespaces, template arguments included (a kernel templated on an
    op's parameter type would otherwise show as its last argument)."""
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt (binutils) not found")
    assert (bench._short_kernel_name("_ZN9viskrates4cuda12_GLOBAL__N_123senders_backward_kernelIdNS_5vismp8DihedralIdEEE"
                                     "EvNS3_5GraphIT_EElT0_PKS7_PS7_")
            == "senders_backward_kernel<double, Dihedral<double> >")
    assert (bench._short_kernel_name("_ZN9viskrates4cuda12_GLOBAL__N_116attention_kernelIfEEvNS_5vismp5GraphIT_EEllNS3_"
                                     "9AttentionIS5_EEPS5_S9_") == "attention_kernel<float>")


def test_bench_profile_adds_up_and_names_the_ops():
    """`viskrates bench --profile`: the categories of a fused SO3LR step add up to the step, the viskrates ops have
    their own entries, and the matrix products have a multiply-add rate."""
    result = bench.profile_case("so3lr", "fused", 100, repeats=1)
    categories = result["categories"]
    assert abs(sum(categories.values()) - result["step_ms"]) < 1e-6 * result["step_ms"]
    assert {"matrix products", "SiLU", "neighbour lists", "viskrates::euclidean_attention",
            "viskrates::long_range_energy", "rest"} <= set(categories)
    assert not any(name.endswith("_backward") for name in categories)
    assert all(ms > 0 for ms in categories.values())
    assert result["gmac_per_s"] > 0 and result["silu_ns_per_element"] > 0
    lines = bench.format_profile(result)
    assert lines[0].startswith("so3lr fused, ") and len(lines) == len(categories) + 1


def test_bench_smoke(tmp_path):
    """`viskrates bench` on a tiny box: a header and one row per backend with the expected columns and
    numbers; SO3LR fused is timed or, until SO3LR has that backend, reported as not available."""
    out = io.StringIO()
    with redirect_stdout(out):
        status = cli.main(["bench", "--models", "visnet", "--sizes", "100", "--repeats", "1", "--no-ptxas"])
    assert status == 0
    lines = out.getvalue().splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["model", "backend"])
    assert lines[header].split() == ["model", "backend", "atoms", "cutoff", "ms/step", "median", "ms", "cpu", "ms",
                                     "sys", "ms", "us/atom/step", "peak", "RSS", "MiB", "step", "dMiB", "speed-up"]
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [row[:2] for row in rows] == [["visnet", "reference"], ["visnet", "fused"]]
    for row in rows:
        assert len(row) == 12 and 90 <= int(row[2]) <= 130 and row[3] == "5.00"
        assert float(row[4]) > 0 and float(row[5]) >= float(row[4]) and float(row[6]) > 0 and float(row[8]) > 0
        assert 0 <= float(row[7]) <= float(row[6]) + 10.0  # the kernel part of the CPU time (rusage ticks)
        assert float(row[9]) > 0 and float(row[9]) >= float(row[10])
    assert rows[0][11] == "-" and rows[1][11].endswith("x") and float(rows[1][11][:-1]) > 0
    numbers, positions, box = bench.water_box(100)
    path = str(tmp_path / "water.npz")
    np.savez(path, numbers=numbers, positions=positions, box=box)
    so3lr_fused = bench.run_case("so3lr", "fused", path, threads=1, repeats=1, dtype="float32")
    assert so3lr_fused["available"] is False and "backend" in so3lr_fused["reason"] or so3lr_fused["seconds"] > 0
    table = bench.format_table([so3lr_fused])
    assert table[1].split()[:2] == ["so3lr", "fused"]
