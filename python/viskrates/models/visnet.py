"""ViSNet: equivariant vector-scalar interactive message passing with runtime geometry calculation.

Wang et al., "Enhancing geometric representations for molecules with equivariant vector-scalar
interactive message passing", Nat. Commun. 15, 313 (2024). This module reproduces PyTorch Geometric
2.8's ``torch_geometric.nn.models.ViSNet`` (``vertex=False``, ``vecnorm_type=None``) given its state dict
(:meth:`ViSNet.from_pyg_state_dict`, :func:`load_pyg_visnet`); the equations are those of the
reference README (``reference/visnet/README.md``, "Equations").

Differences from PyG, by design:

* No neighbour cap. PyG's ``radius_graph`` keeps at most ``max_num_neighbors`` (default 32) neighbours
  per atom and silently drops the rest, which truncates condensed-phase environments; viskrates'
  neighbour list keeps every pair within the cutoff. ``max_num_neighbors`` is accepted and ignored.
  Where PyG's cap was not hit the two agree.
* ``vector_cutoff=True`` (off by default, for equivalence) multiplies the vector message by the cosine
  cutoff φ(r). Without it the vector message tends to ``v̂_j ⊙ SiLU(b_s1) + SiLU(b_s2) ⊗ Y_ij`` at the
  cutoff instead of 0, so the energy jumps when a pair crosses the cutoff (README "Cutoff
  discontinuity"); with it the energy and forces are continuous.
* Forces come from autograd outside the model (``derivative`` is accepted and ignored).

Execution paths (DESIGN.md §3): ``backend='reference'`` (default) runs plain PyTorch ops;
``backend='fused'`` computes the per-edge geometry (harmonics, cosine cutoff, radial features) in one pass
with ``viskrates.ops.rgc_geometry`` and the attention messages, the vector messages and the edge update
of every ViS-MP layer with the fused kernels ``viskrates.ops.vismp_attention``, ``vismp_vector_message``
and ``vismp_edge_update`` (no gathered per-edge copies of atom features, no [E, L, C] intermediates, C++
backward, CPU and CUDA). Both give the same energies and forces to rounding; the fused
backward is not differentiable again, so training on forces needs the reference backend.
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..elements import ELEMENT_SYMBOLS, describe_element
from ..nn.cutoff import cosine_cutoff
from ..nn.radial import ExpNormalSmearing, zero_subnormals
from ..nn.vismp import ViSMPLayer, edge_directions, segment_sum, spherical_harmonics, xavier_blocks
from ..ops import neighbor_list, rgc_geometry, vismp_graph

# PyG parameters that provably never influence the energy and have no counterpart here: the vector
# output of the last gated block (PyG adds 0·Σv') and the initial copy of the atom reference.
_PYG_UNUSED = ("output_model.output_network.1.vec2_proj.weight", "prior_model.initial_atomref")


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schütt et al., PaiNN, ICML 2021, eq. 12; PyG ViSNet's output head).

    ``n = ‖W₁v‖`` over all L components jointly, ``[s; g] = Lin_b(SiLU(Lin_a([x; n])))``; returns
    ``x' = s`` (SiLU(s) with ``scalar_activation``) and ``v' = g ⊙ W₂v``.

    Parameters: ``vec_proj`` [C (+ O if vector_output), C] no bias (W₁ then W₂), ``update_a`` [C, 2C],
    ``update_b`` [2O or O, C] (scalar rows then gate rows).

    Args:
        hidden_channels: C, width of the inputs and of Lin_a.
        out_channels: O.
        scalar_activation: apply SiLU to x'.
        vector_output: compute v' (False for the last block, whose v' PyG discards).

    Shapes: forward(x [N, C], vectors [N, L, C]) -> (x' [N, O], v' [N, L, O], or an empty [0] tensor
    without ``vector_output``).
    """

    def __init__(self, hidden_channels: int, out_channels: int, scalar_activation: bool, vector_output: bool):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.scalar_activation = scalar_activation
        self.vector_output = vector_output
        self.vec_proj = nn.Linear(hidden_channels, hidden_channels + (out_channels if vector_output else 0),
                                  bias=False)
        self.update_a = nn.Linear(2 * hidden_channels, hidden_channels)
        self.update_b = nn.Linear(hidden_channels, (2 if vector_output else 1) * out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyG's initialisation scheme: xavier-uniform W₁, W₂, Lin_a, Lin_b (each part on its own), zero biases."""
        xavier_blocks(self.vec_proj, [self.hidden_channels] + ([self.out_channels] if self.vector_output else []))
        xavier_blocks(self.update_a, [self.hidden_channels])
        xavier_blocks(self.update_b, [self.update_b.out_features])

    def forward(self, x: Tensor, vectors: Tensor) -> Tuple[Tensor, Tensor]:
        c = self.hidden_channels
        o = self.out_channels
        projected = self.vec_proj(vectors).split(c, dim=-1)  # W₁v (, W₂v)
        norms = torch.linalg.vector_norm(projected[0], dim=1)
        h = self.update_b(F.silu(self.update_a(torch.cat([x, norms], dim=-1)))).split(o, dim=-1)  # s (, g)
        scalars = h[0]
        if self.scalar_activation:
            scalars = F.silu(scalars)
        if self.vector_output:
            return scalars, h[1].unsqueeze(1) * projected[1]
        return scalars, torch.zeros(0, dtype=x.dtype, device=x.device)


class ViSNet(nn.Module):
    """ViSNet energy model (Wang et al., Nat. Commun. 15, 313 (2024)), numerically PyG 2.8's ``ViSNet``.

    Pipeline (README "Equations"): neighbour list with self-loops → distances, direction units,
    spherical harmonics Y, cosine cutoff φ, ExpNormal RBF e = φ·b(r) → neighbour embedding
    ``x_i = Lin_c([Emb₁(z_i); Σ_{j≠i} Emb₂(z_j) ⊙ Lin_d(e_ij)·φ_ij])``, edge features
    ``f_ij = (x_i + x_j) ⊙ Lin_e(e_ij)``, v = 0 → ``num_layers`` ViS-MP layers (:class:`ViSMPLayer`) →
    LayerNorm(x), v ⊙ w → two gated equivariant blocks (C → C/2 with SiLU, C/2 → 1) →
    ``ε_i = std·out_i + atomref[z_i]``, ``E_b = Σ_{i∈b} ε_i + mean``.

    Constructor arguments are PyG's, with PyG's defaults, plus ``vector_cutoff``.

    Args:
        hidden_channels: C.
        num_layers: number of ViS-MP layers.
        num_rbf: number of ExpNormal radial functions.
        lmax: degree of the spherical harmonics, 1 or 2.
        num_heads: attention heads, must divide C.
        cutoff: neighbour cutoff (Å).
        max_z: size of the embedding tables; elements 1..max_z−1 are supported.
        mean: energy offset added per structure (eV).
        std: scale of the per-atom output (eV).
        atomref: optional per-element reference energies, ``max_z`` values (eV), indexed by Z.
        vector_cutoff: multiply the vector messages by φ(r) so the energy is continuous at the cutoff
            (not in PyG; off reproduces PyG).
        vecnorm_type: only None (PyG's default) is implemented.
        trainable_vecnorm: make the per-channel vector scales parameters.
        trainable_rbf: make the RBF centres and widths parameters.
        max_num_neighbors: accepted for PyG compatibility and ignored: there is no neighbour cap.
        vertex: only False (ViS-MP, PyG's default) is implemented.
        reduce_op: only "sum" is implemented.
        derivative: accepted for PyG compatibility and ignored (forces come from autograd).
        backend: ``"reference"`` (PyTorch ops) or ``"fused"`` (viskrates kernels; same numbers, faster,
            no double backward).

    Raises:
        ValueError: unsupported option (lmax ∉ {1, 2}, vecnorm_type, vertex, reduce_op, backend), C not
            divisible by num_heads, wrong atomref length.

    Attributes:
        cutoff (float): Å. supported_elements (List[int]): 1..max_z−1.

    ``forward(atomic_numbers [N] int64, positions [N, 3] Å, box [3, 3] Å or None, batch [N] int64 sorted or
    None, total_charge [B] (ignored)) -> {"energy": [B] eV, "atomic_energies": [N] eV (ε_i, without the
    per-structure ``mean``)}``, in the model's dtype (positions and box are cast to it). Periodic boxes use
    the minimum image through the neighbour list (box rows are the box vectors, each perpendicular width at
    least 2·cutoff). Forces: ``-autograd.grad(energy.sum(), positions)``.

    Raises (forward):
        ValueError: atomic numbers outside 1..max_z−1, shape mismatch, NaN positions, box too small, box
            with batch.
    """

    def __init__(self, hidden_channels: int = 128, num_layers: int = 6, num_rbf: int = 32, lmax: int = 1,
                 num_heads: int = 8, cutoff: float = 5.0, max_z: int = 100, mean: float = 0.0, std: float = 1.0,
                 atomref: Optional[Sequence[float]] = None, vector_cutoff: bool = False,
                 vecnorm_type: Optional[str] = None, trainable_vecnorm: bool = False, trainable_rbf: bool = False,
                 max_num_neighbors: int = 32, vertex: bool = False, reduce_op: str = "sum",
                 derivative: bool = False, backend: str = "reference"):
        super().__init__()
        if backend not in ("reference", "fused"):
            raise ValueError(f"backend must be 'reference' or 'fused', got {backend!r}")
        if lmax not in (1, 2):
            raise ValueError(f"ViSNet supports lmax 1 or 2 (PyG's spherical harmonics), got {lmax}")
        if vecnorm_type is not None and vecnorm_type != "none":
            raise ValueError(f"vecnorm_type={vecnorm_type!r} is not implemented; only None (PyG's default) is")
        if vertex:
            raise ValueError("vertex=True (ViS-MP with vertex edge updates) is not implemented; use vertex=False")
        if reduce_op != "sum":
            raise ValueError(f"reduce_op={reduce_op!r} is not implemented; energies are sums over atoms ('sum')")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if hidden_channels % 2 != 0:
            raise ValueError(f"hidden_channels must be even (the head halves it), got {hidden_channels}")
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.lmax = lmax
        self.num_heads = num_heads
        self.cutoff = float(cutoff)
        self.max_z = max_z
        self.vector_cutoff = vector_cutoff
        self.backend = backend
        self.supported_elements: List[int] = list(range(1, max_z))
        self.element_symbols: List[str] = list(ELEMENT_SYMBOLS)

        c = hidden_channels
        self.embedding = nn.Embedding(max_z, c)
        self.radial = ExpNormalSmearing(cutoff, num_rbf, trainable_rbf)
        self.neighbor_embedding = nn.Embedding(max_z, c)
        # rows: neighbour-embedding distance projection Lin_d, then edge-feature projection Lin_e
        self.radial_proj = nn.Linear(num_rbf, 2 * c)
        self.combine = nn.Linear(2 * c, c)
        self.layers = nn.ModuleList([
            ViSMPLayer(c, num_heads, update_edges=layer < num_layers - 1, trainable_vecnorm=trainable_vecnorm)
            for layer in range(num_layers)])
        self.out_norm = nn.LayerNorm(c)
        if trainable_vecnorm:
            self.vec_out_norm_weight = nn.Parameter(torch.ones(c))
        else:
            self.register_buffer("vec_out_norm_weight", torch.ones(c))
        self.head_1 = GatedEquivariantBlock(c, c // 2, scalar_activation=True, vector_output=True)
        self.head_2 = GatedEquivariantBlock(c // 2, 1, scalar_activation=False, vector_output=False)
        if atomref is None:
            self.register_buffer("atomref", torch.zeros(max_z))
        else:
            if len(atomref) != max_z:
                raise ValueError(f"atomref must have max_z = {max_z} entries (indexed by Z), got {len(atomref)}")
            self.atomref = nn.Parameter(torch.tensor([float(a) for a in atomref]))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights as PyG's ``reset_parameters``: xavier-uniform linears (each stacked PyG part on its
        own) with zero biases, N(0, 1) embeddings, unit norms; ``atomref``, ``mean``, ``std`` unchanged."""
        c = self.hidden_channels
        self.embedding.reset_parameters()
        self.neighbor_embedding.reset_parameters()
        xavier_blocks(self.radial_proj, [c, c])
        xavier_blocks(self.combine, [c])
        for layer in self.layers:
            layer.reset_parameters()
        self.out_norm.reset_parameters()
        with torch.no_grad():
            self.vec_out_norm_weight.fill_(1.0)
        self.head_1.reset_parameters()
        self.head_2.reset_parameters()

    def _check_elements(self, atomic_numbers: Tensor) -> None:
        bad = (atomic_numbers < 1) | (atomic_numbers >= self.max_z)
        if bool(bad.any()):
            unknown: List[int] = torch.unique(atomic_numbers[bad]).tolist()
            names = [describe_element(z, self.element_symbols) for z in unknown]
            raise ValueError("ViSNet cannot evaluate element(s) " + ", ".join(names) + "; it supports Z = 1.."
                             + str(self.max_z - 1) + " (" + self.element_symbols[1] + ".."
                             + self.element_symbols[min(self.max_z - 1, len(self.element_symbols) - 1)]
                             + "). Remove these atoms from the ML region or use a model with a larger max_z.")

    def forward(self, atomic_numbers: Tensor, positions: Tensor, box: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, total_charge: Optional[Tensor] = None) -> Dict[str, Tensor]:
        if atomic_numbers.dim() != 1 or positions.dim() != 2 or positions.shape[0] != atomic_numbers.shape[0]:
            raise ValueError("atomic_numbers must be [N] and positions [N, 3] with the same N, got "
                             + str(list(atomic_numbers.shape)) + " and " + str(list(positions.shape)))
        self._check_elements(atomic_numbers)
        dtype = self.mean.dtype
        positions = positions.to(dtype)
        if box is not None:
            box = box.to(dtype)
        num_atoms = atomic_numbers.shape[0]
        if batch is None:
            num_structures = 1
            structure = torch.zeros(num_atoms, dtype=torch.long, device=positions.device)
        else:
            if batch.shape != atomic_numbers.shape:
                raise ValueError("batch must be [N] like atomic_numbers, got " + str(list(batch.shape)))
            num_structures = int(batch.max()) + 1 if num_atoms > 0 else 0
            structure = batch
        _, receivers, senders, _, edge_vectors = neighbor_list(positions, self.cutoff, box, batch, True)
        atomic_energies = self.atomic_energies(atomic_numbers, edge_vectors, receivers, senders)
        energy = torch.zeros(num_structures, dtype=dtype, device=positions.device)
        energy = energy.index_add_(0, structure, atomic_energies) + self.mean
        return {"energy": energy, "atomic_energies": atomic_energies}

    def atomic_energies(self, atomic_numbers: Tensor, edge_vectors: Tensor, receivers: Tensor,
                        senders: Tensor) -> Tensor:
        """Per-atom energies ``ε_i = std·out_i + atomref[z_i]`` [N] (eV) from a neighbour list with self-loops.

        Args:
            atomic_numbers: [N] int64, all in 1..max_z−1 (not checked here).
            edge_vectors: [E, 3] ``R_j − R_i (+ shift)`` (Å), model dtype.
            receivers, senders: [E] int64; every atom must have its self-loop (i, i). The fused backend
                needs the edges sorted by receiver (as :func:`viskrates.ops.neighbor_list` returns them).
        """
        num_atoms = atomic_numbers.shape[0]
        c = self.hidden_channels
        if self.backend == "fused":
            harmonics, phi, rbf = rgc_geometry(edge_vectors, receivers, senders, self.cutoff, self.lmax,
                                               self.radial.means, self.radial.betas, self.radial.alpha)
        else:
            distances, units = edge_directions(edge_vectors, receivers, senders)
            harmonics = spherical_harmonics(units, self.lmax)
            phi = cosine_cutoff(distances, self.cutoff)
            # as rgc_geometry: the subnormal tail of the features slowed the weight-gradient products
            rbf = zero_subnormals(self.radial(distances) * phi.unsqueeze(-1))
        neighbor_filter, edge_filter = self.radial_proj(rbf).split(c, dim=-1)
        neighbor_weight = torch.where(receivers == senders, torch.zeros_like(phi), phi)
        neighbor_messages = (self.neighbor_embedding(atomic_numbers).index_select(0, senders) * neighbor_filter
                             * neighbor_weight.unsqueeze(-1))
        x = self.combine(torch.cat([self.embedding(atomic_numbers),
                                    segment_sum(neighbor_messages, receivers, num_atoms)], dim=-1))
        edge_features = (x.index_select(0, receivers) + x.index_select(0, senders)) * edge_filter
        vectors = torch.zeros(num_atoms, harmonics.shape[1], c, dtype=x.dtype, device=x.device)
        graph: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        if self.backend == "fused":
            graph = vismp_graph(receivers, senders, num_atoms)
        first = True
        for layer in self.layers:
            x, vectors, edge_features = layer(x, vectors, edge_features, receivers, senders, phi, harmonics,
                                              first, self.vector_cutoff, graph)
            first = False
        x = self.out_norm(x)
        vectors = vectors * self.vec_out_norm_weight
        x, vectors = self.head_1(x, vectors)
        x, _ = self.head_2(x, vectors)
        return self.std * x[:, 0] + self.atomref.index_select(0, atomic_numbers)

    @classmethod
    def from_pyg_state_dict(cls, state_dict: Dict[str, Tensor], **config) -> "ViSNet":
        """Build a ViSNet from a PyTorch Geometric ``ViSNet`` state dict and its constructor arguments.

        Args:
            state_dict: ``torch_geometric.nn.models.ViSNet.state_dict()`` (names ``representation_model.*``,
                ``output_model.*``, ``prior_model.*``, ``mean``, ``std``).
            **config: PyG's ``ViSNet`` keyword arguments (e.g. from a JSON file), plus ``vector_cutoff`` and
                ``backend``.

        Returns:
            A ViSNet in the state dict's dtype, in eval mode. ``mean``, ``std``, ``atomref`` and the RBF
            buffers are taken from the state dict.

        Raises:
            ValueError: unsupported configuration, or the state dict does not match it (missing or
                unexpected tensors, wrong shapes).
        """
        model = cls(**config)
        mapped = pyg_to_viskrates_state_dict(state_dict, model.num_layers)
        own = model.state_dict()
        missing = sorted(set(own) - set(mapped))
        unexpected = sorted(set(mapped) - set(own))
        if missing or unexpected:
            raise ValueError(f"the PyG state dict does not match this configuration: missing {missing}, "
                             f"unexpected {unexpected}")
        for name, value in mapped.items():
            if own[name].shape != value.shape:
                raise ValueError(f"{name} has shape {list(value.shape)} in the state dict but "
                                 f"{list(own[name].shape)} in a ViSNet built from this configuration")
        model.load_state_dict(mapped)
        dtype = state_dict["mean"].dtype
        return model.to(dtype).eval()


def pyg_to_viskrates_state_dict(state_dict: Dict[str, Tensor], num_layers: int) -> Dict[str, Tensor]:
    """Rename and stack a PyG ``ViSNet`` state dict into :class:`ViSNet`'s parameter names.

    Args:
        state_dict: PyG ViSNet state dict (``vertex=False``).
        num_layers: the model's number of ViS-MP layers (the last has no edge-update tensors).

    Returns:
        A new dict; tensors keep their dtype. The provably unused PyG tensors
        (``output_model.output_network.1.vec2_proj`` and the gate row of the last block's
        ``update_net.2``, ``prior_model.initial_atomref``) are dropped.

    Raises:
        ValueError: a tensor is missing, or some PyG tensor was left unused (another PyG variant).
    """
    source = dict(state_dict)
    used = set(_PYG_UNUSED)

    def take(name: str) -> Tensor:
        if name not in source:
            raise ValueError(f"PyG ViSNet state dict lacks {name}; is it a ViSNet (vertex=False) state dict?")
        used.add(name)
        return source[name]

    rep = "representation_model."
    out = {
        "mean": take("mean").reshape(()),
        "std": take("std").reshape(()),
        "embedding.weight": take(rep + "embedding.weight"),
        "radial.means": take(rep + "distance_expansion.means"),
        "radial.betas": take(rep + "distance_expansion.betas"),
        "neighbor_embedding.weight": take(rep + "neighbor_embedding.embedding.weight"),
        "radial_proj.weight": torch.cat([take(rep + "neighbor_embedding.distance_proj.weight"),
                                         take(rep + "edge_embedding.edge_proj.weight")]),
        "radial_proj.bias": torch.cat([take(rep + "neighbor_embedding.distance_proj.bias"),
                                       take(rep + "edge_embedding.edge_proj.bias")]),
        "combine.weight": take(rep + "neighbor_embedding.combine.weight"),
        "combine.bias": take(rep + "neighbor_embedding.combine.bias"),
        "out_norm.weight": take(rep + "out_norm.weight"),
        "out_norm.bias": take(rep + "out_norm.bias"),
        "vec_out_norm_weight": take(rep + "vec_out_norm.weight"),
    }
    for layer in range(num_layers):
        p = f"{rep}vis_mp_layers.{layer}."
        q = f"layers.{layer}."
        edges = layer < num_layers - 1
        out[q + "layernorm.weight"] = take(p + "layernorm.weight")
        out[q + "layernorm.bias"] = take(p + "layernorm.bias")
        out[q + "vec_norm_weight"] = take(p + "vec_layernorm.weight")
        for stacked, parts in (("qkv_proj", ("q_proj", "k_proj", "v_proj")),
                               ("edge_proj", ("dk_proj", "dv_proj") + (("f_proj",) if edges else ())),
                               ("s_proj", ("s_proj",)), ("o_proj", ("o_proj",))):
            out[q + stacked + ".weight"] = torch.cat([take(p + part + ".weight") for part in parts])
            out[q + stacked + ".bias"] = torch.cat([take(p + part + ".bias") for part in parts])
        vec_parts = ("vec_proj",) + (("w_trg_proj", "w_src_proj") if edges else ())
        out[q + "vec_proj.weight"] = torch.cat([take(p + part + ".weight") for part in vec_parts])
    head = "output_model.output_network."
    out["head_1.vec_proj.weight"] = torch.cat([take(head + "0.vec1_proj.weight"), take(head + "0.vec2_proj.weight")])
    out["head_1.update_a.weight"] = take(head + "0.update_net.0.weight")
    out["head_1.update_a.bias"] = take(head + "0.update_net.0.bias")
    out["head_1.update_b.weight"] = take(head + "0.update_net.2.weight")
    out["head_1.update_b.bias"] = take(head + "0.update_net.2.bias")
    out["head_2.vec_proj.weight"] = take(head + "1.vec1_proj.weight")
    out["head_2.update_a.weight"] = take(head + "1.update_net.0.weight")
    out["head_2.update_a.bias"] = take(head + "1.update_net.0.bias")
    # row 0 is the scalar output; row 1 gates the discarded vector output
    out["head_2.update_b.weight"] = take(head + "1.update_net.2.weight")[:1]
    out["head_2.update_b.bias"] = take(head + "1.update_net.2.bias")[:1]
    if "prior_model.atomref.weight" in source:
        out["atomref"] = take("prior_model.atomref.weight").reshape(-1)
    left = sorted(set(source) - used)
    if left:
        raise ValueError(f"PyG ViSNet state dict has tensors this implementation does not use: {left}")
    return out


def load_pyg_visnet(weights_path: str, config_path: str, vector_cutoff: bool = False,
                    backend: str = "reference") -> ViSNet:
    """Load a PyG ViSNet from ``torch.save``-d state dict and a JSON file of its constructor arguments.

    Args:
        weights_path: ``.pt`` file holding the PyG state dict.
        config_path: ``.json`` file with PyG's ``ViSNet(**config)`` keyword arguments.
        vector_cutoff, backend: see :class:`ViSNet`.

    Returns:
        :class:`ViSNet` in the dtype of the stored tensors, eval mode.

    Raises:
        ValueError: see :meth:`ViSNet.from_pyg_state_dict`.
    """
    with open(config_path) as handle:
        config = json.load(handle)
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    return ViSNet.from_pyg_state_dict(state_dict, vector_cutoff=vector_cutoff, backend=backend, **config)
