"""Ziegler–Biersack–Littmark (ZBL) nuclear repulsion with learned screening constants, as in SO3LR."""
from typing import List

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.cutoff import polynomial_cutoff, smooth_switch

COULOMB_CONSTANT = 14.399645351950548
"""ke = e²/(4πε₀) in eV·Å (the value used by SO3LR)."""


def sum_per_structure(values: Tensor, index: Tensor, num_structures: int) -> Tensor:
    """Sum ``values`` [M] into [num_structures] by ``index`` [M] (int64), accumulating in float64.

    Energies are sums of up to ~10⁶ pair terms; a sequential float32 accumulation loses ~1e-6 relative,
    which is more than the float32 model error itself. The result has the dtype of ``values`` and is
    differentiable.
    """
    total = torch.zeros(num_structures, dtype=torch.float64, device=values.device)
    return total.index_add_(0, index, values.to(torch.float64)).to(values.dtype)


def _softplus_float32(x: float) -> np.float32:
    return np.logaddexp(np.float32(0.0), np.float32(x))


class ZBLRepulsion(nn.Module):
    """Screened nuclear repulsion of SO3LR on the short-range graph.

    ``E = ½ Σ_(i,j) S(d; 0, d_off) · ke · φ(d) · Z_i Z_j / d · Σ_k c_k exp(−a_k · d · (Z_i^p + Z_j^p) · s)``

    The universal ZBL screening function (J. F. Ziegler, J. P. Biersack, U. Littmark, *The Stopping and
    Range of Ions in Solids*, Pergamon 1985) with the four amplitudes c_k, exponents a_k, the power p
    and the length scale s re-fitted within SO3LR (Kabylda et al., J. Am. Chem. Soc. 2025;
    models/so3lr/FORMULAS.md §7). The sum runs over directed short-range pairs (hence ½). φ is the
    PhysNet polynomial cutoff of the short-range graph and S the smooth switch that turns the repulsion
    off between 0 and ``switch_off`` Å.

    Float32 emulation (FORMULAS §7, §12): the official code forms softplus(raw), the c normalisation,
    Z^p and the pair sum Z_i^p + Z_j^p in float32 even in float64 runs. These are reproduced here (the
    constants are computed once in IEEE float32 with NumPy, the pair sum is done in float32), so float64
    results match the official float64 ones to ~1e-11 eV instead of ~1e-4 eV for 1500 atoms.

    Args:
        a_raw: the 4 raw exponents (before softplus), parameters ``zbl_repulsion/a1..a4``.
        c_raw: the 4 raw amplitudes (before softplus and normalisation), ``c1..c4``.
        p_raw: raw power (``p``); d_raw: raw length scale (``d``), in Å⁻¹ after softplus.
        cutoff: the short-range cutoff of φ (Å, SO3LR: 4.5).
        switch_off: distance where the switch reaches 0 (Å, SO3LR: 1.5).
        num_elements: size of the Z^p table (atomic numbers 0..num_elements−1).
    """

    def __init__(self, a_raw: List[float], c_raw: List[float], p_raw: float, d_raw: float,
                 cutoff: float = 4.5, switch_off: float = 1.5, num_elements: int = 119):
        super().__init__()
        if len(a_raw) != len(c_raw):
            raise ValueError(f"ZBL needs as many exponents as amplitudes, got {len(a_raw)} and {len(c_raw)}")
        a = np.array([_softplus_float32(v) for v in a_raw], dtype=np.float32)
        c = np.array([_softplus_float32(v) for v in c_raw], dtype=np.float32)
        c = c / c.sum(dtype=np.float32)
        p = _softplus_float32(p_raw)
        # Z^p rounded once from float64: NumPy's float32 power is not correctly rounded and differs between
        # CPUs (its AVX-512 loop gives 8^p one float32 step away from the official value).
        z_power = (np.arange(num_elements, dtype=np.float64) ** np.float64(p)).astype(np.float32)
        # Buffers in the default dtype holding float32 values: any float dtype conversion keeps them exact.
        dtype = torch.get_default_dtype()
        self.register_buffer("exponents", torch.from_numpy(a).to(dtype))
        self.register_buffer("amplitudes", torch.from_numpy(c).to(dtype))
        self.register_buffer("z_power", torch.from_numpy(z_power).to(dtype))
        self.length_scale = float(_softplus_float32(d_raw))
        self.coulomb_constant = COULOMB_CONSTANT
        self.cutoff = float(cutoff)
        self.switch_off = float(switch_off)

    def forward(self, atomic_numbers: Tensor, distances: Tensor, receivers: Tensor, senders: Tensor,
                edge_graph: Tensor, num_graphs: int) -> Tensor:
        """Repulsion energy per structure.

        Args:
            atomic_numbers: [N] int64.
            distances: [E] lengths of the directed short-range edges (Å), each pair listed in both
                directions; edges at or beyond ``cutoff`` contribute 0.
            receivers, senders: [E] int64 atom indices of the edges.
            edge_graph: [E] int64 structure index of every edge.
            num_graphs: B.

        Returns:
            [B] energies in eV, dtype of ``distances``.
        """
        z_i = atomic_numbers.index_select(0, receivers)
        z_j = atomic_numbers.index_select(0, senders)
        power_sum = (self.z_power.index_select(0, z_i).float() + self.z_power.index_select(0, z_j).float())
        scaled = distances * power_sum.to(distances.dtype) * self.length_scale
        screening = torch.exp(-scaled.unsqueeze(-1) * self.exponents) @ self.amplitudes
        charge_product = (z_i * z_j).to(distances.dtype)
        pair = (smooth_switch(distances, 0.0, self.switch_off) * polynomial_cutoff(distances, self.cutoff)
                * (self.coulomb_constant * charge_product / distances) * screening)
        return 0.5 * sum_per_structure(pair, edge_graph, num_graphs)
