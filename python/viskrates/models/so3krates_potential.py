"""SO3krates as a stand-alone energy model (no long-range physics), for training from scratch."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..elements import ELEMENT_SYMBOLS, describe_element
from ..ops import neighbor_list
from ..physics.zbl import sum_per_structure
from .so3krates import SO3krates


class SO3kratesPotential(nn.Module):
    """SO3krates energy model: ``E_b = Σ_{i∈b} (σ_Z·MLP(x_i) + ε_Z)``.

    Frank et al., "A Euclidean transformer for fast and stable machine learned force fields", Nat. Commun.
    15, 6539 (2024): the feature network :class:`~viskrates.models.so3krates.SO3krates` (Euclidean
    attention, eq. 6-10) and the per-atom energy read-out of the paper (two-layer MLP with SiLU), scaled and
    shifted per element (σ_Z, ε_Z; fixed buffers set from the training data, as SO3LR's ``atomic_scales`` and
    ``energy_offset`` but not trained).

    Args:
        num_features, num_heads, lmax, num_layers, num_basis, cutoff (Å), num_elements: as for
            :class:`~viskrates.models.so3krates.SO3krates` (``num_heads == lmax``).
        energy_scale: initial σ_Z for every element (eV), e.g. the RMS force of the training set.
        normalization: divisor of the attention sums. SO3LR's value (13.17) makes the initial forces of a
            fresh network ~100x smaller than 1.0 does, and training from scratch then barely starts.
        backend: ``'reference'`` (double backward: trainable on forces) or ``'fused'`` (the viskrates kernels,
            same numbers up to rounding, inference only); see :class:`~viskrates.models.so3krates.SO3krates`.

    ``forward(atomic_numbers [N] int64, positions [N, 3] Å, box [3, 3] Å or None, batch [N] int64 sorted or
    None, total_charge [B] e or None) -> {"energy": [B] eV, "atomic_energies": [N] eV}``, in the model's
    dtype. Forces: ``-autograd.grad(energy.sum(), positions)``.

    Raises:
        ValueError: an unknown backend; (forward) atomic numbers outside 1..num_elements−1, inconsistent shapes.
    """
    cutoff: float
    supported_elements: List[int]

    def __init__(self, num_features: int = 128, num_heads: int = 4, lmax: int = 4, num_layers: int = 3,
                 num_basis: int = 32, cutoff: float = 4.5, num_elements: int = 119, energy_scale: float = 1.0,
                 normalization: float = 1.0, backend: str = "reference"):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_elements = num_elements
        self.supported_elements = list(range(1, num_elements))
        self._symbols = list(ELEMENT_SYMBOLS)
        self.network = SO3krates(num_features, num_heads, lmax, num_layers, num_basis, cutoff=cutoff,
                                 normalization=normalization, num_elements=num_elements, backend=backend)
        # The random normal embeddings of SO3krates' constructor (official parameters are loaded over them
        # in SO3LR) are too large for training from scratch; scale them like a unit-variance sum of three.
        with torch.no_grad():
            self.network.element_embedding.mul_(0.5)
        self.energy_hidden = nn.Linear(num_features, num_features)
        self.energy_out = nn.Linear(num_features, 1)
        self.register_buffer("atomic_scales", torch.full((num_elements,), float(energy_scale)))
        self.register_buffer("atomic_offsets", torch.zeros(num_elements))

    def forward(self, atomic_numbers: Tensor, positions: Tensor, box: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, total_charge: Optional[Tensor] = None) -> Dict[str, Tensor]:
        if atomic_numbers.dim() != 1 or positions.dim() != 2 or positions.shape[0] != atomic_numbers.shape[0]:
            raise ValueError("atomic_numbers must be [N] and positions [N, 3] with the same N, got "
                             + str(list(atomic_numbers.shape)) + " and " + str(list(positions.shape)))
        bad = (atomic_numbers < 1) | (atomic_numbers >= self.num_elements)
        if bool(bad.any()):
            unknown: List[int] = torch.unique(atomic_numbers[bad]).tolist()
            raise ValueError("SO3kratesPotential cannot evaluate element(s) "
                             + ", ".join([describe_element(z, self._symbols) for z in unknown]))
        dtype = self.atomic_scales.dtype
        positions = positions.to(dtype)
        if box is not None:
            box = box.to(dtype)
        if batch is None:
            graph = torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)
            num_graphs = 1
        else:
            if batch.shape != atomic_numbers.shape:
                raise ValueError("batch must be [N] like atomic_numbers, got " + str(list(batch.shape)))
            graph = batch
            num_graphs = int(batch[-1]) + 1
        if total_charge is None:
            charge = torch.zeros(num_graphs, dtype=dtype, device=positions.device)
        else:
            charge = total_charge.to(dtype).reshape(-1)
        _, receivers, senders, _, edge_vectors = neighbor_list(positions, self.cutoff, box, batch)
        x = self.network(atomic_numbers, edge_vectors, receivers, senders, charge, graph, num_graphs)
        atomic_energies = (self.energy_out(F.silu(self.energy_hidden(x))).squeeze(-1)
                           * self.atomic_scales.index_select(0, atomic_numbers)
                           + self.atomic_offsets.index_select(0, atomic_numbers))
        return {"energy": sum_per_structure(atomic_energies, graph, num_graphs), "atomic_energies": atomic_energies}
