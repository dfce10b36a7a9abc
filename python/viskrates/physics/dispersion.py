"""Pairwise vdW-QDO dispersion with Hirshfeld-scaled atomic polarisabilities, as in SO3LR."""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn.cutoff import smooth_switch
from .zbl import sum_per_structure

BOHR = 0.5291772105638411
"""Bohr radius in Å (CODATA 2014, as in ASE 3.29 and SO3LR)."""
HARTREE = 27.211386024367243
"""Hartree in eV (CODATA 2014)."""
FINE_STRUCTURE = 0.007297352566206496
"""Fine-structure constant α_fs (CODATA 2014)."""

FREE_ATOM_REFERENCE: Dict[int, Tuple[float, float]] = {
    1: (4.5, 6.5),
    6: (12.0, 46.6),
    7: (7.4, 24.2),
    8: (5.4, 15.6),
    9: (3.8, 9.52),
    15: (25.0, 185.0),
    16: (19.6, 134.0),
    17: (15.0, 94.6),
}
"""Free-atom static polarisability α⁰ (bohr³) and C6⁰ (hartree·bohr⁶) by atomic number: the reference
values SO3LR uses (Tkatchenko & Scheffler, Phys. Rev. Lett. 102, 073005 (2009), and references therein;
``mlff/nn/observable/dispersion_ref_data.py``). Only these elements are supported."""


class QDODispersion(nn.Module):
    """vdW-QDO pairwise dispersion ``E = −Σ_{i<j} [C6/(ρ⁶+p⁶) + C8/(ρ⁸+p⁸) + C10/(ρ¹⁰+p¹⁰)]`` (Eh).

    The universal pairwise quantum-Drude-oscillator potential of A. Khabibrakhmanov, D. V. Fedorov and
    A. Tkatchenko, J. Chem. Theory Comput. 19, 7895 (2023), with atom-in-molecule parameters from the
    free-atom values scaled by predicted Hirshfeld-volume ratios h_i (Tkatchenko–Scheffler:
    ``α_i = α⁰ h_i``, ``C6_i = C6⁰ h_i²``), as used in SO3LR (Kabylda et al., J. Am. Chem. Soc. 2025;
    models/so3lr/FORMULAS.md §9). Per pair (atomic units, ρ = d/bohr):

    * ``α_ij = (α_i + α_j)/2``, ``C6_ij = 2 C6_i C6_j α_i α_j / (α_i² C6_j + α_j² C6_i)``
    * ``R_vdW = α_fs^(−4/21) α_ij^(1/7)``, ``σ = −0.00078893 R³ + 0.04125273 R² + 0.24428889 R − 0.00433008``
    * ``γ = 1/(2σ²)``, ``C8 = 5 C6_ij/γ``, ``C10 = 245/8 · C6_ij/γ²``
    * damping length ``p = scale · 2 · 2.54 · α_ij^(1/7)``

    With a finite ``cutoff`` the pair energies are multiplied by ``S(d; cutoff − damping, cutoff)``
    (the smooth switch of FORMULAS §6); with ``cutoff=None`` there is no switch (training convention).
    Forces through h(R) come from autograd on the total energy.

    Args:
        cutoff: long-range cutoff in Å, or None.
        damping: width of the switch in Å (SO3LR default 2.0); must be None iff cutoff is None.
        scale: damping-length scale (SO3LR: 1.2, ``dispersion_energy_scale``).
        num_elements: size of the free-atom tables (zeros for elements without reference values).
    """

    cutoff: Optional[float]

    def __init__(self, cutoff: Optional[float] = 12.0, damping: Optional[float] = 2.0, scale: float = 1.2,
                 num_elements: int = 119):
        super().__init__()
        if (cutoff is None) != (damping is None):
            raise ValueError("dispersion damping must be given together with a finite cutoff and be None "
                             f"without one; got cutoff={cutoff}, damping={damping}")
        if cutoff is not None and damping is not None and not 0 < damping <= cutoff:
            raise ValueError(f"dispersion damping must lie in (0, cutoff], got cutoff={cutoff}, damping={damping}")
        self.cutoff = None if cutoff is None else float(cutoff)
        self.switch_on = 0.0 if cutoff is None or damping is None else float(cutoff) - float(damping)
        self.scale = float(scale)
        self.vdw_radius_factor = FINE_STRUCTURE ** (-4.0 / 21.0)
        self.bohr = BOHR
        self.hartree = HARTREE
        # Integer table in units of 0.1 bohr³ and 0.01 Eh·bohr⁶ (every reference value is such a multiple):
        # rebuilt exactly in the model's dtype at each call, whereas a float buffer would be rounded by a
        # float32 round trip of the module and TorchScript builds torch.tensor(List[float]) via float32.
        table = torch.zeros(2, num_elements, dtype=torch.long)
        for z, (alpha0, c60) in FREE_ATOM_REFERENCE.items():
            table[0, z] = round(alpha0 * 10)
            table[1, z] = round(c60 * 100)
        self.register_buffer("free_atom_table", table, persistent=False)

    def atomic_parameters(self, atomic_numbers: Tensor, hirshfeld_ratios: Tensor) -> Tuple[Tensor, Tensor]:
        """Atom-in-molecule polarisabilities ``α_i = α⁰_Z h_i`` (bohr³) and ``C6_i = C6⁰_Z h_i²`` (Eh·bohr⁶).

        Args:
            atomic_numbers: [N] int64 (elements of ``FREE_ATOM_REFERENCE``).
            hirshfeld_ratios: [N] Hirshfeld-volume ratios h_i (dimensionless, > 0).

        Returns:
            ``(alpha [N], c6 [N])`` in the dtype of ``hirshfeld_ratios``.
        """
        free_atom = self.free_atom_table.index_select(1, atomic_numbers).to(hirshfeld_ratios.dtype)
        alpha = free_atom[0] / 10.0 * hirshfeld_ratios
        c6 = free_atom[1] / 100.0 * hirshfeld_ratios * hirshfeld_ratios
        return alpha, c6

    def pair_energies(self, alpha_i: Tensor, alpha_j: Tensor, c6_i: Tensor, c6_j: Tensor, distances: Tensor) -> Tensor:
        """Dispersion energy of each pair (eV), switched off towards a finite cutoff.

        Args:
            alpha_i, alpha_j: [P] polarisabilities of the two atoms (bohr³), from :meth:`atomic_parameters`.
            c6_i, c6_j: [P] their C6 coefficients (Eh·bohr⁶).
            distances: [P] pair distances (Å).

        Returns:
            [P] energies in eV.
        """
        alpha_ij = 0.5 * (alpha_i + alpha_j)
        c6_ij = 2.0 * c6_i * c6_j * alpha_i * alpha_j / (alpha_i * alpha_i * c6_j + alpha_j * alpha_j * c6_i)
        alpha_root = torch.pow(alpha_ij, 1.0 / 7.0)
        r_vdw = self.vdw_radius_factor * alpha_root
        sigma = ((-0.00078893 * r_vdw + 0.04125273) * r_vdw + 0.24428889) * r_vdw - 0.00433008
        gamma = 0.5 / (sigma * sigma)
        c8 = 5.0 * c6_ij / gamma
        c10 = (245.0 / 8.0) * c6_ij / (gamma * gamma)
        p2 = (self.scale * 2.0 * 2.54 * alpha_root) ** 2
        p6 = p2 * p2 * p2
        rho2 = (distances / self.bohr) ** 2
        rho6 = rho2 * rho2 * rho2
        pair = -self.hartree * (c6_ij / (rho6 + p6) + c8 / (rho6 * rho2 + p6 * p2)
                           + c10 / (rho6 * rho2 * rho2 + p6 * p2 * p2))
        rc = self.cutoff
        if rc is not None:
            pair = pair * smooth_switch(distances, self.switch_on, rc)
        return pair

    def forward(self, atomic_numbers: Tensor, hirshfeld_ratios: Tensor, distances: Tensor, first: Tensor,
                second: Tensor, pair_graph: Tensor, num_graphs: int) -> Tensor:
        """Energy per structure.

        Args:
            atomic_numbers: [N] int64 (elements of ``FREE_ATOM_REFERENCE``).
            hirshfeld_ratios: [N] Hirshfeld-volume ratios h_i (dimensionless, > 0).
            distances: [P] pair distances (Å), each unordered pair once, below a finite cutoff.
            first, second: [P] int64 atom indices of the pairs.
            pair_graph: [P] int64 structure index of every pair.
            num_graphs: B.

        Returns:
            [B] energies in eV, dtype of ``distances``.
        """
        alpha, c6 = self.atomic_parameters(atomic_numbers, hirshfeld_ratios)
        pair = self.pair_energies(alpha.index_select(0, first), alpha.index_select(0, second),
                                  c6.index_select(0, first), c6.index_select(0, second), distances)
        return sum_per_structure(pair, pair_graph, num_graphs)
