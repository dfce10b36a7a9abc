"""SO3LR against the official JAX implementation (tests/data/so3lr, float64 references; see SOURCES.md).

The float64 model reproduces the official float64 numbers to ~1e-11 eV for neutral structures; for charged
ones the official charge embedding is computed partly in float32 (FORMULAS §12) with a summation order
that cannot be reproduced, which leaves ~1e-7 eV of last-ulp noise.
"""
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import torch

from viskrates.models import SO3LR
from viskrates.nn.cutoff import smooth_switch
from viskrates.physics import Electrostatics

DATA = Path(__file__).parent / "data" / "so3lr"
GAS_PHASE = ["ala2", "ala2_perturbed_0", "ala2_perturbed_1", "ala2_perturbed_2", "chignolin", "chignolin_lr12",
             "lys_capped", "water3"]
PERIODIC = ["waterbox_210_lr9", "waterbox_501"]
TERMS = ["so3krates", "zbl", "elec", "disp"]


@lru_cache(maxsize=None)
def reference(name: str) -> Dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


@lru_cache(maxsize=None)
def model(lr_cutoff: Optional[float], damping: Optional[float] = 2.0, dtype: torch.dtype = torch.float64) -> SO3LR:
    return SO3LR(lr_cutoff=lr_cutoff, dispersion_damping=damping).to(dtype)


def model_for(ref, dtype=torch.float64, nocut=False) -> SO3LR:
    if nocut:
        return model(None, None, dtype)
    return model(float(ref["lr_cutoff"]), float(ref["dispersion_damping"]), dtype)


def inputs(ref, dtype=torch.float64):
    z = torch.from_numpy(ref["Z"])
    r = torch.from_numpy(ref["R"]).to(dtype)
    box = torch.from_numpy(ref["box"]).to(dtype) if "box" in ref else None
    q = torch.tensor([float(ref["total_charge"])], dtype=dtype)
    return z, r, box, q


def evaluate(m, z, r, box=None, batch=None, q=None, per_term=False):
    """Outputs as float64 numpy arrays, plus forces (and per-term forces) by autograd."""
    r = r.clone().requires_grad_(True)
    out = m(z, r, box, batch, q)
    result = {k: v.detach().double().numpy() for k, v in out.items()}
    if per_term:
        for term in TERMS:
            grad, = torch.autograd.grad(out[f"energy_{term}"].sum(), r, retain_graph=True)
            result[f"forces_{term}"] = -grad.double().numpy()
    grad, = torch.autograd.grad(out["energy"].sum(), r)
    result["forces"] = -grad.double().numpy()
    return result


def tolerances(ref) -> Dict[str, float]:
    if float(ref["total_charge"]) == 0.0:
        return {"energy": 1e-9, "forces": 1e-9, "charges": 1e-12, "hirshfeld": 1e-12, "dipole": 1e-10}
    # float32 ulp noise of the official charge embedding (FORMULAS §12.3)
    return {"energy": 1e-6, "forces": 1e-6, "charges": 1e-7, "hirshfeld": 1e-6, "dipole": 1e-6}


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("name", GAS_PHASE + PERIODIC)
def test_reference_float64(name):
    ref = reference(name)
    tol = tolerances(ref)
    z, r, box, q = inputs(ref)
    out = evaluate(model_for(ref), z, r, box, None, q, per_term=name in GAS_PHASE)
    assert abs(out["energy"][0] - ref["energy"]) < tol["energy"]
    for term in TERMS:
        assert abs(out[f"energy_{term}"][0] - ref[f"energy_{term}"]) < tol["energy"], term
    assert max_abs(out["forces"], ref["forces"]) < tol["forces"]
    assert max_abs(out["partial_charges"], ref["partial_charges"]) < tol["charges"]
    assert max_abs(out["hirshfeld_ratios"], ref["hirshfeld_ratios"]) < tol["hirshfeld"]
    assert abs(out["partial_charges"].sum() - float(ref["total_charge"])) < 1e-10
    if name in GAS_PHASE:
        assert max_abs(out["dipole"][0], ref["dipole_vec"]) < tol["dipole"]
        for term in TERMS:
            assert max_abs(out[f"forces_{term}"], ref[f"forces_{term}"]) < tol["forces"], term


@pytest.mark.parametrize("name", [n for n in GAS_PHASE if n != "chignolin_lr12"])
def test_reference_no_cutoff(name):
    """lr_cutoff=None: the training convention (plain erf Coulomb over all pairs, no dispersion switch)."""
    ref = reference(name)
    tol = tolerances(ref)
    z, r, box, q = inputs(ref)
    out = evaluate(model_for(ref, nocut=True), z, r, box, None, q)
    assert abs(out["energy"][0] - ref["nocut_energy"]) < tol["energy"]
    for term in TERMS:
        assert abs(out[f"energy_{term}"][0] - ref[f"nocut_energy_{term}"]) < tol["energy"], term
    assert max_abs(out["forces"], ref["nocut_forces"]) < tol["forces"]
    assert max_abs(out["partial_charges"], ref["nocut_partial_charges"]) < tol["charges"]


@pytest.mark.parametrize("name", ["ala2", "lys_capped", "chignolin", "waterbox_210_lr9"])
def test_reference_float32(name):
    """float32 against the float64 references: the official float32 code deviates by about as much."""
    ref = reference(name)
    z, r, box, q = inputs(ref, torch.float32)
    out = evaluate(model_for(ref, torch.float32), z, r, box, None, q)
    assert abs(out["energy"][0] - ref["energy"]) < 2e-5 + 1e-6 * abs(float(ref["energy"]))
    assert max_abs(out["forces"], ref["forces"]) < 5e-4
    assert max_abs(out["partial_charges"], ref["partial_charges"]) < 1e-5


def test_batch_equals_separate_calls():
    names = ["water3", "lys_capped", "ala2_perturbed_0"]  # charges 0, +1, 0
    refs = [reference(n) for n in names]
    z = torch.cat([torch.from_numpy(ref["Z"]) for ref in refs])
    r = torch.cat([torch.from_numpy(ref["R"]) for ref in refs])
    batch = torch.cat([torch.full((len(ref["Z"]),), i, dtype=torch.long) for i, ref in enumerate(refs)])
    q = torch.tensor([float(ref["total_charge"]) for ref in refs], dtype=torch.float64)
    for lr_cutoff, damping in [(1000.0, 2.0), (None, None)]:
        m = model(lr_cutoff, damping)
        together = evaluate(m, z, r, None, batch, q)
        start = 0
        for i, ref in enumerate(refs):
            zi, ri, _, qi = inputs(ref)
            alone = evaluate(m, zi, ri, None, None, qi)
            stop = start + len(zi)
            for key in ["energy"] + [f"energy_{t}" for t in TERMS]:
                assert abs(together[key][i] - alone[key][0]) < 1e-10, key
            assert max_abs(together["dipole"][i], alone["dipole"][0]) < 1e-10
            for key in ["forces", "partial_charges", "hirshfeld_ratios"]:
                assert max_abs(together[key][start:stop], alone[key]) < 1e-10, key
            start = stop


def test_torchscript_round_trip(tmp_path):
    m = model(9.0)
    scripted = torch.jit.script(m)
    path = tmp_path / "so3lr.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    assert loaded.cutoff == 9.0
    assert loaded.supported_elements == m.supported_elements
    for name in ["lys_capped", "waterbox_210_lr9"]:
        ref = reference(name)
        z, r, box, q = inputs(ref)
        eager = evaluate(m, z, r, box, None, q)
        script = evaluate(loaded, z, r, box, None, q)
        for key in ["energy", "energy_elec", "forces", "partial_charges", "hirshfeld_ratios"]:
            assert max_abs(script[key], eager[key]) < 1e-12, key


def _energy(m, z, r, box, q) -> float:
    with torch.no_grad():
        return float(m(z, r, box, None, q)["energy"][0])


@pytest.mark.parametrize("name,atoms", [("chignolin_lr12", [0, 57, 140]), ("waterbox_210_lr9", [5])])
def test_forces_are_energy_gradient(name, atoms):
    """Central finite differences of the float64 energy (switch regions, ZBL, charges and h(R) included)."""
    ref = reference(name)
    m = model_for(ref)
    z, r, box, q = inputs(ref)
    forces = evaluate(m, z, r, box, None, q)["forces"]
    h = 1e-4
    for atom in atoms:
        for k in range(3):
            plus = r.clone()
            plus[atom, k] += h
            minus = r.clone()
            minus[atom, k] -= h
            numeric = -(_energy(m, z, plus, box, q) - _energy(m, z, minus, box, q)) / (2 * h)
            assert abs(numeric - forces[atom, k]) < 2e-6, (atom, k, numeric, forces[atom, k])


def test_rotation_translation_invariance():
    ref = reference("ala2_perturbed_2")
    m = model(12.0)
    z, r, _, q = inputs(ref)
    base = evaluate(m, z, r, None, None, q)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3),
                                           dtype=torch.float64))[0]
    if torch.linalg.det(rotation) < 0:
        rotation = -rotation
    moved = evaluate(m, z, r @ rotation.T + torch.tensor([3.0, -7.5, 11.0], dtype=torch.float64), None, None, q)
    assert abs(moved["energy"][0] - base["energy"][0]) < 1e-10
    assert max_abs(moved["forces"], base["forces"] @ rotation.numpy().T) < 1e-10
    assert max_abs(moved["partial_charges"], base["partial_charges"]) < 1e-12
    assert max_abs(moved["hirshfeld_ratios"], base["hirshfeld_ratios"]) < 1e-12


def test_permutation_invariance():
    ref = reference("lys_capped")
    m = model(1000.0)
    z, r, _, q = inputs(ref)
    base = evaluate(m, z, r, None, None, q)
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(7))
    permuted = evaluate(m, z[perm], r[perm], None, None, q)
    assert abs(permuted["energy"][0] - base["energy"][0]) < 1e-10
    for key in ["forces", "partial_charges", "hirshfeld_ratios"]:
        assert max_abs(permuted[key], base[key][perm.numpy()]) < 1e-10, key


def test_attributes():
    assert model(12.0).cutoff == 12.0
    assert model(None, None).cutoff == 4.5
    assert model(1000.0).supported_elements == [1, 6, 7, 8, 9, 15, 16, 17]


def test_dtype_round_trip_is_exact():
    """float64 constants are not buffers, so float64 -> float32 -> float64 loses nothing; outputs follow the dtype."""
    ref = reference("water3")
    z, r, _, q = inputs(ref)
    m = SO3LR(lr_cutoff=1000.0)
    assert {p.dtype for p in m.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in m.parameters())
    out32 = m(z, r.float())
    assert all(v.dtype == torch.float32 for v in out32.values())
    m = m.double().float().double()
    out = m(z, r, None, None, q)
    assert all(v.dtype == torch.float64 for v in out.values())
    assert abs(float(out["energy"][0]) - float(ref["energy"])) < 1e-9


def test_input_errors():
    m = model(12.0)
    ref = reference("water3")
    z, r, _, q = inputs(ref)
    bad = z.clone()
    bad[0] = 11
    with pytest.raises(ValueError, match=r"element Na \(Z=11\); supported: H, C, N, O, F, P, S, Cl"):
        m(bad, r)
    bad[1] = 200
    with pytest.raises(ValueError, match=r"elements Na \(Z=11\), Z=200"):
        m(bad, r)
    with pytest.raises(ValueError, match="box"):
        m(z, r, 20.0 * torch.eye(3, dtype=torch.float64))  # thinner than 2 x 12 A
    with pytest.raises(ValueError, match="lr_cutoff=None"):
        model(None, None)(z, r, 30.0 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="total_charge"):
        m(z, r, None, None, torch.zeros(2, dtype=torch.float64))
    nan = r.clone()
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError):
        m(z, nan)


def test_zbl_constants_are_the_official_float32_values():
    """FORMULAS §7: softplus, normalisation and Z^p are float32 in the official float64 run."""
    zbl = model(12.0).zbl
    assert zbl.exponents.tolist() == [1.0868245363235474, 0.9528452157974243, 0.4557921290397644,
                                      0.23729689419269562]
    assert zbl.amplitudes.tolist() == [0.19126667082309723, 0.5420864224433899, 0.24340954422950745,
                                       0.023237330839037895]
    assert zbl.length_scale == 2.2456753253936768
    assert zbl.z_power[[1, 6, 8, 16, 17]].tolist() == [1.0, 1.5810177326202393, 1.7016792297363281,
                                                       2.0315940380096436, 2.063326835632324]


def test_shifted_force_coulomb_vanishes_smoothly_at_cutoff():
    rc = 12.0
    elec = Electrostatics(rc).double()
    r = torch.tensor([rc * (1 - 1e-10), 0.45 * rc, 3.0], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(3, dtype=torch.long)
    energy = elec(torch.ones(2, dtype=torch.float64), r, zeros, zeros + 1, torch.arange(3), 3)  # one pair each
    grad, = torch.autograd.grad(energy.sum(), r)
    energy = energy.detach()
    # 1.2e-9 Å below rc: energy ~ V''·δ²/2 and force ~ V''·δ (V'' ≈ 1e-3 Å⁻³) vanish
    assert abs(float(energy[0])) < 1e-14 and abs(float(grad[0])) < 1e-10
    # below the switch onset: plain shifted potential, ke·[erf(r/σ)/r − V(rc)]
    v = lambda x: math.erf(x / 4.0) / x  # noqa: E731
    assert abs(float(energy[2]) - 14.399645351950548 * (v(3.0) - v(rc))) < 1e-12
    s = smooth_switch(torch.tensor([0.0, 5.4, 12.0, 13.0], dtype=torch.float64), 5.4, 12.0)
    assert s.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_bernstein_basis_matches_binomial_formula_without_subnormals():
    """b_k(d) = C(31, k) x^k (1 − x)^(31−k), x = exp(−γd), from math.comb in float64 (FORMULAS §2); in float32
    the values below the smallest normal number are 0 (they slow x86 arithmetic several-fold) and the
    rest agree to float32 rounding."""
    from viskrates.nn import BernsteinBasis

    gamma = 0.94486308097839355
    basis = BernsteinBasis(32, gamma)
    distances = np.linspace(0.3, 4.5, 400)
    x = np.exp(-gamma * distances)[:, None]
    k = np.arange(32)
    expected = np.array([math.comb(31, int(j)) for j in k]) * x ** k * (1.0 - x) ** (31 - k)
    np.testing.assert_allclose(basis(torch.from_numpy(distances)).numpy(), expected, rtol=1e-12, atol=0.0)
    single = basis(torch.from_numpy(distances).float()).double().numpy()
    smallest_normal = float(torch.finfo(torch.float32).tiny)
    assert np.count_nonzero(expected < smallest_normal) > 100  # the range covers the subnormal tail
    assert not np.any((single > 0) & (single < smallest_normal))
    normal = expected > 2.0 * smallest_normal
    np.testing.assert_allclose(single[normal], expected[normal], rtol=2e-5)
    assert np.all(single[expected < 0.5 * smallest_normal] == 0.0)
