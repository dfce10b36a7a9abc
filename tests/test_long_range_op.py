"""Fused SO3LR long-range energies (viskrates::long_range_energy) and the benchmark's memory guard.

The op is checked against the physics modules it replaces in SO3LR(backend='fused')
(viskrates.physics.Electrostatics and QDODispersion, fed the pair list the reference model builds), in
float64, on random periodic and open structures whose neighbour list also holds pairs beyond the cutoff;
by gradcheck (positions, box, charges, polarisabilities, C6); and for determinism. The full model with the
op is compared with the reference backend and the official numbers in tests/test_so3lr_fused.py.
"""
import io

import pytest
import torch

import viskrates
from viskrates import bench
from viskrates.ops import long_range_energy, long_range_energy_reference, neighbor_list
from viskrates.physics import COULOMB_CONSTANT, Electrostatics, QDODispersion
from viskrates.physics.ewald import SwitchedErfCoulomb

SUPPORTED = torch.tensor([1, 6, 7, 8, 9, 15, 16, 17])


def random_structure(num_atoms, edge, periodic, seed, dtype=torch.float64):
    """Atoms in a (triclinic when periodic) cell of width ``edge`` Å; random elements, charges, Hirshfeld ratios."""
    g = torch.Generator().manual_seed(seed)
    positions = torch.rand(num_atoms, 3, generator=g, dtype=dtype) * edge
    box = None
    if periodic:
        box = torch.eye(3, dtype=dtype) * edge
        box[1, 0] = 0.1 * edge
        box[2, 0], box[2, 1] = -0.07 * edge, 0.05 * edge
    atomic_numbers = SUPPORTED[torch.randint(0, len(SUPPORTED), (num_atoms,), generator=g)]
    charges = 0.4 * torch.randn(num_atoms, generator=g, dtype=dtype)
    hirshfeld = 0.6 + 0.5 * torch.rand(num_atoms, generator=g, dtype=dtype)
    return atomic_numbers, positions, box, charges, hirshfeld


def module_energies(electrostatics, dispersion, atomic_numbers, positions, box, charges, hirshfeld, cutoff):
    """Energies of the physics modules on the pairs (i < j, d < cutoff) as SO3LR's reference backend forms them."""
    _, receivers, senders, shifts, _ = neighbor_list(positions.detach(), cutoff, box)
    once = receivers < senders
    first, second = receivers[once], senders[once]
    vectors = positions.index_select(0, second) - positions.index_select(0, first)
    if box is not None:
        vectors = vectors + shifts[once] @ box
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    graph = torch.zeros_like(first)
    return (electrostatics(charges, distances, first, second, graph, 1),
            dispersion(atomic_numbers, hirshfeld, distances, first, second, graph, 1))


@pytest.mark.parametrize("kernel", ["shifted_force", "switched_erf"])
@pytest.mark.parametrize("periodic", [True, False])
def test_op_matches_physics_modules_float64(periodic, kernel):
    """Energies and gradients (positions, box, charges, Hirshfeld ratios through α and C6) of the op against
    QDODispersion and Electrostatics (shifted force) or SwitchedErfCoulomb (the PME hand-off's kernel). The
    op gets a list built with a 1.5 Å longer cutoff, so it must drop pairs beyond the cutoff itself; the
    random positions fill the switching regions (Coulomb from 4.05 or 3 Å, dispersion from 7 Å, to 9 Å), and
    atoms have more edges than the CPU launcher's blocks of 64 (cpp/long_range.cpp)."""
    cutoff, damping = 9.0, 2.0
    if kernel == "shifted_force":
        electrostatics = Electrostatics(cutoff)
    else:
        electrostatics = SwitchedErfCoulomb(cutoff, 3.0)
    dispersion = QDODispersion(cutoff, damping)
    z, positions, box, charges, hirshfeld = random_structure(300, 22.0, periodic, seed=1)
    if not periodic:
        # an isolated atom: no pair, zero energy and gradients
        z = torch.cat([z, torch.tensor([8])])
        positions = torch.cat([positions, torch.tensor([[60.0, 60.0, 60.0]], dtype=positions.dtype)])
        charges = torch.cat([charges, torch.tensor([0.3], dtype=charges.dtype)])
        hirshfeld = torch.cat([hirshfeld, torch.tensor([0.8], dtype=hirshfeld.dtype)])
    leaves = [positions.requires_grad_(True), charges.requires_grad_(True), hirshfeld.requires_grad_(True)]
    if periodic:
        leaves.append(box.requires_grad_(True))

    ref_elec, ref_disp = module_energies(electrostatics, dispersion, z, positions, box, charges, hirshfeld, cutoff)
    row_ptr, receivers, senders, shifts, vectors = neighbor_list(positions.detach(), cutoff + 1.5,
                                                                 None if box is None else box.detach())
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    assert bool((distances >= cutoff).any()) and bool(((distances > 4.05) & (distances < 7.0)).any())
    assert int((row_ptr[1:] - row_ptr[:-1]).max()) > 2 * 64
    alpha, c6 = dispersion.atomic_parameters(z, hirshfeld)
    elec, disp = long_range_energy(positions, box, row_ptr, senders, shifts, charges, alpha, c6, cutoff,
                                   COULOMB_CONSTANT, electrostatics.sigma, electrostatics.switch_on,
                                   dispersion.switch_on, dispersion.scale, kernel)
    torch.testing.assert_close(elec.sum(), ref_elec[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(disp.sum(), ref_disp[0], rtol=1e-13, atol=1e-15)

    # a loss weighting the two terms differently checks each gradient separately
    weights = (1.3, -0.7)
    grads = torch.autograd.grad(weights[0] * elec.sum() + weights[1] * disp.sum(), leaves)
    ref_grads = torch.autograd.grad(weights[0] * ref_elec.sum() + weights[1] * ref_disp.sum(), leaves)
    for name, got, want in zip(["positions", "charges", "hirshfeld", "box"], grads, ref_grads):
        assert float(want.abs().max()) > 0, name
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-13, msg=name)
    if not periodic:
        assert float(elec[-1]) == 0.0 and float(disp[-1]) == 0.0
        assert float(grads[0][-1].abs().max()) == 0.0 and float(grads[1][-1]) == 0.0


@pytest.mark.parametrize("kernel", ["shifted_force", "switched_erf"])
def test_op_per_atom_energies_match_its_reference(kernel):
    """Per-atom split (pair energy on its first atom, FORMULAS §10) against long_range_energy_reference."""
    z, positions, box, charges, hirshfeld = random_structure(80, 19.0, True, seed=2)
    alpha, c6 = QDODispersion().atomic_parameters(z, hirshfeld)
    row_ptr, _, senders, shifts, _ = neighbor_list(positions, 9.0, box)
    args = (positions, box, row_ptr, senders, shifts, charges, alpha, c6, 8.5, COULOMB_CONSTANT, 4.0, 0.45 * 8.5,
            6.5, 1.2, kernel)
    for got, want in zip(long_range_energy(*args), long_range_energy_reference(*args)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_op_float32_matches_float64():
    """float32 (the CPU launcher's vector math: libmvec's erf, exp and pow, within 4 ulp) against float64: total
    energies and forces to float32 rounding."""
    z, positions, box, charges, hirshfeld = random_structure(300, 22.0, True, seed=4)
    results = {}
    for dtype in (torch.float64, torch.float32):
        alpha, c6 = QDODispersion().atomic_parameters(z, hirshfeld.to(dtype))
        r = positions.to(dtype).requires_grad_(True)
        b = box.to(dtype)
        row_ptr, _, senders, shifts, _ = neighbor_list(r.detach(), 9.0, b)
        elec, disp = long_range_energy(r, b, row_ptr, senders, shifts, charges.to(dtype), alpha, c6, 9.0,
                                       COULOMB_CONSTANT, 4.0, 0.45 * 9.0, 7.0, 1.2)
        energy = elec.sum() + disp.sum()
        results[dtype] = (energy.double(), torch.autograd.grad(energy, r)[0].double())
    (e64, f64), (e32, f32) = results[torch.float64], results[torch.float32]
    torch.testing.assert_close(e32, e64, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(f32, f64, rtol=0.0, atol=1e-5 * float(f64.abs().max()))


@pytest.mark.parametrize("kernel", ["shifted_force", "switched_erf"])
def test_op_gradcheck(kernel):
    z, positions, box, charges, hirshfeld = random_structure(14, 10.5, True, seed=3)
    alpha, c6 = QDODispersion().atomic_parameters(z, hirshfeld)
    cutoff = 5.0
    row_ptr, _, senders, shifts, _ = neighbor_list(positions, cutoff + 0.2, box)

    def energies(r, b, q, a, c):
        e, d = long_range_energy(r, b, row_ptr, senders, shifts, q, a, c, cutoff, COULOMB_CONSTANT, 4.0,
                                 0.45 * cutoff, cutoff - 2.0, 1.2, kernel)
        return e, d

    inputs = tuple(t.clone().requires_grad_(True) for t in (positions, box, charges, alpha, c6))
    assert torch.autograd.gradcheck(energies, inputs, eps=1e-6, atol=1e-7)


def test_op_is_deterministic_and_thread_independent():
    """float32 energies and forces are bit-identical across reruns and thread counts (no atomics)."""
    z, positions, box, charges, hirshfeld = random_structure(400, 25.0, True, seed=4, dtype=torch.float32)
    alpha, c6 = QDODispersion().atomic_parameters(z, hirshfeld)
    row_ptr, _, senders, shifts, _ = neighbor_list(positions, 12.0, box)

    def run():
        r = positions.clone().requires_grad_(True)
        q = charges.clone().requires_grad_(True)
        e, d = long_range_energy(r, box, row_ptr, senders, shifts, q, alpha, c6, 12.0, COULOMB_CONSTANT, 4.0, 5.4,
                                 10.0, 1.2)
        return (e, d) + torch.autograd.grad(e.sum() + d.sum(), [r, q])

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = run()
        torch.set_num_threads(2)
        second, third = run(), run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b) and torch.equal(b, c)


def test_op_library_runs_parallel_for_with_torchs_openmp():
    # at::parallel_for is inline and runs its range serially in code compiled without OpenMP: the kernels would
    # ignore torch.set_num_threads, and the determinism checks across thread counts would compare serial runs.
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch does not use the OpenMP backend")
    with open(viskrates.OPS_LIBRARY, "rb") as handle:
        assert b"GOMP_parallel" in handle.read(), f"{viskrates.OPS_LIBRARY} was built without OpenMP"


def test_op_errors():
    z, positions, box, charges, hirshfeld = random_structure(10, 12.0, True, seed=5)
    alpha, c6 = QDODispersion().atomic_parameters(z, hirshfeld)
    row_ptr, _, senders, shifts, _ = neighbor_list(positions, 5.0, box)
    good = dict(positions=positions, box=box, row_ptr=row_ptr, senders=senders, shifts=shifts, charges=charges,
                polarizabilities=alpha, c6=c6, cutoff=5.0, coulomb_constant=COULOMB_CONSTANT, sigma=4.0,
                coulomb_switch_on=2.25, dispersion_switch_on=3.0, dispersion_scale=1.2)
    cases = [
        (dict(charges=charges[:-1]), "charges must be an \\[N\\] tensor"),
        (dict(c6=c6.float()), "c6 must have the dtype"),
        (dict(row_ptr=row_ptr[:-1]), "row_ptr must be an int64 \\[N\\+1\\]"),
        (dict(box=box[:2]), "box must have shape \\[3, 3\\]"),
        (dict(cutoff=float("inf")), "cutoff must be finite"),
        (dict(coulomb_switch_on=5.0), "coulomb_switch_on must lie in"),
        (dict(dispersion_scale=0.0), "dispersion_scale must be finite and > 0"),
        (dict(coulomb_kernel="ewald"), "coulomb_kernel must be 'shifted_force' or 'switched_erf', got 'ewald'"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            long_range_energy(**{**good, **change})
    with pytest.raises(ValueError, match="coulomb_kernel must be"):
        long_range_energy_reference(**{**good, "coulomb_kernel": "ewald"})
    r = positions.clone().requires_grad_(True)
    energy = long_range_energy(**{**good, "positions": r})[0].sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(energy, r, create_graph=True)


def test_bench_skips_cases_above_the_memory_limit():
    """A case whose estimated peak memory exceeds the limit is skipped with the reason, not run."""
    assert bench.estimate_memory_gib("visnet", "reference", 10000) > 40.0
    assert bench.estimate_memory_gib("so3lr", "fused", 1000, "float64") > bench.estimate_memory_gib("so3lr", "fused",
                                                                                                   1000)
    out = io.StringIO()
    results = bench.run_benchmark(["so3lr"], [100], ["reference", "fused"], repeats=1, ptxas=False, out=out,
                                  memory_limit_gib=0.1)
    assert [r["skipped"] for r in results] == [True, True]
    assert all(r["memory_estimate_gib"] > 0.1 for r in results)
    text = out.getvalue()
    assert "so3lr reference" in text and "skipped: estimated peak memory" in text and "exceeds the 0.1 GiB" in text


@pytest.mark.parametrize("kernel", ["shifted_force", "switched_erf"])
def test_so3lr_fused_runs_the_op_with_both_coulomb_kernels(kernel):
    """SO3LR(backend='fused') evaluates its long-range energies with viskrates::long_range_energy, with its own
    shifted-force electrostatics and with the PME hand-off's SwitchedErfCoulomb (viskrates.openmm.pme), and
    gives the reference backend's energies and forces (float64, periodic water box)."""
    from viskrates.models import SO3LR

    z, positions, box = (torch.from_numpy(a) for a in bench.water_box(100))
    lr_cutoff = 0.45 * float(box[0, 0])
    results = {}
    for backend in ("reference", "fused"):
        model = SO3LR(lr_cutoff=lr_cutoff, backend=backend).double()
        if kernel == "switched_erf":
            model.electrostatics = SwitchedErfCoulomb(lr_cutoff, 0.0)
        scripted = torch.jit.script(model)
        # the op's branch is compiled only when the electrostatics module names its kernel
        assert "long_range_energy" in scripted.code
        r = positions.clone().requires_grad_(True)
        out = scripted(z, r, box)
        results[backend] = (out["energy_elec"], out["energy_disp"], out["energy"],
                            torch.autograd.grad(out["energy"].sum(), r)[0])
    for got, want in zip(results["fused"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert float(results["fused"][0].abs()) > 0.1


class _OtherCoulomb(torch.nn.Module):
    """An electrostatics module the op does not implement (no long_range_kernel): a plain erf kernel."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.inner = SwitchedErfCoulomb(cutoff, 0.5 * cutoff)

    def forward(self, charges: torch.Tensor, distances: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                pair_graph: torch.Tensor, num_graphs: int) -> torch.Tensor:
        return self.inner(charges, distances, first, second, pair_graph, num_graphs)


def test_so3lr_fused_takes_the_generic_path_for_other_electrostatics():
    """With an electrostatics module the op does not implement, SO3LR(backend='fused') takes the generic path,
    which still scripts and evaluates the replacement."""
    from viskrates.models import SO3LR

    model = SO3LR(lr_cutoff=6.0, backend="fused").double()
    model.electrostatics = _OtherCoulomb(6.0)
    scripted = torch.jit.script(model)
    assert "long_range_energy" not in scripted.code
    z = torch.tensor([8, 1, 1, 8, 1, 1])
    r = torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [3.0, 0.2, 0.1], [3.9, 0.3, 0], [2.8, 1.1, 0]],
                     dtype=torch.float64)
    graph = torch.zeros(6, dtype=torch.long)
    out = scripted(z, r)
    pairs = torch.triu_indices(6, 6, 1)
    distances = torch.linalg.vector_norm(r[pairs[1]] - r[pairs[0]], dim=-1)
    want = model.electrostatics(out["partial_charges"], distances, pairs[0], pairs[1], graph[pairs[0]], 1)
    torch.testing.assert_close(out["energy_elec"], want, rtol=1e-12, atol=1e-12)
