"""Euclidean attention of SO3krates (Frank et al., Nat. Commun. 15, 6539 (2024), eqs. 7-10).

These functions are the reference (pure PyTorch) path: the per-edge attention coefficients and their
aggregation onto receivers. They are kept separate from the rest of the network because this is where
the fused kernel (``viskrates::euclidean_attention``, :func:`viskrates.ops.euclidean_attention`) plugs in: same
results without the [E, F] intermediates, with the filters given per row (one row per unordered pair in the
fused SO3krates) plus the graph in CSR form.

Edge convention (``viskrates.ops.neighbor_list``): edge e goes from sender ``j = senders[e]`` to
receiver ``i = receivers[e]``; receivers are sorted. Queries belong to the receiver, keys and values to
the sender. There is no softmax: coefficients are cutoff-weighted bilinear forms divided by a constant.
"""
from typing import Tuple

import torch
from torch import Tensor


def attention_coefficients(queries: Tensor, keys: Tensor, filters: Tensor, cutoff_values: Tensor,
                           receivers: Tensor, senders: Tensor, normalization: float) -> Tensor:
    """Per-edge, per-head coefficients ``α_e,h = φ_e · Σ_a q_i,h,a · w_e,h,a · k_j,h,a / normalization``.

    Args:
        queries: [N, H, D] per-atom queries (receiver side).
        keys: [N, H, D] per-atom keys (sender side).
        filters: [E, H, D] per-edge filters w.
        cutoff_values: [E] cutoff function φ(d_e).
        receivers, senders: [E] int64 atom indices.
        normalization: message normalisation (SO3LR: average number of neighbours).

    Returns:
        [E, H] coefficients, dtype of the inputs.
    """
    products = queries.index_select(0, receivers) * filters * keys.index_select(0, senders)
    return products.sum(-1) * (cutoff_values / normalization).unsqueeze(-1)


def invariant_attention(queries: Tensor, keys: Tensor, values: Tensor, filters: Tensor, cutoff_values: Tensor,
                        receivers: Tensor, senders: Tensor, normalization: float) -> Tensor:
    """Invariant branch: ``Δx_i,h,: = Σ_{e: receivers[e]=i} α_e,h · v_{senders[e],h,:}``.

    Args:
        queries, keys, values: [N, H, D] per-atom projections of the invariant features.
        filters: [E, H, D]; cutoff_values: [E]; receivers, senders: [E] int64; normalization: float
            (see :func:`attention_coefficients`).

    Returns:
        [N, H, D] aggregated update.
    """
    alpha = attention_coefficients(queries, keys, filters, cutoff_values, receivers, senders, normalization)
    messages = alpha.unsqueeze(-1) * values.index_select(0, senders)
    return torch.zeros_like(values).index_add_(0, receivers, messages)


def spherical_attention(queries: Tensor, keys: Tensor, filters: Tensor, cutoff_values: Tensor,
                        harmonics: Tensor, component_degrees: Tensor, receivers: Tensor, senders: Tensor,
                        normalization: float) -> Tensor:
    """Euclidean-variable branch: ``Δev_i,lm = Σ_{e: receivers[e]=i} α_e,l · Y_lm(r̂_e)``, one head per degree.

    Args:
        queries, keys: [N, L, D] per-atom projections, head l ↔ degree l+1.
        filters: [E, L, D]; cutoff_values: [E]; receivers, senders: [E] int64; normalization: float.
        harmonics: [E, C] spherical harmonics of the edge directions, C = (L+1)² − 1.
        component_degrees: [C] int64 head (degree slot) of every harmonic component.

    Returns:
        [N, C] aggregated update of the Euclidean variables.
    """
    alpha = attention_coefficients(queries, keys, filters, cutoff_values, receivers, senders, normalization)
    messages = alpha.index_select(1, component_degrees) * harmonics
    out = torch.zeros(queries.shape[0], harmonics.shape[1], dtype=harmonics.dtype, device=harmonics.device)
    return out.index_add_(0, receivers, messages)


def euclidean_attention(x_queries: Tensor, x_keys: Tensor, x_values: Tensor, x_filters: Tensor,
                        ev_queries: Tensor, ev_keys: Tensor, ev_filters: Tensor, harmonics: Tensor,
                        component_degrees: Tensor, cutoff_values: Tensor, receivers: Tensor, senders: Tensor,
                        normalization: float) -> Tuple[Tensor, Tensor]:
    """Both branches of one SO3krates attention block: returns ``(Δx [N, H, D], Δev [N, C])``.

    See :func:`invariant_attention` and :func:`spherical_attention` for the arguments.
    """
    dx = invariant_attention(x_queries, x_keys, x_values, x_filters, cutoff_values, receivers, senders,
                             normalization)
    dev = spherical_attention(ev_queries, ev_keys, ev_filters, cutoff_values, harmonics, component_degrees,
                              receivers, senders, normalization)
    return dx, dev
