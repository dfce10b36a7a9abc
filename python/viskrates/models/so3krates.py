"""SO3krates: transformer with Euclidean self-attention (Frank et al., Nat. Commun. 15, 6539 (2024)).

This module holds the message-passing network (embedding, attention layers) in the variant used by
SO3LR (Kabylda et al., J. Am. Chem. Soc. 2025): Bernstein radial basis, PhysNet cutoff, Euclidean
variables (EV) of degrees 1..4, attention without softmax normalised by a constant, a SpookyNet-style
total-charge embedding, layer norms, a residual MLP and an exchange block. The equations with every
constant are in models/so3lr/FORMULAS.md §2-§4; the output heads and the physics terms are in
:mod:`viskrates.models.so3lr`.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.attention import euclidean_attention
from ..nn.cutoff import polynomial_cutoff
from ..nn.radial import BernsteinBasis
from ..nn.spherical_harmonics import (DegreeContraction, component_degrees, num_spherical_components,
                                      real_spherical_harmonics)
from ..ops import pair_filter_graph, vismp_graph


def layer_norm(x: Tensor, scale: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Layer normalisation over the last axis with flax's variance ``E[x²] − E[x]²`` (clipped at 0).

    Args:
        x: [N, F]; scale, bias: [F]; eps: added to the variance (SO3LR: 1e-6).

    Returns:
        [N, F] ``(x − μ)/√(var + eps) · scale + bias``.
    """
    mean = x.mean(-1, keepdim=True)
    variance = torch.clamp((x * x).mean(-1, keepdim=True) - mean * mean, min=0.0)
    return (x - mean) * torch.rsqrt(variance + eps) * scale + bias


def _filter(radial_hidden: Tensor, sph_hidden: Tensor, radial_weight: Tensor, radial_bias: Tensor,
            sph_weight: Tensor, sph_bias: Tensor) -> Tensor:
    """``Dense(radial_hidden) + Dense(sph_hidden)`` (torch weight layout [out, in]) without a separate sum pass."""
    out = torch.addmm(radial_bias + sph_bias, radial_hidden, radial_weight.t())
    # in place: an out-of-place addmm would first copy the [P, F] sum (15 of the ~470 ms of a fused SO3LR step
    # at 1,014 atoms); addmm's backward does not need its output
    return out.addmm_(sph_hidden, sph_weight.t())


class ChargeEmbedding(nn.Module):
    """SpookyNet-style embedding of a per-structure scalar ψ (total charge) into atomic features.

    For a structure with value ψ and row ``s = 1 if ψ < 0 else 0`` (Unke et al., Nat. Commun. 12, 7273
    (2021), eqs. 9-11; FORMULAS §3)::

        y_i = softplus(q_{Z_i} · k_s / √F),  a_i = ψ · y_i / Σ_j y_j,  h_i = a_i · v_s,
        E_i = h_i + silu(silu(h_i) W0) W1

    so ψ = 0 gives exactly 0. Float32 emulation (FORMULAS §12.3): the official float64 run forms
    ``q·k/√F``, the softplus and ``Σ y`` in float32; this is reproduced (they depend only on Z and ψ, so
    no gradient flows through them). Their last bits cannot be reproduced (XLA's float32 summation order), which
    leaves ~1e-7 eV of noise for charged structures.

    Args:
        num_features: F.
        num_elements: rows of the element table (atomic numbers 0..num_elements−1).

    Shapes:
        forward(atomic_numbers [N] int64, psi [B], batch [N] int64, num_graphs) -> [N, F].
    """

    def __init__(self, num_features: int = 128, num_elements: int = 119):
        super().__init__()
        self.num_features = num_features
        self.element_queries = nn.Parameter(torch.randn(num_elements, num_features))
        self.keys = nn.Parameter(torch.randn(2, num_features))
        self.values = nn.Parameter(torch.randn(2, num_features))
        self.residual_in = nn.Linear(num_features, num_features, bias=False)
        self.residual_out = nn.Linear(num_features, num_features, bias=False)

    def forward(self, atomic_numbers: Tensor, psi: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        row = (psi < 0).to(torch.long).index_select(0, batch)
        queries = self.element_queries.index_select(0, atomic_numbers).float()
        keys = self.keys.index_select(0, row).float()
        # float32 dot product rounded once (from float64), then softplus as JAX forms it (logaddexp(x, 0))
        s = ((queries.double() * keys.double()).sum(-1).float() / math.sqrt(self.num_features))
        y = torch.clamp(s, min=0.0) + torch.log1p(torch.exp(-torch.abs(s)))
        # float32 Σy as in the official code, but accumulated in float64 and rounded once so that it does
        # not depend on the atom order (a float32 running sum would break permutation invariance at ~1e-7 eV)
        y_sum = torch.zeros(num_graphs, dtype=torch.float64, device=y.device).index_add_(0, batch, y.double())
        y_sum = y_sum.float()
        dtype = self.values.dtype
        weight = psi.index_select(0, batch).to(dtype) * y.to(dtype) / y_sum.index_select(0, batch).to(dtype)
        h = weight.unsqueeze(-1) * self.values.index_select(0, row)
        return h + self.residual_out(F.silu(self.residual_in(F.silu(h))))


class SO3kratesLayer(nn.Module):
    """One SO3krates layer: Euclidean attention block, then layer norm, residual MLP, exchange block,
    layer norm (Frank et al. 2024; FORMULAS §4).

    Attention (per directed edge j→i, no softmax)::

        s_ij = c(ev_j − ev_i)                       degree-wise invariants (DegreeContraction)
        w_ij = MLP_rad(b(d_ij)) + MLP_sph(s_ij)     two such filters, w1 (invariant) and w2 (EV)
        α1_ij,h = φ(d_ij) Σ_a q1_i,h,a w1_ij,h,a k1_j,h,a / n,   Δx_i,h = Σ_j α1_ij,h v1_j,h
        α2_ij,l = φ(d_ij) Σ_a q2_i,l,a w2_ij,l,a k2_j,l,a / n,   Δev_i,lm = Σ_j α2_ij,l Y_lm(r̂_ij)

    with per-head projections ``q_h = W_h x_h`` (matrices act from the left on the head's slice of x).
    Update: ``x ← LN1(x + Δx)``, ``ev ← ev + Δev``, ``x ← x + MLP(silu(x))``,
    ``[cx | cev] = Dense([x, c(ev)])``, ``x ← LN2(x + cx)``, ``ev_l ← (1 + cev_l) ev_l``.

    Args:
        num_features: F (SO3LR: 128); num_heads: H, must equal lmax (SO3LR: 4); lmax: highest EV degree;
        num_basis: K radial functions; spherical_hidden: hidden width of the spherical filters (32);
        normalization: n, the constant message normaliser (SO3LR: average number of neighbours);
        eps: layer-norm epsilon (SO3LR: 1e-6).

    Shapes:
        forward(x [N, F], ev [N, C], radial_basis [E, K], cutoff_values [E], harmonics [E, C],
        receivers [E], senders [E]) -> (x [N, F], ev [N, C]), C = (lmax+1)² − 1.
    """

    def __init__(self, num_features: int = 128, num_heads: int = 4, lmax: int = 4, num_basis: int = 32,
                 spherical_hidden: int = 32, normalization: float = 1.0, eps: float = 1e-6):
        super().__init__()
        if num_heads != lmax or num_features % num_heads != 0:
            raise ValueError("SO3krates needs num_heads == lmax (one EV head per degree) and num_features "
                             f"divisible by num_heads; got num_features={num_features}, num_heads={num_heads}, "
                             f"lmax={lmax}")
        self.num_features = num_features
        self.num_heads = num_heads
        self.head_dim = num_features // num_heads
        self.normalization = float(normalization)
        self.eps = float(eps)
        self.radial_filter1_in = nn.Linear(num_basis, num_features)
        self.radial_filter1_out = nn.Linear(num_features, num_features)
        self.spherical_filter1_in = nn.Linear(lmax, spherical_hidden)
        self.spherical_filter1_out = nn.Linear(spherical_hidden, num_features)
        self.radial_filter2_in = nn.Linear(num_basis, num_features)
        self.radial_filter2_out = nn.Linear(num_features, num_features)
        self.spherical_filter2_in = nn.Linear(lmax, spherical_hidden)
        self.spherical_filter2_out = nn.Linear(spherical_hidden, num_features)
        scale = 1.0 / math.sqrt(self.head_dim)
        # [head, out, in]; q1, k1, v1 act on the invariant heads, q2, k2 on the same slices for the EV heads
        self.query1 = nn.Parameter(scale * torch.randn(num_heads, self.head_dim, self.head_dim))
        self.key1 = nn.Parameter(scale * torch.randn(num_heads, self.head_dim, self.head_dim))
        self.value1 = nn.Parameter(scale * torch.randn(num_heads, self.head_dim, self.head_dim))
        self.query2 = nn.Parameter(scale * torch.randn(num_heads, self.head_dim, self.head_dim))
        self.key2 = nn.Parameter(scale * torch.randn(num_heads, self.head_dim, self.head_dim))
        self.norm1_scale = nn.Parameter(torch.ones(num_features))
        self.norm1_bias = nn.Parameter(torch.zeros(num_features))
        self.residual_in = nn.Linear(num_features, num_features)
        self.residual_out = nn.Linear(num_features, num_features)
        self.exchange = nn.Linear(num_features + lmax, num_features + lmax)
        self.norm2_scale = nn.Parameter(torch.ones(num_features))
        self.norm2_bias = nn.Parameter(torch.zeros(num_features))
        self.contraction = DegreeContraction(lmax)
        self.register_buffer("component_degrees", component_degrees(lmax), persistent=False)

    def forward(self, x: Tensor, ev: Tensor, radial_basis: Tensor, cutoff_values: Tensor, harmonics: Tensor,
                receivers: Tensor, senders: Tensor):
        n = x.shape[0]
        e = radial_basis.shape[0]
        h = self.num_heads
        d = self.head_dim
        sph = self.contraction(ev.index_select(0, senders) - ev.index_select(0, receivers))
        filter1 = _filter(F.silu(self.radial_filter1_in(radial_basis)), F.silu(self.spherical_filter1_in(sph)),
                          self.radial_filter1_out.weight, self.radial_filter1_out.bias,
                          self.spherical_filter1_out.weight, self.spherical_filter1_out.bias)
        filter2 = _filter(F.silu(self.radial_filter2_in(radial_basis)), F.silu(self.spherical_filter2_in(sph)),
                          self.radial_filter2_out.weight, self.radial_filter2_out.bias,
                          self.spherical_filter2_out.weight, self.spherical_filter2_out.bias)
        # all five per-head projections in one batched product: [H, 5D, D] x [H, D, N]
        weights = torch.cat([self.query1, self.key1, self.value1, self.query2, self.key2], dim=1)
        projected = torch.bmm(weights, x.view(n, h, d).permute(1, 2, 0)).permute(2, 0, 1)
        q1, k1, v1, q2, k2 = projected.split(d, dim=-1)
        dx, dev = euclidean_attention(q1, k1, v1, filter1.view(e, h, d), q2, k2, filter2.view(e, h, d),
                                      harmonics, self.component_degrees, cutoff_values, receivers, senders,
                                      self.normalization)
        return self._update(x, ev, dx, dev)

    def forward_fused(self, x: Tensor, ev: Tensor, pair_basis: Tensor, cutoff_values: Tensor, harmonics: Tensor,
                      row_ptr: Tensor, receivers: Tensor, senders: Tensor, col_ptr: Tensor, col_edges: Tensor,
                      pair_edges: Tensor, filter_index: Tensor, filter_ptr: Tensor, filter_edges: Tensor,
                      ev_is_zero: bool):
        """The same layer on the fused path: filters once per unordered pair, attention by the
        ``viskrates::euclidean_attention`` op.

        Both filters are symmetric in the pair (they depend on |r_ij| and on the per-degree norms of
        ev_j − ev_i), so the two directions of a pair share one row; this halves the filter MLPs, which
        dominate the cost. ``pair_basis`` [P, K] is the radial basis b(d_p) per pair, ``harmonics`` [E, C]
        and ``cutoff_values`` [E] per edge, ``pair_edges`` [P] the edge i→j (i < j) of every pair,
        ``filter_index, filter_ptr, filter_edges`` the pair rows of the edges
        (:func:`viskrates.ops.pair_filter_graph`) and ``row_ptr, col_ptr, col_edges`` from
        :func:`viskrates.ops.vismp_graph`. ``ev_is_zero``: ev is exactly 0 (first layer), so the spherical
        filters are constants. Returns ``(x [N, F], ev [N, C])`` equal to :meth:`forward` up to rounding.
        """
        n = x.shape[0]
        p = pair_basis.shape[0]
        h = self.num_heads
        d = self.head_dim
        radial_hidden1 = F.silu(self.radial_filter1_in(pair_basis))
        radial_hidden2 = F.silu(self.radial_filter2_in(pair_basis))
        if ev_is_zero:
            # c(0) = 0: the spherical filters are their (constant) response to a zero input
            sph_out1 = self.spherical_filter1_out(F.silu(self.spherical_filter1_in.bias))
            sph_out2 = self.spherical_filter2_out(F.silu(self.spherical_filter2_in.bias))
            filter1 = torch.addmm(self.radial_filter1_out.bias + sph_out1, radial_hidden1,
                                  self.radial_filter1_out.weight.t())
            filter2 = torch.addmm(self.radial_filter2_out.bias + sph_out2, radial_hidden2,
                                  self.radial_filter2_out.weight.t())
        else:
            first = receivers.index_select(0, pair_edges)
            second = senders.index_select(0, pair_edges)
            sph = self.contraction(ev.index_select(0, second) - ev.index_select(0, first))
            filter1 = _filter(radial_hidden1, F.silu(self.spherical_filter1_in(sph)), self.radial_filter1_out.weight,
                              self.radial_filter1_out.bias, self.spherical_filter1_out.weight,
                              self.spherical_filter1_out.bias)
            filter2 = _filter(radial_hidden2, F.silu(self.spherical_filter2_in(sph)), self.radial_filter2_out.weight,
                              self.radial_filter2_out.bias, self.spherical_filter2_out.weight,
                              self.spherical_filter2_out.bias)
        weights = torch.cat([self.query1, self.key1, self.value1, self.query2, self.key2], dim=1)
        projected = torch.bmm(weights, x.view(n, h, d).permute(1, 2, 0)).permute(2, 0, 1)
        q1, k1, v1, q2, k2 = projected.split(d, dim=-1)
        dx, dev = torch.ops.viskrates.euclidean_attention(
            row_ptr, receivers, senders, col_ptr, col_edges, filter_index, filter_ptr, filter_edges, q1, k1, v1,
            filter1.view(p, h, d), q2, k2, filter2.view(p, h, d), harmonics, cutoff_values, self.normalization)
        return self._update(x, ev, dx, dev)

    def _update(self, x: Tensor, ev: Tensor, dx: Tensor, dev: Tensor):
        """Everything after the attention: layer norm, residual MLP, exchange block (FORMULAS §4)."""
        n = x.shape[0]
        x = layer_norm(x + dx.reshape(n, self.num_features), self.norm1_scale, self.norm1_bias, self.eps)
        ev = ev + dev
        x = x + self.residual_out(F.silu(self.residual_in(F.silu(x))))
        exchanged = self.exchange(torch.cat([x, self.contraction(ev)], dim=-1))
        x = layer_norm(x + exchanged[:, :self.num_features], self.norm2_scale, self.norm2_bias, self.eps)
        ev = ev * (1.0 + exchanged[:, self.num_features:].index_select(1, self.component_degrees))
        return x, ev


class SO3krates(nn.Module):
    """SO3krates feature network: atomic numbers, total charge and short-range edges -> atomic features.

    Frank et al., "A Euclidean transformer for fast and stable machine learned force fields",
    Nat. Commun. 15, 6539 (2024), in the configuration of SO3LR (Kabylda et al., J. Am. Chem. Soc.
    2025; FORMULAS §2-§4). Embedding ``x⁰ = (E_Z[Z] + E_Q)/√3`` (the third term of the official model,
    the spin embedding, is exactly 0 for its only supported value S = 0 and is omitted), ``ev⁰ = 0``,
    then ``num_layers`` :class:`SO3kratesLayer`.

    Args:
        num_features: F; num_heads: H (= lmax); lmax: highest EV degree (≤ 4); num_layers;
        num_basis: K Bernstein functions; gamma: Bernstein γ (Å⁻¹); cutoff: short-range cutoff (Å) of
        the PhysNet cutoff function; normalization: attention normaliser; num_elements: embedding rows;
        backend: ``'reference'`` (pure PyTorch, double backward for training on forces) or ``'fused'`` (filters
        once per unordered pair and the ``viskrates::euclidean_attention`` op with its C++ backward; same
        results up to rounding; no double backward, RuntimeError under ``create_graph=True``).

    Shapes:
        forward(atomic_numbers [N] int64, edge_vectors [E, 3] Å (neighbour minus centre),
        receivers [E], senders [E] int64 (receiver-sorted, both directions of every pair),
        total_charge [B] e, batch [N] int64, num_graphs) -> features [N, F], dtype of the parameters.
        Edges must be shorter than ``cutoff``; longer ones contribute 0. The fused backend also needs every
        edge i→j to have exactly one reverse edge j→i and no self-loops (ValueError otherwise), as
        :func:`viskrates.ops.neighbor_list` returns them.

    Raises:
        ValueError: an unknown backend.
    """

    backend: str

    def __init__(self, num_features: int = 128, num_heads: int = 4, lmax: int = 4, num_layers: int = 3,
                 num_basis: int = 32, gamma: float = 0.94486308097839355, cutoff: float = 4.5,
                 normalization: float = 13.168995780096482, num_elements: int = 119, backend: str = "reference"):
        super().__init__()
        if backend not in ("reference", "fused"):
            raise ValueError(f"SO3krates backend must be 'reference' or 'fused', got {backend!r}")
        self.backend = backend
        self.num_features = num_features
        self.lmax = lmax
        self.cutoff = float(cutoff)
        self.element_embedding = nn.Parameter(torch.randn(num_elements, num_features))
        self.charge_embedding = ChargeEmbedding(num_features, num_elements)
        self.radial_basis = BernsteinBasis(num_basis, gamma)
        self.register_buffer("harmonic_degrees", component_degrees(lmax), persistent=False)
        self.layers = nn.ModuleList([SO3kratesLayer(num_features, num_heads, lmax, num_basis, 32, normalization)
                                     for _ in range(num_layers)])

    def forward(self, atomic_numbers: Tensor, edge_vectors: Tensor, receivers: Tensor, senders: Tensor,
                total_charge: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        cutoff_values = polynomial_cutoff(distances, self.cutoff)
        x = (self.element_embedding.index_select(0, atomic_numbers)
             + self.charge_embedding(atomic_numbers, total_charge, batch, num_graphs)) / math.sqrt(3.0)
        ev = torch.zeros(x.shape[0], num_spherical_components(self.lmax), dtype=x.dtype, device=x.device)
        if self.backend == "fused":
            return self._layers_fused(x, ev, edge_vectors, distances, cutoff_values, receivers, senders)
        harmonics = real_spherical_harmonics(edge_vectors / distances.unsqueeze(-1), self.lmax)
        radial_basis = self.radial_basis(distances)
        for layer in self.layers:
            x, ev = layer(x, ev, radial_basis, cutoff_values, harmonics, receivers, senders)
        return x

    def _layers_fused(self, x: Tensor, ev: Tensor, edge_vectors: Tensor, distances: Tensor, cutoff_values: Tensor,
                      receivers: Tensor, senders: Tensor) -> Tensor:
        n = x.shape[0]
        row_ptr, col_ptr, col_edges = vismp_graph(receivers, senders, n)
        pair_edges, filter_index, filter_ptr, filter_edges = pair_filter_graph(receivers, senders, n)
        pair_distances = distances.index_select(0, pair_edges)
        pair_basis = self.radial_basis(pair_distances)
        # The reverse edge's vector is exactly the negated one, so Y_lm(−r̂) = (−1)^l Y_lm(r̂) holds bit for bit:
        # the harmonics are evaluated once per pair.
        pair_harmonics = real_spherical_harmonics(
            edge_vectors.index_select(0, pair_edges) / pair_distances.unsqueeze(-1), self.lmax)
        parity = 1.0 - 2.0 * ((self.harmonic_degrees + 1) % 2).to(x.dtype)
        sign = torch.where((receivers < senders).unsqueeze(-1), torch.ones_like(parity), parity)
        harmonics = pair_harmonics.index_select(0, filter_index) * sign
        index = 0
        for layer in self.layers:
            x, ev = layer.forward_fused(x, ev, pair_basis, cutoff_values, harmonics, row_ptr, receivers, senders,
                                        col_ptr, col_edges, pair_edges, filter_index, filter_ptr, filter_edges,
                                        index == 0)
            index += 1
        return x
