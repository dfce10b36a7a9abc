"""Coulomb energy of (predicted) partial charges with the erf-damped kernel of SO3LR."""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..nn.cutoff import smooth_switch
from .zbl import COULOMB_CONSTANT, sum_per_structure


def _kernel(r: float, sigma: float) -> float:
    return math.erf(r / sigma) / r


def _kernel_derivative(r: float, sigma: float) -> float:
    return (2.0 * r * math.exp(-(r / sigma) ** 2) / (math.sqrt(math.pi) * sigma) - math.erf(r / sigma)) / (r * r)


class Electrostatics(nn.Module):
    """Damped Coulomb energy ``Σ_{i<j} ke · q_i q_j · V(d_ij)`` with ``V(r) = erf(r/σ)/r``.

    The long-range electrostatics of SO3LR (Kabylda et al., J. Am. Chem. Soc. 2025;
    models/so3lr/FORMULAS.md §8): point charges smeared with Gaussians, no self-interaction, no
    exclusions (bonded pairs interact), no Ewald sum.

    * ``cutoff=None`` (training convention, open boundaries): the plain kernel over all given pairs.
    * finite ``cutoff = rc`` (official MD/ASE setting): shifted force blended in by a smooth switch,
      ``V(r) → f·[V(r) − V(rc)] + (1 − f)·[V(r) − V(rc) − V'(rc)(r − rc)]`` with
      ``f = S(r; switch_on_fraction·rc, rc)``; energy and force vanish at rc. The constant shift −V(rc)
      applies to every pair, so a large rc is not the same as no cutoff.

    Forces through the charges' dependence on positions come from autograd on the total energy.

    Args:
        cutoff: rc in Å, or None.
        sigma: Gaussian width σ in Å (SO3LR: 4.0, ``electrostatic_energy_scale``).
        switch_on_fraction: the switch starts at this fraction of rc (SO3LR: 0.45).
    """

    cutoff: Optional[float]

    def __init__(self, cutoff: Optional[float] = 12.0, sigma: float = 4.0, switch_on_fraction: float = 0.45):
        super().__init__()
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"electrostatics cutoff must be positive or None, got {cutoff}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self.sigma = float(sigma)
        self.coulomb_constant = COULOMB_CONSTANT
        self.switch_on = 0.0 if cutoff is None else switch_on_fraction * float(cutoff)
        self.shift = 0.0 if cutoff is None else _kernel(float(cutoff), sigma)
        self.shift_slope = 0.0 if cutoff is None else _kernel_derivative(float(cutoff), sigma)
        # the pair kernel's name for viskrates::long_range_energy (the fused SO3LR's long-range op)
        self.long_range_kernel = "shifted_force"

    def forward(self, charges: Tensor, distances: Tensor, first: Tensor, second: Tensor, pair_graph: Tensor,
                num_graphs: int) -> Tensor:
        """Energy per structure.

        Args:
            charges: [N] partial charges (e).
            distances: [P] pair distances (Å), each unordered pair once, all below a finite cutoff
                (the neighbour list guarantees it; the shifted kernel is not zero beyond rc).
            first, second: [P] int64 atom indices of the pairs.
            pair_graph: [P] int64 structure index of every pair.
            num_graphs: B.

        Returns:
            [B] energies in eV, dtype of ``distances``.
        """
        pair = self.coulomb_constant * charges.index_select(0, first) * charges.index_select(0, second) \
            * self.pair_kernel(distances)
        return sum_per_structure(pair, pair_graph, num_graphs)

    def pair_kernel(self, distances: Tensor) -> Tensor:
        """The (shifted and switched, for a finite cutoff) kernel ``V(d)`` of each pair, in 1/Å.

        Args:
            distances: [P] pair distances (Å).

        Returns:
            [P] kernel values; the pair energy is ``ke·q_i·q_j·V(d)``.
        """
        kernel = torch.erf(distances / self.sigma) / distances
        rc = self.cutoff
        if rc is not None:
            f = smooth_switch(distances, self.switch_on, rc)
            shifted = kernel - self.shift
            shifted_force = shifted - self.shift_slope * (distances - rc)
            kernel = f * shifted + (1.0 - f) * shifted_force
        return kernel
