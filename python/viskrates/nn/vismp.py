"""ViS-MP: vector-scalar interactive message passing with runtime geometry calculation (RGC).

Wang et al., "Enhancing geometric representations for molecules with equivariant vector-scalar
interactive message passing", Nat. Commun. 15, 313 (2024) (ViSNet), in the form PyTorch Geometric 2.8
implements (``torch_geometric.nn.models.visnet``, ``vertex=False``, ``vecnorm_type=None``); the
equations are spelt out in the reference README (``reference/visnet/README.md``, "Equations" §1, §3).

Graph convention (``viskrates.ops``): directed edges ``e = (j → i)`` sorted by receiver ``i``, with
``receivers[e] = i`` (centre), ``senders[e] = j`` (neighbour) and the edge vector pointing from i to j.
ViSNet keeps the self-loops ``(i → i)``; they have zero vector, zero distance and zero harmonics.

The pieces a fused kernel will replace are kept apart, each a plain function:

* RGC geometry: :func:`edge_directions` (distances and direction units), :func:`spherical_harmonics`
  and :func:`rejection_inner_product` (the vector rejections of the dihedral term).
* Messages and aggregation: :func:`attention_messages`, :func:`vector_messages`, :func:`segment_sum`.

The ``fused`` backend replaces these stages by the kernels ``viskrates.ops.vismp_attention`` (scalar
messages), ``vismp_vector_message`` (vector messages summed per receiver, no [E, L, C] intermediate) and
``vismp_edge_update`` (dihedral term, gate and residual of the edge update): see :func:`scalar_messages`,
:func:`aggregate_vector_messages` and :func:`edge_update`, which take either path.

The angle term needs no per-edge work: ``Σ_m (W₁v_i)[m]·(W₂v_i)[m]`` is a per-atom inner product of
the vector features, which already hold the (weighted) sums of direction units of the neighbours.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import vismp_attention, vismp_edge_update, vismp_vector_message


def edge_directions(edge_vectors: Tensor, receivers: Tensor, senders: Tensor) -> Tuple[Tensor, Tensor]:
    """Distances and unit vectors of the edges, with exact zeros for self-loops (RGC geometry).

    Args:
        edge_vectors: [E, 3] ``R_j − R_i (+ shift)`` (Å), float32/float64.
        receivers: [E] int64 centre atom i of each edge.
        senders: [E] int64 neighbour atom j of each edge.

    Returns:
        ``(distances [E], units [E, 3])`` in the dtype of ``edge_vectors``. For a self-loop (i = j) both
        are exactly 0 and their gradients are finite (the square root never sees 0 there).
    """
    is_self = receivers == senders
    squared = (edge_vectors * edge_vectors).sum(-1)
    ones = torch.ones_like(squared)
    safe = torch.sqrt(torch.where(is_self, ones, squared))
    distances = torch.where(is_self, torch.zeros_like(squared), safe)
    units = edge_vectors / torch.where(is_self, ones, safe).unsqueeze(-1)
    return distances, units


def spherical_harmonics(units: Tensor, lmax: int) -> Tensor:
    """ViSNet's real spherical harmonics of degrees 1..lmax, un-normalised (each l-block has norm 1).

    Components, for a unit vector ``(x, y, z)``:

    * l = 1: ``(x, y, z)`` in plain Cartesian order;
    * l = 2: ``(√3·xz, √3·xy, y² − (x² + z²)/2, √3·yz, (√3/2)(z² − x²))``.

    This is the convention of PyG's ViSNet (``Sphere``), not e3nn's; for a zero vector all are 0.

    Args:
        units: [E, 3] unit vectors (or zeros for self-loops).
        lmax: 1 or 2.

    Returns:
        [E, L] with ``L = (lmax + 1)² − 1`` (3 or 8), dtype of ``units``.

    Raises:
        ValueError: lmax not 1 or 2.
    """
    if lmax == 1:
        return units
    if lmax != 2:
        raise ValueError(f"ViSNet spherical harmonics are implemented for lmax 1 and 2, got {lmax}")
    x = units[:, 0]
    y = units[:, 1]
    z = units[:, 2]
    sqrt3 = math.sqrt(3.0)
    return torch.stack([x, y, z, sqrt3 * x * z, sqrt3 * x * y, y * y - 0.5 * (x * x + z * z), sqrt3 * y * z,
                        0.5 * sqrt3 * (z * z - x * x)], dim=-1)


def rejection_inner_product(target: Tensor, source: Tensor, harmonics: Tensor) -> Tensor:
    """Channel-wise inner product of the vector rejections of ``target`` and ``source`` from ``Y``.

    ``w1 = t − (t·Y)·Y``, ``w2 = s − (s·Y)·Y``, returns ``Σ_m w1[m]·w2[m]``: the dihedral term of the
    ViS-MP edge update (README §3 "Edge update"); the dots run over all L components jointly, per channel.
    Expanding the product gives ``t·s − (t·Y)(s·Y)(2 − Y·Y)``, which is what is evaluated, so the
    rejections are never materialised. For lmax = 1, Y·Y = 1 (0 for self-loops); for lmax = 2,
    Y·Y = 2 and the dihedral term reduces to t·s: PyG's "rejection" is then not a projection, and this
    is reproduced as PyG computes it.

    Args:
        target: [E, L, C] ``W_trg v̂_i`` gathered on the edges.
        source: [E, L, C] ``W_src v̂_j`` gathered on the edges.
        harmonics: [E, L] edge harmonics Y_ij (zero for self-loops).

    Returns:
        [E, C].
    """
    inner = (target * source).sum(1)
    if harmonics.shape[1] == 8:
        # lmax 2: Y·Y = 2 for every edge (an identity of these harmonics of a unit vector) and Y = 0 for a
        # self-loop, so the correction vanishes identically; skipping its [E, L, C] products (and their double
        # backward in force training) changes the result by rounding only
        return inner
    y = harmonics.unsqueeze(-1)
    along_target = (target * y).sum(1)
    along_source = (source * y).sum(1)
    excess = 2.0 - (harmonics * harmonics).sum(1, keepdim=True)
    return inner - along_target * along_source * excess


def segment_sum(values: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Sum the edge values into their receivers: ``out[i] = Σ_{e: receivers[e] = i} values[e]``.

    Args:
        values: [E, *] edge values.
        receivers: [E] int64 receiver of each edge (receiver-sorted in viskrates, not required here).
        num_nodes: N.

    Returns:
        [N, *], dtype of ``values``; rows without edges are 0.
    """
    out = torch.zeros((num_nodes,) + values.shape[1:], dtype=values.dtype, device=values.device)
    return out.index_add_(0, receivers, values)


def attention_messages(query: Tensor, key: Tensor, value: Tensor, key_filter: Tensor, value_filter: Tensor,
                       edge_weights: Tensor, receivers: Tensor, senders: Tensor, num_heads: int) -> Tensor:
    """Scalar messages of ViS-MP: multi-head SiLU attention with edge filters (README §3 "Message").

    ``A_ij^h = SiLU(Σ_{c∈h} q_i[c]·k_j[c]·dk_ij[c]) · φ(r_ij)`` and ``m_ij[c] = val_j[c]·dv_ij[c]·A_ij^h(c)``,
    heads being consecutive blocks of C/H channels.

    Args:
        query, key, value: [N, C] per-atom projections of the normalised scalars.
        key_filter, value_filter: [E, C] ``dk_ij``, ``dv_ij`` (SiLU of projections of the edge features).
        edge_weights: [E] ``φ(r_ij)`` (1 for self-loops).
        receivers, senders: [E] int64.
        num_heads: H, dividing C.

    Returns:
        [E, C] messages m_ij.
    """
    num_edges = key_filter.shape[0]
    channels = key_filter.shape[1]
    head_dim = channels // num_heads
    scores = (query.index_select(0, receivers) * key.index_select(0, senders) * key_filter)
    scores = scores.view(num_edges, num_heads, head_dim).sum(-1)
    attention = F.silu(scores) * edge_weights.unsqueeze(-1)
    messages = (value.index_select(0, senders) * value_filter).view(num_edges, num_heads, head_dim)
    return (messages * attention.unsqueeze(-1)).view(num_edges, channels)


def vector_messages(vectors: Optional[Tensor], scale: Tensor, shift: Tensor, harmonics: Tensor, senders: Tensor,
                    edge_weights: Optional[Tensor]) -> Tensor:
    """Vector messages of ViS-MP: ``u_ij[m, c] = v̂_j[m, c]·s1_ij[c] + s2_ij[c]·Y_ij[m]`` (README §3).

    Args:
        vectors: [N, L, C] normalised vector features v̂, or None when they are known to be zero (first
            layer), which drops the first term.
        scale, shift: [E, C] ``s1``, ``s2``.
        harmonics: [E, L] Y_ij.
        senders: [E] int64.
        edge_weights: [E] optional factor on the whole message. PyG uses none, so u_ij does not vanish at
            the cutoff (energy jump when a pair crosses it); passing ``φ(r_ij)`` makes it vanish.

    Returns:
        [E, L, C].
    """
    if edge_weights is not None:
        # on the [E, C] filters rather than the [E, L, C] messages: L times fewer products
        weights = edge_weights.unsqueeze(-1)
        scale = scale * weights
        shift = shift * weights
    messages = shift.unsqueeze(1) * harmonics.unsqueeze(-1)
    if vectors is not None:
        messages = torch.addcmul(messages, vectors.index_select(0, senders), scale.unsqueeze(1))
    return messages


def scalar_messages(query: Tensor, key: Tensor, value: Tensor, filters: Tensor, edge_weights: Tensor,
                    receivers: Tensor, senders: Tensor, num_heads: int,
                    graph: Optional[Tuple[Tensor, Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
    """:func:`attention_messages` and their :func:`segment_sum` (graph None) or the fused kernel
    ``viskrates.ops.vismp_attention`` (graph = ``(row_ptr, col_ptr, col_edges)`` from
    :func:`viskrates.ops.vismp_graph`, receiver-sorted edges). Arguments as for :func:`attention_messages`, with
    the two edge filters side by side in ``filters`` [E, 2C] ``(dk | dv)``; returns ``(messages [E, C], their sums
    per receiver [N, C])``."""
    if graph is None:
        key_filter, value_filter = filters.chunk(2, dim=-1)
        messages = attention_messages(query, key, value, key_filter, value_filter, edge_weights, receivers, senders,
                                      num_heads)
        return messages, segment_sum(messages, receivers, query.shape[0])
    row_ptr, col_ptr, col_edges = graph
    return vismp_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value, filters, edge_weights,
                           num_heads)


def aggregate_vector_messages(vectors: Optional[Tensor], filters: Tensor, harmonics: Tensor, receivers: Tensor,
                              senders: Tensor, edge_weights: Optional[Tensor], num_nodes: int,
                              graph: Optional[Tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """``V_i = Σ_{e: j→i} u_ij``: :func:`vector_messages` summed into the receivers.

    Args:
        vectors, harmonics, senders, edge_weights: as for :func:`vector_messages`.
        filters: [E, 2C] ``(s1 | s2)``, or [E, C] ``s2`` when ``vectors`` is None.
        receivers: [E] int64, sorted ascending when ``graph`` is given.
        num_nodes: N.
        graph: None for the reference path (PyTorch ops, [E, L, C] messages), or ``(row_ptr, col_ptr,
            col_edges)`` from :func:`viskrates.ops.vismp_graph` for the fused kernel.

    Returns:
        [N, L, C].
    """
    if graph is None:
        scale, shift = filters, filters
        if vectors is not None:
            scale, shift = filters.chunk(2, dim=-1)
        return segment_sum(vector_messages(vectors, scale, shift, harmonics, senders, edge_weights), receivers,
                           num_nodes)
    row_ptr, col_ptr, col_edges = graph
    return vismp_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters, harmonics,
                                edge_weights)


def edge_update(edge_features: Tensor, gate: Tensor, target: Tensor, source: Tensor, harmonics: Tensor,
                receivers: Tensor, senders: Tensor, graph: Optional[Tuple[Tensor, Tensor, Tensor]]) -> Tensor:
    """ViS-MP edge update ``f + gate ⊙ Σ_m w1[m]·w2[m]`` for every edge, the dihedral term from the per-atom
    projections (see :func:`rejection_inner_product`).

    Args:
        edge_features: [E, C] f.
        gate: [E, C] ``SiLU(Lin_f(f))``.
        target: [N, L, C] ``W_trg v̂`` (taken at the receiver).
        source: [N, L, C] ``W_src v̂`` (taken at the sender).
        harmonics: [E, L]; receivers, senders: [E] int64.
        graph: None (reference path) or ``(row_ptr, col_ptr, col_edges)`` for the fused kernel.

    Returns:
        [E, C] updated edge features.
    """
    if graph is None:
        dihedral = rejection_inner_product(target.index_select(0, receivers), source.index_select(0, senders),
                                           harmonics)
        # not addcmul: its backward multiplies both gradients by the scalar `value` in two more [E, C] passes
        return edge_features + gate * dihedral
    row_ptr, col_ptr, col_edges = graph
    return vismp_edge_update(row_ptr, receivers, senders, col_ptr, col_edges, edge_features, gate, target, source,
                             harmonics)


def xavier_blocks(linear: nn.Linear, blocks: List[int]) -> None:
    """Xavier-uniform initialisation of a stacked linear, block of rows by block (each block as if it were
    its own layer, as the separate PyG linears it stacks), and zero bias.

    Args:
        linear: the layer; its weight has ``sum(blocks)`` rows.
        blocks: row counts of the stacked parts.
    """
    with torch.no_grad():
        for rows in linear.weight.split(blocks, dim=0):
            nn.init.xavier_uniform_(rows)
        if linear.bias is not None:
            linear.bias.zero_()


class ViSMPLayer(nn.Module):
    """One pre-norm ViS-MP layer with residual updates of scalars x, vectors v and edge features f.

    README §3 (PyG 2.8 ``ViS_MP`` with ``vecnorm_type=None``):

    * ``x̂ = LayerNorm(x)``, ``v̂ = v ⊙ w_vln``; ``q, k, val`` from x̂; ``dk, dv = SiLU(Lin(f))``.
    * messages m_ij, u_ij (:func:`attention_messages`, :func:`vector_messages`), summed into i: X_i, V_i.
    * ``(o1, o2, o3) = Lin_o(X_i)``; ``Δx = (Σ_m v1[m]·v2[m]) ⊙ o2 + o3`` (angle term, per atom);
      ``Δv = v3 ⊙ o1 + V`` with ``(v1, v2, v3) = W_vec v̂``.
    * edge update (all layers but the last): ``Δf = SiLU(Lin_f(f)) ⊙ Σ_m w1[m]·w2[m]`` from the
      rejections of ``W_trg v̂_i`` and ``W_src v̂_j`` (:func:`rejection_inner_product`).

    Parameters (the PyG linears sharing an input are stacked, rows in this order):
    ``qkv_proj`` [3C, C] (q, k, v); ``edge_proj`` [2C or 3C, C] (dk, dv, f); ``vec_proj`` [3C or 5C, C],
    no bias (vec1, vec2, vec3, w_trg, w_src); ``s_proj`` [2C, C]; ``o_proj`` [3C, C]; ``layernorm``;
    ``vec_norm_weight`` [C].

    Args:
        hidden_channels: C.
        num_heads: H, must divide C.
        update_edges: False for the last layer (it has no edge update).
        trainable_vecnorm: make ``vec_norm_weight`` a parameter (else a buffer, as in PyG).

    Shapes (forward): x [N, C], vectors [N, L, C], edge_features [E, C], receivers/senders [E],
    edge_weights [E] (φ), harmonics [E, L]; returns updated (x, vectors, edge_features).

    In the first layer v = 0, so ``vec_norm_weight``, ``vec_proj``, the edge-gate rows of ``edge_proj`` and
    the o1, o2 rows of ``o_proj`` never act there (in PyG they multiply 0; they are kept so that every
    layer has PyG's parameters).
    """

    def __init__(self, hidden_channels: int, num_heads: int, update_edges: bool, trainable_vecnorm: bool = False):
        super().__init__()
        if hidden_channels % num_heads != 0:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})")
        c = hidden_channels
        self.hidden_channels = c
        self.num_heads = num_heads
        self.update_edges = update_edges
        self.layernorm = nn.LayerNorm(c)
        if trainable_vecnorm:
            self.vec_norm_weight = nn.Parameter(torch.ones(c))
        else:
            self.register_buffer("vec_norm_weight", torch.ones(c))
        self.qkv_proj = nn.Linear(c, 3 * c)
        self.edge_proj = nn.Linear(c, (3 if update_edges else 2) * c)
        self.vec_proj = nn.Linear(c, (5 if update_edges else 3) * c, bias=False)
        self.s_proj = nn.Linear(c, 2 * c)
        self.o_proj = nn.Linear(c, 3 * c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyG's initialisation: xavier-uniform weights (each stacked part on its own), zero biases, unit
        LayerNorm and vector scales."""
        c = self.hidden_channels
        self.layernorm.reset_parameters()
        with torch.no_grad():
            self.vec_norm_weight.fill_(1.0)
        xavier_blocks(self.qkv_proj, [c, c, c])
        xavier_blocks(self.edge_proj, [c] * (self.edge_proj.out_features // c))
        xavier_blocks(self.vec_proj, [3 * c] + [c] * (self.vec_proj.out_features // c - 3))
        xavier_blocks(self.s_proj, [2 * c])
        xavier_blocks(self.o_proj, [3 * c])

    def forward(self, x: Tensor, vectors: Tensor, edge_features: Tensor, receivers: Tensor, senders: Tensor,
                edge_weights: Tensor, harmonics: Tensor, vectors_are_zero: bool, vector_cutoff: bool,
                graph: Optional[Tuple[Tensor, Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """One layer. ``vectors_are_zero`` (first layer) skips every term that multiplies v = 0, which
        gives the same numbers; ``vector_cutoff`` multiplies the vector messages by φ (not in PyG);
        ``graph`` = ``(row_ptr, col_ptr, col_edges)`` (:func:`viskrates.ops.vismp_graph`, receiver-sorted
        edges) selects the fused kernels for the messages and the edge update."""
        c = self.hidden_channels
        num_nodes = x.shape[0]
        # stacked outputs are cut with split (not slices): its backward concatenates the gradients
        # instead of zero-filling one full-width gradient per slice
        query, key, value = self.qkv_proj(self.layernorm(x)).split(c, dim=-1)
        # The attention filters (dk | dv) and the edge-update gate are separate products of edge_proj's rows, and
        # the per-edge filters reach the ops whole: per-part tensors would cost a concatenation of [E, 2-3C]
        # gradients in every backward pass.
        filters = F.silu(F.linear(edge_features, self.edge_proj.weight[:2 * c], self.edge_proj.bias[:2 * c]))
        messages, message_sums = scalar_messages(query, key, value, filters, edge_weights, receivers, senders,
                                                 self.num_heads, graph)
        if vectors_are_zero:
            # with v = 0 the scale s1 multiplies nothing, so only the shift rows of s_proj are evaluated
            vector_filters = F.silu(F.linear(messages, self.s_proj.weight[c:], self.s_proj.bias[c:]))
        else:
            vector_filters = F.silu(self.s_proj(messages))  # s1 | s2
        vector_weights: Optional[Tensor] = None
        if vector_cutoff:
            vector_weights = edge_weights
        o1, o2, o3 = self.o_proj(message_sums).split(c, dim=-1)
        if vectors_are_zero:
            aggregated = aggregate_vector_messages(None, vector_filters, harmonics, receivers, senders,
                                                   vector_weights, num_nodes, graph)
            return x + o3, vectors + aggregated, edge_features
        v_hat = vectors * self.vec_norm_weight
        aggregated = aggregate_vector_messages(v_hat, vector_filters, harmonics, receivers, senders, vector_weights,
                                               num_nodes, graph)
        projected = self.vec_proj(v_hat).split(c, dim=-1)
        dx = (projected[0] * projected[1]).sum(1) * o2 + o3
        dv = projected[2] * o1.unsqueeze(1) + aggregated
        if self.update_edges:
            # with v = 0 (first layer) the update vanishes, so the gate rows (the last C) are evaluated only here
            gate = F.silu(F.linear(edge_features, self.edge_proj.weight[2 * c:], self.edge_proj.bias[2 * c:]))
            edge_features = edge_update(edge_features, gate, projected[3], projected[4], harmonics, receivers, senders,
                                        graph)
        return x + dx, vectors + dv, edge_features
