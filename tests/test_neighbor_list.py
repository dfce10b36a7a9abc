"""viskrates::neighbor_list (C++ cell list) against its pure-PyTorch specification and a brute-force
image enumeration in NumPy."""
import itertools
from typing import Optional, Tuple

import numpy as np
import pytest
import torch
from torch import Tensor

import viskrates  # noqa: F401  (loads the op library)
from viskrates.ops import neighbor_list, neighbor_list_reference


def assert_same(result, expected, atol=1e-12):
    names = ("row_ptr", "receivers", "senders", "shifts", "edge_vectors")
    for name, got, want in zip(names, result, expected):
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, (name, got.shape, want.shape)
        if name == "edge_vectors":
            torch.testing.assert_close(got, want, atol=atol, rtol=0)
        else:
            assert torch.equal(got, want), name


def reduced_box(lengths, skew, generator):
    """OpenMM reduced triclinic box (lower triangular, |b_x| <= a_x/2, |c_x| <= a_x/2, |c_y| <= b_y/2)."""
    a, b, c = lengths
    s = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1) * skew
    return torch.tensor([[a, 0, 0], [s[0] * a / 2, b, 0], [s[1] * a / 2, s[2] * b / 2, c]], dtype=torch.float64)


def random_rotation(generator):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def periodic_positions(box, n, generator):
    """Positions spread over three box lengths (not wrapped), so that shifts of several boxes occur."""
    frac = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 3 - 1
    return frac @ box


def brute_force_images(positions, box, cutoff, images):
    """(receivers, senders, shifts) of all pairs i != j and images n ∈ images³ closer than cutoff, in
    canonical order, by explicit enumeration in NumPy (independent of the op and of the reference)."""
    found = []
    n_atoms = positions.shape[0]
    for n in itertools.product(images, repeat=3):
        vec = positions[None, :, :] - positions[:, None, :] + np.array(n, dtype=float) @ box  # [i, j]
        close = (vec ** 2).sum(-1) < cutoff ** 2
        if not any(n):
            close[np.arange(n_atoms), np.arange(n_atoms)] = False
        i, j = np.nonzero(close)
        found.append(np.column_stack([i, j, np.tile(n, (len(i), 1))]))
    edges = np.concatenate(found)
    edges = edges[np.lexsort(edges.T[::-1])]
    return edges[:, 0], edges[:, 1], edges[:, 2:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("self_loops", [False, True])
def test_open_random(dtype, self_loops):
    g = torch.Generator().manual_seed(1)
    for n, cutoff in [(2, 6.0), (17, 2.0), (150, 3.0), (300, 5.5)]:
        side = (n / 0.05) ** (1 / 3)  # 0.05 atoms/Å³, away from the origin
        positions = (torch.rand(n, 3, generator=g, dtype=torch.float64) * side - 30).to(dtype)
        result = neighbor_list(positions, cutoff, self_loops=self_loops)
        assert_same(result, neighbor_list_reference(positions, cutoff, self_loops=self_loops),
                    atol=1e-12 if dtype == torch.float64 else 1e-5)
        assert int(result[0][-1]) > (n if self_loops else 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_orthorhombic_random(dtype):
    g = torch.Generator().manual_seed(2)
    cutoff = 3.0
    # widths from 2·cutoff (one or two cells per axis, wrapped neighbour cells coincide) to many cells
    for lengths, self_loops in [((6.0, 6.0, 6.0), False), ((7.5, 9.0, 6.2), True), ((13.0, 19.0, 10.0), False)]:
        box = torch.diag(torch.tensor(lengths, dtype=torch.float64)).to(dtype)
        positions = periodic_positions(box.double(), 100, g).to(dtype)
        result = neighbor_list(positions, cutoff, box=box, self_loops=self_loops)
        expected = neighbor_list_reference(positions, cutoff, box=box, self_loops=self_loops)
        assert_same(result, expected, atol=1e-11 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triclinic_random(dtype):
    g = torch.Generator().manual_seed(3)
    cutoff = 2.5
    boxes = [
        reduced_box((8.0, 7.0, 9.0), 1.0, g),       # skewed to the limits of the reduced form
        reduced_box((13.0, 11.0, 12.0), 1.0, g),
        reduced_box((7.0, 7.0, 7.0), 0.3, g),
    ]
    # the same lattice in a non-reduced basis (b -> b + a, c -> c - b), and a rotated general triclinic box
    boxes.append(torch.stack([boxes[1][0], boxes[1][1] + boxes[1][0], boxes[1][2] - boxes[1][1]]))
    boxes.append(boxes[0] @ random_rotation(g).T)
    for box in boxes:
        positions = periodic_positions(box, 100, g)
        result = neighbor_list(positions.to(dtype), cutoff, box=box.to(dtype))
        expected = neighbor_list_reference(positions.to(dtype), cutoff, box=box.to(dtype))
        assert_same(result, expected, atol=1e-11 if dtype == torch.float64 else 2e-5)


def test_periodic_brute_force_numpy():
    """Independent of the reference: all images n ∈ {-3..3}³ of a skewed box enumerated explicitly."""
    rng = np.random.default_rng(5)
    box = np.array([[9.0, 0.0, 0.0], [3.1, 8.5, 0.0], [-4.2, 2.9, 8.0]])  # smallest width 7.19
    cutoff = 3.55
    positions = rng.uniform(-0.5, 1.5, size=(60, 3)) @ box
    receivers, senders, shifts = brute_force_images(positions, box, cutoff, range(-3, 4))
    result = neighbor_list(torch.from_numpy(positions), cutoff, box=torch.from_numpy(box))
    assert len(receivers) > 500
    np.testing.assert_array_equal(result[1].numpy(), receivers)
    np.testing.assert_array_equal(result[2].numpy(), senders)
    np.testing.assert_array_equal(result[3].numpy(), shifts)
    np.testing.assert_allclose(result[4].numpy(), positions[senders] - positions[receivers] + shifts @ box,
                               atol=1e-12)
    np.testing.assert_array_equal(result[0].numpy(), np.searchsorted(receivers, np.arange(61)))


def test_dense_periodic_brute_force_numpy():
    """1000 atoms at liquid density in a skewed box (6 cells per axis), atoms inside the box so that
    images {-1, 0, 1}³ contain every pair within the cutoff."""
    rng = np.random.default_rng(4)
    box = np.array([[21.0, 0.0, 0.0], [-8.0, 20.0, 0.0], [7.5, 9.0, 22.0]])
    cutoff = 3.2
    positions = rng.uniform(0.0, 1.0, size=(1000, 3)) @ box
    receivers, senders, shifts = brute_force_images(positions, box, cutoff, (-1, 0, 1))
    result = neighbor_list(torch.from_numpy(positions), cutoff, box=torch.from_numpy(box))
    assert len(receivers) > 10000
    np.testing.assert_array_equal(result[1].numpy(), receivers)
    np.testing.assert_array_equal(result[2].numpy(), senders)
    np.testing.assert_array_equal(result[3].numpy(), shifts)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pairs_at_the_cutoff_across_faces_far_from_the_box(dtype):
    """Pairs from 1e-6 to 1e-14 (relative) inside and outside the cutoff, each straddling a face of a
    6-cells-per-axis box, translated by up to 40 box vectors: the cell-image prefilter must pass every pair the
    minimum-image test keeps, down to the rounding of the separations."""
    g = torch.Generator().manual_seed(9)
    box = torch.tensor([[18.0, 0.0, 0.0], [2.0, 17.0, 0.0], [-3.0, 4.0, 19.0]], dtype=torch.float64)
    cutoff = 3.0
    first, second = [], []
    offsets = [-1e-6, 1e-6, -1e-9, 1e-9, -1e-12, 1e-12, -1e-14, 1e-14]
    count = 32
    for k in range(count):
        direction = torch.randn(3, generator=g, dtype=torch.float64)
        direction /= direction.norm()
        separation = cutoff * (1.0 + offsets[k % len(offsets)])
        frac = torch.rand(3, generator=g, dtype=torch.float64)
        frac[k % 3] = 1e-3  # on a face: the partner is across it
        translation = torch.randint(-40, 41, (2, 3), generator=g).double() @ box
        first.append(frac @ box + translation[0])
        second.append(frac @ box - separation * direction + translation[1])
    # 150 more atoms, so that the grid keeps 6 cells per axis (it has at most 2 cells per atom)
    filler = torch.rand(150, 3, generator=g, dtype=torch.float64) @ box
    positions = torch.cat([torch.stack(first + second), filler])
    result = neighbor_list(positions.to(dtype), cutoff, box=box.to(dtype))
    expected = neighbor_list_reference(positions.to(dtype), cutoff, box=box.to(dtype))
    assert_same(result, expected, atol=1e-11 if dtype == torch.float64 else 1e-3)
    if dtype == torch.float64:
        # the pairs at least 1e-9 inside are edges, those at least 1e-9 outside are not
        edges = set(zip(result[1].tolist(), result[2].tolist()))
        clear = [k for k in range(count) if abs(offsets[k % len(offsets)]) >= 1e-9]
        assert [(k, count + k) in edges for k in clear] == [offsets[k % len(offsets)] < 0 for k in clear]


@pytest.mark.parametrize("self_loops", [False, True])
def test_batch_keeps_molecules_apart(self_loops):
    g = torch.Generator().manual_seed(6)
    sizes = [5, 1, 12, 30, 7]
    # all molecules overlap in space: only the batch index separates them
    positions = torch.rand(sum(sizes), 3, generator=g, dtype=torch.float64) * 6
    batch = torch.repeat_interleave(torch.tensor([0, 2, 3, 7, 8]), torch.tensor(sizes))
    result = neighbor_list(positions, 2.5, batch=batch, self_loops=self_loops)
    assert_same(result, neighbor_list_reference(positions, 2.5, batch=batch, self_loops=self_loops))
    assert torch.equal(batch[result[1]], batch[result[2]])


def test_large_cutoff_gas_phase():
    """A 1000 Å cutoff on a small molecule: one cell, every pair is an edge."""
    g = torch.Generator().manual_seed(7)
    positions = torch.randn(9, 3, generator=g, dtype=torch.float64) * 2
    row_ptr, receivers, senders, _, vectors = neighbor_list(positions, 1000.0)
    assert receivers.shape[0] == 9 * 8
    assert_same((row_ptr, receivers, senders, _, vectors), neighbor_list_reference(positions, 1000.0))


def test_sparse_system_far_apart():
    """Atoms 10⁴ Å apart with a 1 Å cutoff: the number of cells is capped by the number of atoms."""
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1e4, 1e4, -1e4], [1e4, 1e4 + 0.7, -1e4],
                              [-3e4, 2.0, 5e3]], dtype=torch.float64)
    result = neighbor_list(positions, 1.0)
    assert_same(result, neighbor_list_reference(positions, 1.0))
    assert result[1].tolist() == [0, 1, 2, 3]


def test_empty_and_single_atom():
    box = torch.eye(3, dtype=torch.float64) * 10
    for positions in (torch.zeros(0, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)):
        for b in (None, box):
            for self_loops in (False, True):
                result = neighbor_list(positions, 4.0, box=b, self_loops=self_loops)
                assert_same(result, neighbor_list_reference(positions, 4.0, box=b, self_loops=self_loops))
    row_ptr, receivers, senders, shifts, vectors = neighbor_list(torch.ones(1, 3), 4.0, self_loops=True)
    assert row_ptr.tolist() == [0, 1] and receivers.tolist() == [0] and senders.tolist() == [0]
    assert shifts.dtype == torch.float32 and vectors.abs().sum() == 0


def test_errors():
    positions = torch.rand(6, 3, dtype=torch.float64) * 5
    with pytest.raises(ValueError, match=r"smallest perpendicular width is 5\.0000 but must be at least twice the "
                                         r"cutoff \(6\.0000"):
        neighbor_list(positions, 3.0, box=torch.eye(3, dtype=torch.float64) * 5)
    # a skewed box whose box vectors are long enough but whose layers are too thin
    with pytest.raises(ValueError, match="periodic box too small for the cutoff"):
        neighbor_list(positions, 3.0, box=torch.tensor([[10.0, 0, 0], [9.0, 4.0, 0], [0, 0, 10.0]],
                                                       dtype=torch.float64))
    bad = positions.clone()
    bad[2, 1] = float("nan")
    bad[4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"positions contain NaN or infinite values \(atoms \[2, 4\]\)"):
        neighbor_list(bad, 3.0)
    with pytest.raises(ValueError, match=r"positions must have shape \[N, 3\], got \[6, 2\]"):
        neighbor_list(positions[:, :2], 3.0)
    with pytest.raises(ValueError, match=r"box must have shape \[3, 3\]"):
        neighbor_list(positions, 1.0, box=torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="degenerate"):
        neighbor_list(positions, 1.0, box=torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 5.0, 0]],
                                                       dtype=torch.float64))
    with pytest.raises(ValueError, match="open boundaries only"):
        neighbor_list(positions, 1.0, box=torch.eye(3, dtype=torch.float64) * 10, batch=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="batch must be sorted"):
        neighbor_list(positions, 1.0, batch=torch.tensor([0, 0, 1, 0, 1, 1]))
    with pytest.raises(ValueError, match="batch must have shape"):
        neighbor_list(positions, 1.0, batch=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="cutoff must be a finite non-negative number"):
        neighbor_list(positions, float("nan"))


def test_gradients_positions_and_box():
    g = torch.Generator().manual_seed(8)
    box = torch.tensor([[7.0, 0, 0], [3.4, 7.0, 0], [-3.3, 3.4, 7.5]], dtype=torch.float64, requires_grad=True)
    positions = periodic_positions(box.detach(), 7, g).requires_grad_()

    def vectors(r: Tensor, b: Tensor) -> Tensor:
        return neighbor_list(r, 2.7, box=b)[4]

    assert vectors(positions, box).shape[0] >= 8
    torch.autograd.gradcheck(vectors, (positions, box))
    # the backward is built from differentiable ops, so double backward (force training) is exact
    torch.autograd.gradgradcheck(vectors, (positions, box), fast_mode=True)
    # open boundaries, batch, self loops (zero vectors carry zero gradient)
    r = torch.rand(8, 3, generator=g, dtype=torch.float64, requires_grad=True) * 3
    batch = torch.tensor([0] * 3 + [1] * 5)
    torch.autograd.gradcheck(lambda x: neighbor_list(x, 2.0, batch=batch, self_loops=True)[4], (r,))
    # forces of a pair energy agree with the reference path
    energy = (neighbor_list(positions, 2.7, box=box)[4].norm(dim=1) - 1.0).pow(2).sum()
    energy_ref = (neighbor_list_reference(positions, 2.7, box=box)[4].norm(dim=1) - 1.0).pow(2).sum()
    grads = torch.autograd.grad(energy, (positions, box))
    grads_ref = torch.autograd.grad(energy_ref, (positions, box))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # integer outputs and shifts do not require grad
    out = neighbor_list(positions, 2.7, box=box)
    assert [t.requires_grad for t in out] == [False, False, False, False, True]


def test_torchscript():
    @torch.jit.script
    def pair_energy(positions: Tensor, box: Optional[Tensor], cutoff: float) -> Tuple[Tensor, Tensor]:
        _, receivers, _, _, vectors = neighbor_list(positions, cutoff, box=box)
        energy = vectors.pow(2).sum()
        forces = torch.autograd.grad([energy], [positions])[0]
        assert forces is not None
        return energy, -forces

    g = torch.Generator().manual_seed(9)
    box = torch.eye(3, dtype=torch.float64) * 8
    positions = periodic_positions(box, 40, g).requires_grad_()
    energy, forces = pair_energy(positions, box, 3.0)
    vectors = neighbor_list_reference(positions, 3.0, box=box)[4]
    energy_ref = vectors.pow(2).sum()
    forces_ref = -torch.autograd.grad(energy_ref, positions)[0]
    torch.testing.assert_close(energy, energy_ref.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(forces, forces_ref, atol=1e-10, rtol=0)
    assert int(neighbor_list(positions, 3.0, box=box)[0][-1]) > 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(10)
    box = reduced_box((20.0, 19.0, 21.0), 1.0, g)
    positions = periodic_positions(box, 2000, g).to(dtype)
    cases = [dict(box=box.to(dtype)), dict(), dict(batch=torch.repeat_interleave(torch.arange(4), 500)),
             dict(self_loops=True)]
    for kwargs in cases:
        cpu = neighbor_list(positions, 3.0, **kwargs)
        cuda_kwargs = {k: v.cuda() if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        gpu = neighbor_list(positions.cuda(), 3.0, **cuda_kwargs)
        assert_same([t.cpu() for t in gpu], cpu, atol=1e-12 if dtype == torch.float64 else 1e-5)
