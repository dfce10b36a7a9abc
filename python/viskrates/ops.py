"""Python face of the viskrates custom ops, each with a pure-PyTorch reference.

The compiled library (``torch.ops.viskrates``) is loaded by ``viskrates/__init__.py``. Every op here has a
``*_reference`` twin written with plain PyTorch operations: the tests compare the two, and the reference
is the readable specification of what the kernel computes.

Neighbour-list convention (shared by every model)
-------------------------------------------------
Edges are directed and *receiver-sorted* (CSR): the edges of receiver ``i`` are
``row_ptr[i]:row_ptr[i+1]``; within a receiver, edges are ordered by sender index, then by periodic
shift (lexicographic). For edge ``e`` with receiver ``i = receivers[e]`` and sender ``j = senders[e]``::

    edge_vectors[e] = positions[j] - positions[i] + shifts[e] @ box

i.e. the vector points from the receiver (centre) to its neighbour. ``shifts`` holds integer multiples
of the box vectors (stored in the positions' dtype). A pair is an edge iff ``|edge_vectors[e]|² <
cutoff²`` (strict). Periodic boxes must have every perpendicular width >= 2·cutoff, so each pair has at
most one image within the cutoff (the minimum image).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .nn.attention import euclidean_attention as _reference_attention
from .nn.radial import zero_subnormals
from .nn.spherical_harmonics import component_degrees


def _check_box(box: Tensor, cutoff: float) -> None:
    """Raise ValueError unless every perpendicular width of ``box`` (rows = box vectors) is >= 2·cutoff."""
    if box.shape != (3, 3):
        raise ValueError(f"box must have shape [3, 3] (rows are box vectors), got {list(box.shape)}")
    volume = torch.abs(torch.linalg.det(box))
    if not bool(volume > 0):
        raise ValueError("box vectors are degenerate (zero volume)")
    a, b, c = box[0], box[1], box[2]
    widths = volume / torch.stack([
        torch.linalg.norm(torch.linalg.cross(b, c)),
        torch.linalg.norm(torch.linalg.cross(c, a)),
        torch.linalg.norm(torch.linalg.cross(a, b)),
    ])
    smallest = float(widths.min().detach())
    if smallest < 2.0 * cutoff:
        raise ValueError(
            f"periodic box too small for the cutoff: its smallest perpendicular width is {smallest:.4f} "
            f"but must be at least twice the cutoff ({2.0 * cutoff:.4f}, same length unit as the positions); "
            "use a larger box (more solvent padding) or a smaller cutoff")


def _check_positions(positions: Tensor) -> None:
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(positions.shape)}")
    if not bool(torch.isfinite(positions).all()):
        bad = torch.nonzero(~torch.isfinite(positions).all(dim=1)).flatten().tolist()
        raise ValueError(f"positions contain NaN or infinite values (atoms {bad[:10]})")


def neighbor_list_reference(positions: Tensor, cutoff: float, box: Optional[Tensor] = None,
                            batch: Optional[Tensor] = None, self_loops: bool = False
                            ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Brute-force O(N²) neighbour list; the specification the ``viskrates::neighbor_list`` kernel follows.

    Args:
        positions: [N, 3] float32/float64, any length unit (models use Å).
        cutoff: pairs with distance strictly below ``cutoff`` are edges (same unit as positions).
        box: optional [3, 3] periodic box, rows are box vectors (same unit). ``None``: open boundaries.
        batch: optional [N] int64, sorted molecule index; atoms of different molecules are never paired.
        self_loops: if True, every atom also gets the edge (i, i) with zero vector (ViSNet needs it).

    Returns:
        ``(row_ptr [N+1] int64, receivers [E] int64, senders [E] int64, shifts [E, 3] positions.dtype,
        edge_vectors [E, 3] positions.dtype)``, receiver-sorted as described in the module docstring.
        ``edge_vectors`` is differentiable with respect to ``positions`` and ``box``.

    Raises:
        ValueError: NaN/inf positions, wrong shapes, a box thinner than 2·cutoff, or batch with a box.
    """
    _check_positions(positions)
    n = positions.shape[0]
    if box is not None:
        _check_box(box, cutoff)
        if batch is not None:
            raise ValueError("batched neighbour lists are supported for open boundaries only")
    delta = positions.unsqueeze(0) - positions.unsqueeze(1)  # [i, j] = R_j - R_i
    eye = torch.eye(n, dtype=torch.bool, device=positions.device)
    same = torch.ones(n, n, dtype=torch.bool, device=positions.device)
    if batch is not None:
        same = batch.unsqueeze(0) == batch.unsqueeze(1)
    if box is None:
        candidates = torch.zeros(1, 3, dtype=positions.dtype, device=positions.device)
    else:
        # Rounding fractional coordinates is not the minimum image in a skewed cell, so every image
        # in the 3x3x3 block around the rounded one is tested; the width check leaves at most one.
        r = torch.arange(-1, 2, dtype=positions.dtype, device=positions.device)
        candidates = torch.cartesian_prod(r, r, r)
        frac = torch.linalg.solve(box.T, delta.reshape(-1, 3).T).T.reshape(n, n, 3)
        base = -torch.round(frac.detach())
    receivers_list, senders_list, shifts_list = [], [], []
    for k in range(candidates.shape[0]):
        shift = candidates[k].expand(n, n, 3)
        vec = delta
        if box is not None:
            shift = base + candidates[k]
            vec = delta + shift @ box
        d2 = (vec * vec).sum(-1)
        mask = (d2 < cutoff * cutoff) & same & ~eye
        if self_loops and bool((candidates[k] == 0).all()):
            mask = mask | eye
        rec, snd = torch.nonzero(mask, as_tuple=True)
        receivers_list.append(rec)
        senders_list.append(snd)
        shifts_list.append(shift[rec, snd])
    receivers = torch.cat(receivers_list)
    senders = torch.cat(senders_list)
    shifts = torch.cat(shifts_list)
    # canonical order: receiver, then sender, then shift (lexicographic)
    key = torch.cat([receivers.unsqueeze(1).to(shifts.dtype), senders.unsqueeze(1).to(shifts.dtype), shifts], 1)
    for col in range(4, -1, -1):
        order = torch.sort(key[:, col], stable=True).indices
        key = key[order]
        receivers, senders, shifts = receivers[order], senders[order], shifts[order]
    counts = torch.bincount(receivers, minlength=n)
    row_ptr = torch.zeros(n + 1, dtype=torch.long, device=positions.device)
    row_ptr[1:] = torch.cumsum(counts, 0)
    edge_vectors = positions[senders] - positions[receivers]
    if box is not None:
        edge_vectors = edge_vectors + shifts @ box
    return row_ptr, receivers, senders, shifts, edge_vectors


def neighbor_list(positions: Tensor, cutoff: float, box: Optional[Tensor] = None,
                  batch: Optional[Tensor] = None, self_loops: bool = False
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Cell-list neighbour list (``torch.ops.viskrates.neighbor_list``); same contract as
    :func:`neighbor_list_reference` (arguments, outputs, ordering and errors), in O(N) time for a fixed
    density. It also raises ValueError for an unsorted ``batch``, a negative or non-finite ``cutoff``, and
    a ``box`` or ``batch`` on another device (or, for ``box``, of another dtype) than ``positions``.

    ``edge_vectors`` carries a C++ autograd backward to ``positions`` and ``box`` (double backward too).
    """
    return torch.ops.viskrates.neighbor_list(positions, box, cutoff, batch, self_loops)


# ---- fused ViS-MP ops (ViSNet; Wang et al., Nat. Commun. 15, 313 (2024)) --------------------------------
# Graph arguments: a receiver-sorted edge list (row_ptr [N+1], receivers [E], senders [E]) and its
# transpose (col_ptr [N+1], col_edges [E]: the edges of sender j are col_edges[col_ptr[j]:col_ptr[j+1]]),
# all int64, from :func:`vismp_graph`. The transpose lets the kernels gather the gradients of the senders'
# features per sender instead of scattering them with atomics, so results are deterministic. The kernels
# check shapes, dtypes and devices but trust the index values (they must be consistent and in range).


def vismp_graph(receivers: Tensor, senders: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """CSR row pointers of a receiver-sorted edge list and its transpose, for the ``vismp_*`` ops.

    Args:
        receivers: [E] int64, sorted ascending (as :func:`neighbor_list` returns them).
        senders: [E] int64.
        num_nodes: N.

    Returns:
        ``(row_ptr [N+1], col_ptr [N+1], col_edges [E])``, int64: ``row_ptr[i]:row_ptr[i+1]`` are the edges of
        receiver i; ``col_edges[col_ptr[j]:col_ptr[j+1]]`` are the edges of sender j in ascending edge order.
    """
    zero = torch.zeros(1, dtype=torch.long, device=receivers.device)
    row_ptr = torch.cat([zero, torch.cumsum(torch.bincount(receivers, minlength=num_nodes), 0)])
    col_ptr = torch.cat([zero, torch.cumsum(torch.bincount(senders, minlength=num_nodes), 0)])
    col_edges = torch.sort(senders, stable=True)[1]
    return row_ptr, col_ptr, col_edges


def vismp_vector_message_reference(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor,
                                   col_edges: Tensor, vectors: Optional[Tensor], filters: Tensor, harmonics: Tensor,
                                   weights: Optional[Tensor]) -> Tensor:
    """Aggregated ViS-MP vector messages, ``V_i[m, c] = Σ_{e: j→i} w_e·(v̂_j[m, c]·s1_e[c] + s2_e[c]·Y_e[m])``
    (README "Equations" §3, PyG's ``ViS_MP.message``/``aggregate`` for the vector channel).

    Args:
        row_ptr, receivers, senders, col_ptr, col_edges: graph, see :func:`vismp_graph` (only receivers and
            senders are used here).
        vectors: [N, L, C] normalised vector features v̂ or None (v̂ = 0, first layer).
        filters: [E, 2C] ``(s1 | s2)``, or [E, C] ``s2`` when ``vectors`` is None (s1 multiplies v̂ = 0).
        harmonics: [E, L] Y (L <= 8).
        weights: [E] w or None (w = 1).

    Returns:
        [N, L, C], dtype of ``filters``; atoms without edges get 0.
    """
    if vectors is None:
        shift = filters
    else:
        scale, shift = filters.chunk(2, dim=1)
    messages = shift.unsqueeze(1) * harmonics.unsqueeze(-1)
    if vectors is not None:
        messages = messages + vectors.index_select(0, senders) * scale.unsqueeze(1)
    if weights is not None:
        messages = messages * weights.view(-1, 1, 1)
    out = torch.zeros((row_ptr.shape[0] - 1,) + messages.shape[1:], dtype=filters.dtype, device=filters.device)
    return out.index_add_(0, receivers, messages)


def vismp_vector_message(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor, col_edges: Tensor,
                         vectors: Optional[Tensor], filters: Tensor, harmonics: Tensor,
                         weights: Optional[Tensor]) -> Tensor:
    """Fused :func:`vismp_vector_message_reference` (``torch.ops.viskrates.vismp_vector_message``): one pass
    per receiver over its edges, never materialising the [E, L, C] messages. Same arguments and result;
    float32/float64, CPU or CUDA; ``filters`` may be a row-strided view. C++ backward to vectors, filters (one
    gradient tensor, so a model's [E, 2C] projection needs no concatenation of per-part gradients), harmonics and
    weights (recomputed from the inputs, deterministic); no double backward (RuntimeError under
    ``create_graph=True``).

    Raises:
        ValueError: inconsistent shapes, dtypes or devices, or more than 8 harmonic components.
    """
    return torch.ops.viskrates.vismp_vector_message(row_ptr, receivers, senders, col_ptr, col_edges, vectors, filters,
                                                    harmonics, weights)


def vismp_edge_update_reference(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor,
                                col_edges: Tensor, edge_features: Tensor, gate: Tensor, target: Tensor, source: Tensor,
                                harmonics: Tensor) -> Tensor:
    """ViS-MP edge update ``f'_e = f_e + gate_e ⊙ r_e`` with the dihedral term
    ``r_e[c] = Σ_m t_i[m,c]·s_j[m,c] − (t_i·Y_e)[c]·(s_j·Y_e)[c]·(2 − Y_e·Y_e)``, the channel-wise inner product of
    the rejections of ``t_i`` and ``s_j`` from Y_e as PyG computes it (see
    :func:`viskrates.nn.vismp.rejection_inner_product`; README "Equations" §3, "Edge update"). For L = 8 (lmax 2)
    only ``Σ_m t_i[m,c]·s_j[m,c]`` is evaluated: these harmonics have Y·Y = 2, so the correction vanishes.

    Args:
        row_ptr, receivers, senders, col_ptr, col_edges: graph, see :func:`vismp_graph` (receivers and
            senders are used here).
        edge_features: [E, C] f.
        gate: [E, C] ``SiLU(Lin_f(f))``.
        target: [N, L, C] ``W_trg v̂`` (per atom, gathered by receiver).
        source: [N, L, C] ``W_src v̂`` (per atom, gathered by sender).
        harmonics: [E, L] Y (L <= 8).

    Returns:
        [E, C] f', dtype of ``target``.
    """
    from .nn.vismp import edge_update  # nn.vismp builds on this module

    return edge_update(edge_features, gate, target, source, harmonics, receivers, senders, None)


def vismp_edge_update(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor, col_edges: Tensor,
                      edge_features: Tensor, gate: Tensor, target: Tensor, source: Tensor, harmonics: Tensor) -> Tensor:
    """Fused :func:`vismp_edge_update_reference` (``torch.ops.viskrates.vismp_edge_update``): the dihedral term,
    gate and residual in one pass per receiver, without gathering [E, L, C] copies of ``target`` and ``source``
    or forming r as an [E, C] tensor. Same arguments and result; float32/float64, CPU or CUDA. C++ backward to
    edge_features, gate, target, source and harmonics (deterministic); no double backward.

    Raises:
        ValueError: inconsistent shapes, dtypes or devices, or more than 8 harmonic components.
    """
    return torch.ops.viskrates.vismp_edge_update(row_ptr, receivers, senders, col_ptr, col_edges, edge_features, gate,
                                                 target, source, harmonics)


def vismp_attention_reference(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor,
                              col_edges: Tensor, query: Tensor, key: Tensor, value: Tensor, filters: Tensor,
                              weights: Tensor, num_heads: int) -> Tuple[Tensor, Tensor]:
    """ViS-MP scalar messages, multi-head SiLU attention with edge filters (README "Equations" §3
    "Message"; :func:`viskrates.nn.vismp.attention_messages`):
    ``m_e[c] = val_j[c]·dv_e[c]·SiLU(Σ_{c'∈h(c)} q_i[c']·k_j[c']·dk_e[c'])·w_e``, heads being consecutive
    blocks of C/H channels, and their sums per receiver ``X_i = Σ_{e: j→i} m_e``.

    Args:
        row_ptr, receivers, senders, col_ptr, col_edges: graph, see :func:`vismp_graph`.
        query, key, value: [N, C] per-atom projections.
        filters: [E, 2C] edge filters ``(dk | dv)`` (views with unit column stride are accepted).
        weights: [E] w (ViSNet: the cosine cutoff φ).
        num_heads: H, dividing C.

    Returns:
        ``(messages [E, C], sums [N, C])``.
    """
    num_edges, channels = filters.shape[0], query.shape[1]
    key_filter, value_filter = filters[:, :channels], filters[:, channels:2 * channels]
    scores = (query.index_select(0, receivers) * key.index_select(0, senders) * key_filter)
    scores = scores.view(num_edges, num_heads, channels // num_heads).sum(-1)
    attention = torch.nn.functional.silu(scores) * weights.unsqueeze(-1)
    messages = (value.index_select(0, senders) * value_filter).view(num_edges, num_heads, channels // num_heads)
    from .nn.vismp import segment_sum  # nn.vismp builds on this module

    messages = (messages * attention.unsqueeze(-1)).view(num_edges, channels)
    return messages, segment_sum(messages, receivers, query.shape[0])


def vismp_attention(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor, col_edges: Tensor,
                    query: Tensor, key: Tensor, value: Tensor, filters: Tensor, weights: Tensor,
                    num_heads: int) -> Tuple[Tensor, Tensor]:
    """Fused :func:`vismp_attention_reference` (``torch.ops.viskrates.vismp_attention``): one pass per
    receiver, no gathered [E, C] copies of q, k, val; the edge filters are read in place (no copy) when they
    are a view of a wider projection; the per-receiver sums are formed in the same pass (and their gradient
    joins the messages' inside the backward passes). Same arguments and results; float32/float64, CPU or CUDA.
    C++ backward to query, key, value, the filters (one [E, 2C] gradient tensor) and weights (deterministic); no
    double backward.

    Raises:
        ValueError: inconsistent shapes, dtypes or devices, or num_heads not dividing C.
    """
    return torch.ops.viskrates.vismp_attention(row_ptr, receivers, senders, col_ptr, col_edges, query, key, value,
                                               filters, weights, num_heads)


# ---- fused Euclidean attention (SO3krates; Frank et al., Nat. Commun. 15, 6539 (2024)) ------------------
# Graph arguments: the receiver-sorted edges with their transpose (row_ptr, receivers, senders, col_ptr,
# col_edges from :func:`vismp_graph`) and the filter rows: edge e uses filters[filter_index[e]], and the
# edges of row f are filter_edges[filter_ptr[f]:filter_ptr[f+1]]. With one row per edge this is the plain
# per-edge filter (:func:`edge_filter_graph`); SO3krates' filters are symmetric (w_ij = w_ji), so the model
# evaluates them once per unordered pair (:func:`pair_filter_graph`) and both directions share the row.


def edge_filter_graph(num_edges: int, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """One filter row per edge: ``(filter_index [E], filter_ptr [E+1], filter_edges [E])``, int64."""
    index = torch.arange(num_edges, dtype=torch.long, device=device)
    return index, torch.arange(num_edges + 1, dtype=torch.long, device=device), index


def pair_filter_graph(receivers: Tensor, senders: Tensor, num_nodes: int
                      ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Filter rows shared by the two directions of every pair, for the ``euclidean_attention`` op.

    Args:
        receivers, senders: [E] int64, a receiver-sorted directed edge list in which every edge i→j (i ≠ j)
            has exactly one reverse edge j→i and no pair (i, j) occurs twice, as :func:`neighbor_list` returns
            it (periodic boxes are at least twice the cutoff wide, so a pair has one image).
        num_nodes: N.

    Returns:
        ``(pair_edges [P], filter_index [E], filter_ptr [P+1], filter_edges [E])``, int64: ``pair_edges[p]``
        is the edge i→j with i < j of pair p (its edge vector defines the pair's distance), edge e uses
        row ``filter_index[e]``, and the two edges of pair p are ``filter_edges[2p], filter_edges[2p+1]``.

    Raises:
        ValueError: self-loops, or an edge without exactly one reverse edge.
    """
    if bool((receivers == senders).any()):
        raise ValueError("pair_filter_graph: the edge list contains self-loops (i→i); they have no pair")
    keys = receivers * num_nodes + senders
    reverse_keys = senders * num_nodes + receivers
    reverse = torch.searchsorted(keys, reverse_keys).clamp(max=max(keys.shape[0] - 1, 0))
    if keys.shape[0] > 0 and not bool((keys.index_select(0, reverse) == reverse_keys).all()):
        raise ValueError("pair_filter_graph: every edge i→j needs exactly one reverse edge j→i (a symmetric, "
                         "receiver-sorted neighbour list with one image per pair)")
    if keys.shape[0] > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError("pair_filter_graph: edges must be sorted by (receiver, sender) without duplicate pairs")
    forward = receivers < senders
    pair_edges = torch.nonzero(forward).flatten()
    pair_of_forward = torch.cumsum(forward.to(torch.long), 0) - 1
    filter_index = torch.where(forward, pair_of_forward, pair_of_forward.index_select(0, reverse))
    filter_edges = torch.stack([pair_edges, reverse.index_select(0, pair_edges)], 1).flatten()
    filter_ptr = torch.arange(0, 2 * pair_edges.shape[0] + 1, 2, dtype=torch.long, device=receivers.device)
    return pair_edges, filter_index, filter_ptr, filter_edges


def euclidean_attention_reference(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor,
                                  col_edges: Tensor, filter_index: Tensor, filter_ptr: Tensor, filter_edges: Tensor,
                                  x_query: Tensor, x_key: Tensor, x_value: Tensor, x_filter: Tensor,
                                  ev_query: Tensor, ev_key: Tensor, ev_filter: Tensor, harmonics: Tensor,
                                  cutoff_values: Tensor, normalization: float) -> Tuple[Tensor, Tensor]:
    """Both branches of one SO3krates Euclidean attention block (Frank et al. 2024, eqs. 7-10, SO3LR variant
    without softmax; FORMULAS §4), with s_e = φ_e / normalization and f = filter_index[e]::

        α1_e,h = s_e Σ_a q1_i,h,a w1_f,h,a k1_j,h,a,    Δx_i,h,a = Σ_{e: j→i} α1_e,h v1_j,h,a
        α2_e,l = s_e Σ_a q2_i,l,a w2_f,l,a k2_j,l,a,    Δev_i,c  = Σ_{e: j→i} α2_e,deg(c) Y_e,c

    Args:
        row_ptr, receivers, senders, col_ptr, col_edges: graph, see :func:`vismp_graph` (only receivers
            and senders are used here).
        filter_index, filter_ptr, filter_edges: filter rows, see :func:`pair_filter_graph` (only
            filter_index is used here).
        x_query, x_key, x_value: [N, H, D] per-head projections of the invariant features (float32/64).
        x_filter: [P, H, D] filter rows of the invariant branch.
        ev_query, ev_key: [N, L, D] projections for the EV branch (head l ↔ degree l+1, L <= H).
        ev_filter: [P, L, D].
        harmonics: [E, (L+1)² − 1] real spherical harmonics of the edge directions, ordered by degree.
        cutoff_values: [E] φ(d_e).
        normalization: n > 0.

    Returns:
        ``(Δx [N, H, D], Δev [N, (L+1)² − 1])``.
    """
    degrees = component_degrees(ev_query.shape[1]).to(harmonics.device)
    return _reference_attention(x_query, x_key, x_value, x_filter.index_select(0, filter_index), ev_query, ev_key,
                     ev_filter.index_select(0, filter_index), harmonics, degrees, cutoff_values, receivers, senders,
                     normalization)


def euclidean_attention(row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor, col_edges: Tensor,
                        filter_index: Tensor, filter_ptr: Tensor, filter_edges: Tensor, x_query: Tensor,
                        x_key: Tensor, x_value: Tensor, x_filter: Tensor, ev_query: Tensor, ev_key: Tensor,
                        ev_filter: Tensor, harmonics: Tensor, cutoff_values: Tensor,
                        normalization: float) -> Tuple[Tensor, Tensor]:
    """Fused :func:`euclidean_attention_reference` (``torch.ops.viskrates.euclidean_attention``): one pass per
    receiver over its edges, no [E, H, D] gathers or products. Same arguments and result; float32/float64,
    CPU or CUDA. C++ backward to the queries, keys, values, filter rows, harmonics and cutoff values
    (scores recomputed from the inputs; three gathering passes, deterministic); no double backward
    (RuntimeError under ``create_graph=True``).

    Raises:
        ValueError: inconsistent shapes, dtypes or devices, L > H, harmonics without (L+1)² − 1 components,
            or a normalization that is not positive. Index values are trusted (consistent and in range).
    """
    return torch.ops.viskrates.euclidean_attention(row_ptr, receivers, senders, col_ptr, col_edges, filter_index,
                                                   filter_ptr, filter_edges, x_query, x_key, x_value, x_filter,
                                                   ev_query, ev_key, ev_filter, harmonics, cutoff_values,
                                                   normalization)


# ---- runtime geometry calculation of ViSNet (Wang et al., Nat. Commun. 15, 313 (2024)) -----------------


def rgc_geometry_reference(edge_vectors: Tensor, receivers: Tensor, senders: Tensor, cutoff: float, lmax: int,
                           means: Tensor, betas: Tensor, alpha: float) -> Tuple[Tensor, Tensor, Tensor]:
    """ViSNet's per-edge geometry ("runtime geometry calculation"), the specification of
    ``viskrates::rgc_geometry``: for the edge (j → i) with vector ``v``, ``d = |v|``, ``u = v/d``,

    * harmonics ``Y = (u_x, u_y, u_z)`` and, for lmax 2, ``(√3·xz, √3·xy, y² − (x² + z²)/2, √3·yz,
      (√3/2)(z² − x²))`` of u (PyG ViSNet's ``Sphere``; :func:`viskrates.nn.vismp.spherical_harmonics`);
      for lmax 1 Y is the direction unit u, for lmax 2 its first three columns are;
    * the cosine cutoff ``φ = ½(cos(πd/cutoff) + 1)`` for d < cutoff, else 0 (:func:`viskrates.nn.cosine_cutoff`);
    * the radial features ``ρ[k] = φ·exp(−β_k (exp(−α·d) − μ_k)²)`` (ExpNormal basis times φ,
      :class:`viskrates.nn.ExpNormalSmearing`; ViSNet uses α = 5/cutoff), 0 where that is subnormal
      (:func:`viskrates.nn.radial.zero_subnormals`: subnormal operands slow the next layer's products).

    Self-loops (``receivers == senders``) have ``d = 0``: Y = 0, φ = 1, ρ[k] = exp(−β_k (1 − μ_k)²), and do
    not depend on their vector (zero gradient). The angle and dihedral terms need no further per-edge
    geometry: they are evaluated from Y inside the ``vismp_*`` kernels.

    Args:
        edge_vectors: [E, 3] ``R_j − R_i (+ shift)`` (Å), float32/float64.
        receivers, senders: [E] int64 (only compared, to find the self-loops).
        cutoff: r_c (Å), > 0.
        lmax: 1 or 2.
        means, betas: [K] μ_k (dimensionless) and β_k, dtype of ``edge_vectors``.
        alpha: α (1/Å).

    Returns:
        ``(harmonics [E, L], cutoff_weights [E], radial [E, K])`` with ``L = 3`` (lmax 1) or 8 (lmax 2), dtype of
        ``edge_vectors``.
    """
    is_self = receivers == senders
    squared = (edge_vectors * edge_vectors).sum(-1)
    ones = torch.ones_like(squared)
    safe = torch.sqrt(torch.where(is_self, ones, squared))
    distances = torch.where(is_self, torch.zeros_like(squared), safe)
    units = torch.where(is_self.unsqueeze(-1), torch.zeros_like(edge_vectors),
                        edge_vectors / safe.unsqueeze(-1))
    if lmax == 1:
        harmonics = units
    else:
        x, y, z = units[:, 0], units[:, 1], units[:, 2]
        sqrt3 = 3.0 ** 0.5
        harmonics = torch.stack([x, y, z, sqrt3 * x * z, sqrt3 * x * y, y * y - 0.5 * (x * x + z * z),
                                 sqrt3 * y * z, 0.5 * sqrt3 * (z * z - x * x)], dim=-1)
    phi = 0.5 * (torch.cos(distances * (torch.pi / cutoff)) + 1.0)
    phi = torch.where(distances < cutoff, phi, torch.zeros_like(phi))
    shifted = torch.exp(-alpha * distances).unsqueeze(-1) - means
    radial = zero_subnormals(torch.exp(-betas * shifted * shifted) * phi.unsqueeze(-1))
    return harmonics, phi, radial


def rgc_geometry(edge_vectors: Tensor, receivers: Tensor, senders: Tensor, cutoff: float, lmax: int,
                 means: Tensor, betas: Tensor, alpha: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Fused :func:`rgc_geometry_reference` (``torch.ops.viskrates.rgc_geometry``): one pass over the edges, no
    [E] or [E, K] temporaries beyond the outputs. Same arguments and results; float32/float64, CPU or CUDA.
    C++ backward to ``edge_vectors`` and, when they require grad (trainable RBF), to ``means`` and ``betas``;
    deterministic; no double backward (RuntimeError under ``create_graph=True``).

    Raises:
        ValueError: wrong shapes, dtypes or devices, lmax not 1 or 2, a non-positive or non-finite cutoff,
            a non-finite alpha.
    """
    harmonics, weights, radial = torch.ops.viskrates.rgc_geometry(edge_vectors, receivers, senders, cutoff, lmax,
                                                                  means, betas, alpha)
    return harmonics, weights, radial


# ---- SO3LR long-range pair energies (Kabylda et al., J. Am. Chem. Soc. (2025); FORMULAS §8, §9) ----------


def long_range_energy_reference(positions: Tensor, box: Optional[Tensor], row_ptr: Tensor, senders: Tensor,
                                shifts: Tensor, charges: Tensor, polarizabilities: Tensor, c6: Tensor, cutoff: float,
                                coulomb_constant: float, sigma: float, coulomb_switch_on: float,
                                dispersion_switch_on: float, dispersion_scale: float,
                                coulomb_kernel: str = "shifted_force") -> Tuple[Tensor, Tensor]:
    """SO3LR's long-range energies per atom, the specification of ``viskrates::long_range_energy``, built from
    :class:`viskrates.physics.Electrostatics` and :class:`viskrates.physics.QDODispersion`. The edge i→j has
    the vector ``v = R_j − R_i + shifts[e] @ box`` (as :func:`neighbor_list` forms it); each pair (i, j) is
    taken once, from its edge with i < j, counted when ``|v| < cutoff``, and its energy is assigned to atom i
    (the official per-atom split):

    * Coulomb, ``coulomb_kernel='shifted_force'`` (SO3LR's, :class:`viskrates.physics.Electrostatics`):
      ``ke·q_i·q_j·[V(d) − V(r_c) − (1 − f)·V'(r_c)·(d − r_c)]``, ``V(d) = erf(d/σ)/d``,
      ``f = S(d; coulomb_switch_on, cutoff)`` (shifted force blended in by the C∞ switch; FORMULAS §8);
      ``'switched_erf'`` (the PME hand-off's in-cutoff term, :class:`viskrates.physics.SwitchedErfCoulomb`):
      ``ke·q_i·q_j·V(d)·P(u)`` with OpenMM's switching function ``P = 1 − 10u³ + 15u⁴ − 6u⁵``,
      ``u = (d − coulomb_switch_on)/(cutoff − coulomb_switch_on)`` clamped to [0, 1];
    * vdW-QDO dispersion from the per-atom polarisabilities α and C6 coefficients
      (:meth:`QDODispersion.atomic_parameters`), times ``S(d; dispersion_switch_on, cutoff)`` (FORMULAS §9).

    Args:
        positions: [N, 3] (Å), float32/float64.
        box: [3, 3] periodic box (Å, rows are box vectors), or None (open boundaries; shifts unused).
        row_ptr: [N+1] int64 CSR offsets of the receivers. senders: [E] int64. shifts: [E, 3] integer multiples
            of the box vectors, dtype of positions. Every pair must be present in both directions, as
            :func:`neighbor_list` returns it.
        charges: [N] partial charges (e). polarizabilities: [N] α (bohr³). c6: [N] C6 (Eh·bohr⁶).
        cutoff: r_c (Å). coulomb_constant: ke (eV·Å/e²). sigma: σ (Å).
        coulomb_switch_on, dispersion_switch_on: where the two switches start (Å), in [0, cutoff).
        dispersion_scale: scale of the QDO damping length (SO3LR: 1.2).
        coulomb_kernel: ``'shifted_force'`` or ``'switched_erf'``.

    Returns:
        ``(coulomb_energies [N], dispersion_energies [N])`` in eV; their sums are the structure's energies.

    Raises:
        ValueError: an unknown ``coulomb_kernel``.
    """
    from .physics.dispersion import QDODispersion
    from .physics.electrostatics import Electrostatics
    from .physics.ewald import SwitchedErfCoulomb

    if coulomb_kernel == "shifted_force":
        electrostatics = Electrostatics(cutoff, sigma, coulomb_switch_on / cutoff)
        electrostatics.switch_on = coulomb_switch_on
    elif coulomb_kernel == "switched_erf":
        electrostatics = SwitchedErfCoulomb(cutoff, coulomb_switch_on, sigma)
    else:
        raise ValueError(f"coulomb_kernel must be 'shifted_force' or 'switched_erf', got {coulomb_kernel!r}")
    electrostatics.coulomb_constant = coulomb_constant
    dispersion = QDODispersion(cutoff, cutoff - dispersion_switch_on, dispersion_scale)
    dispersion.switch_on = dispersion_switch_on
    num_atoms = positions.shape[0]
    receivers = torch.repeat_interleave(torch.arange(num_atoms, device=row_ptr.device), row_ptr[1:] - row_ptr[:-1])
    once = receivers < senders
    first, second = receivers[once], senders[once]
    vectors = positions.index_select(0, second) - positions.index_select(0, first)
    if box is not None:
        vectors = vectors + shifts[once] @ box
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    kept = distances < cutoff
    first, second, distances = first[kept], second[kept], distances[kept]
    coulomb = electrostatics(charges, distances, first, second, first, num_atoms)
    pair = dispersion.pair_energies(polarizabilities.index_select(0, first), polarizabilities.index_select(0, second),
                                    c6.index_select(0, first), c6.index_select(0, second), distances)
    return coulomb, torch.zeros_like(charges).index_add_(0, first, pair)


def long_range_energy(positions: Tensor, box: Optional[Tensor], row_ptr: Tensor, senders: Tensor, shifts: Tensor,
                      charges: Tensor, polarizabilities: Tensor, c6: Tensor, cutoff: float, coulomb_constant: float,
                      sigma: float, coulomb_switch_on: float, dispersion_switch_on: float,
                      dispersion_scale: float, coulomb_kernel: str = "shifted_force") -> Tuple[Tensor, Tensor]:
    """Fused :func:`long_range_energy_reference` (``torch.ops.viskrates.long_range_energy``): one pass per
    receiver over its edges, forming the edge vectors from the positions; no per-pair tensors. Same arguments
    and results; float32/float64, CPU or CUDA. C++ backward to ``positions``, ``box`` (when it requires
    grad), ``charges``, ``polarizabilities`` and ``c6``, recomputing the pair terms; every atom's gradient is
    a sum over its own edges in a fixed order (deterministic, no atomics, no scatter). No double backward
    (RuntimeError under ``create_graph=True``).

    Raises:
        ValueError: wrong shapes, dtypes or devices, a non-positive or non-finite cutoff or sigma, a switch
            start outside [0, cutoff), a non-positive dispersion_scale, an unknown coulomb_kernel. Index values
            are trusted (consistent, in range, and every pair present in both directions).
    """
    coulomb, dispersion = torch.ops.viskrates.long_range_energy(positions, box, row_ptr, senders, shifts, charges,
                                                                polarizabilities, c6, cutoff, coulomb_constant,
                                                                sigma, coulomb_switch_on, dispersion_switch_on,
                                                                dispersion_scale, coulomb_kernel)
    return coulomb, dispersion
