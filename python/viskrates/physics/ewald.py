"""Exact periodic sum of SO3LR's erf-damped Coulomb kernel (plain Ewald reciprocal sum, differentiable).

The reference against which the PME hand-off (:mod:`viskrates.openmm.pme`) is measured.
"""
import math

import torch
from torch import Tensor

from .zbl import COULOMB_CONSTANT


def ewald_erf_energy(charges: Tensor, positions: Tensor, box: Tensor, sigma: float = 4.0,
                     tolerance: float = 1e-16) -> Tensor:
    """Periodic Coulomb energy of Gaussian-smeared charges, ``½ ke Σ_n Σ'_{i,j} q_i q_j erf(|r_ij+n|/σ)/|r_ij+n|``.

    The sum runs over all lattice vectors n and all pairs (i, j), including an atom with its own images
    (n ≠ 0) but not with itself (the prime). ``erf(r/σ)/r`` is the long-range part of the Ewald split with
    α = 1/σ, so the lattice sum is exactly the reciprocal-space sum minus the self term (Ewald 1921;
    e.g. Frenkel & Smit, *Understanding Molecular Simulation*, 2nd ed., eqs. 12.1.25 and 12.1.28):

    ``E = ke [ (2π/V) Σ_{k≠0} exp(−k²σ²/4)/k² |Σ_j q_j exp(i k·r_j)|² − Σ_i q_i²/(σ√π) − π σ² Q²/(2V) ]``

    with V the cell volume and Q = Σ q_i. The last term is the neutralising background of a charged cell
    (the same convention as OpenMM's Ewald/PME); it vanishes for neutral cells. Summing k out to
    ``exp(−k²σ²/4) < tolerance`` makes the result exact to rounding, which is what a reference needs; the
    cost is O(N·K) with K ~ (L/σ)³ reciprocal vectors, fine for boxes of a few nm. Differentiable with
    respect to charges, positions and box (forces including the chain rule through position-dependent
    charges come from autograd on the total energy).

    Args:
        charges: [N] partial charges (e).
        positions: [N, 3] Å (need not be wrapped into the cell).
        box: [3, 3] Å, rows are the box vectors (any triclinic cell).
        sigma: Gaussian width σ in Å (SO3LR: 4.0).
        tolerance: the smallest Gaussian factor exp(−k²σ²/4) kept.

    Returns:
        0-dim tensor, eV (ke = 14.399645351950548 eV·Å/e²), dtype of ``positions``.

    Raises:
        ValueError: shapes that do not match, a non-positive σ, or a degenerate box.
    """
    if charges.dim() != 1 or positions.dim() != 2 or positions.shape != (charges.shape[0], 3) \
            or box.shape != (3, 3):
        raise ValueError(f"expected charges [N], positions [N, 3] and box [3, 3], got {list(charges.shape)}, "
                         f"{list(positions.shape)} and {list(box.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    dtype = positions.dtype
    volume = torch.linalg.det(box)
    if not float(volume) > 0:
        raise ValueError("the box vectors are degenerate or left-handed (non-positive volume)")
    reciprocal = 2.0 * math.pi * torch.linalg.inv(box).transpose(0, 1)  # rows b_i with a_i·b_j = 2π δ_ij
    k_max = 2.0 / sigma * math.sqrt(math.log(1.0 / tolerance))
    # k·a_i = 2π n_i, so |n_i| ≤ k_max |a_i| / 2π for every k inside the sphere
    n_max = [int(math.ceil(k_max * float(torch.linalg.vector_norm(box[i].detach())) / (2.0 * math.pi)))
             for i in range(3)]
    ranges = [torch.arange(-n, n + 1, dtype=dtype, device=positions.device) for n in n_max]
    n = torch.cartesian_prod(*ranges)
    n = n[(n != 0).any(dim=1)]
    k = n @ reciprocal
    k2 = (k * k).sum(dim=1)
    keep = k2 * sigma * sigma / 4.0 < math.log(1.0 / tolerance)
    k = k[keep]
    k2 = k2[keep]
    phase = positions @ k.transpose(0, 1)                                  # [N, K]
    structure_cos = (charges.unsqueeze(1) * torch.cos(phase)).sum(dim=0)
    structure_sin = (charges.unsqueeze(1) * torch.sin(phase)).sum(dim=0)
    reciprocal_sum = (torch.exp(-k2 * sigma * sigma / 4.0) / k2
                      * (structure_cos * structure_cos + structure_sin * structure_sin)).sum()
    total = charges.sum()
    energy = (2.0 * math.pi / volume * reciprocal_sum
              - (charges * charges).sum() / (sigma * math.sqrt(math.pi))
              - math.pi * sigma * sigma * total * total / (2.0 * volume))
    return COULOMB_CONSTANT * energy


class SwitchedErfCoulomb(torch.nn.Module):
    """In-cutoff part of the PME hand-off: ``Σ_{i<j, r<rc} ke·q_i q_j·erf(r/σ)/r·S(r)``.

    S is OpenMM's switching function ``S = 1 − 10x³ + 15x⁴ − 6x⁵``, ``x = (r − r_s)/(rc − r_s)`` (1 below
    r_s, 0 from rc on; continuous value, first and second derivative), the one a ``CustomNonbondedForce``
    applies with ``setUseSwitchingFunction``, so that this term and the fixed-charge counter-term computed
    by OpenMM cancel exactly when the charges equal the hand-off charges (:mod:`viskrates.openmm.pme`).

    It has the call signature of :class:`~viskrates.physics.Electrostatics`, so it can replace an SO3LR
    model's ``electrostatics`` module.

    Args:
        cutoff: rc in Å (the model's long-range cutoff; the pairs it is given lie within it).
        switch_distance: r_s in Å, 0 ≤ r_s < rc.
        sigma: Gaussian width σ in Å (SO3LR: 4.0).

    Raises:
        ValueError: ``switch_distance`` outside [0, cutoff).
    """

    def __init__(self, cutoff: float, switch_distance: float, sigma: float = 4.0):
        super().__init__()
        if not 0.0 <= switch_distance < cutoff:
            raise ValueError(f"switch_distance must lie in [0, cutoff = {cutoff} Å), got {switch_distance}")
        self.cutoff = float(cutoff)
        self.switch_on = float(switch_distance)
        self.sigma = float(sigma)
        self.coulomb_constant = COULOMB_CONSTANT
        # the pair kernel's name for viskrates::long_range_energy (the fused SO3LR's long-range op)
        self.long_range_kernel = "switched_erf"

    def forward(self, charges: Tensor, distances: Tensor, first: Tensor, second: Tensor, pair_graph: Tensor,
                num_graphs: int) -> Tensor:
        """Energy per structure: charges [N] e, distances [P] Å (unordered pairs once), first/second/pair_graph
        [P] int64, num_graphs B; returns [B] eV in the dtype of ``distances``."""
        x = ((distances - self.switch_on) / (self.cutoff - self.switch_on)).clamp(0.0, 1.0)
        x3 = x * x * x
        switch = 1.0 - 10.0 * x3 + 15.0 * x3 * x - 6.0 * x3 * x * x
        pair = (self.coulomb_constant * charges.index_select(0, first) * charges.index_select(0, second)
                * torch.erf(distances / self.sigma) / distances * switch)
        return torch.zeros(num_graphs, dtype=distances.dtype, device=distances.device).index_add_(
            0, pair_graph, pair)
