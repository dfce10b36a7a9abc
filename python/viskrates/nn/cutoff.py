"""Cutoff and switching functions of interatomic distance.

All functions are elementwise, differentiable, TorchScript-compatible and keep the dtype of their input.
"""
import math

import torch
from torch import Tensor


def polynomial_cutoff(distances: Tensor, cutoff: float) -> Tensor:
    """PhysNet polynomial cutoff ``φ(d) = 1 − 6u⁵ + 15u⁴ − 10u³`` with ``u = d/cutoff``; 0 for d ≥ cutoff.

    φ goes from 1 at d = 0 to 0 at the cutoff with vanishing first and second derivatives there
    (Unke & Meuwly, J. Chem. Theory Comput. 15, 3678 (2019), eq. 9; used by SO3krates, Frank et al.,
    Nat. Commun. 15, 6539 (2024)).

    Args:
        distances: [*] distances (Å, any float dtype).
        cutoff: cutoff radius (same unit).

    Returns:
        [*] values in [0, 1], same dtype as ``distances``.
    """
    u = distances / cutoff
    u3 = u * u * u
    value = 1.0 - 6.0 * u3 * u * u + 15.0 * u3 * u - 10.0 * u3
    return torch.where(distances < cutoff, value, torch.zeros_like(value))


def _exp_inverse(t: Tensor) -> Tensor:
    """``exp(−1/t)`` for t > 0, else 0 (C∞ at t = 0); the gradient stays finite for t ≤ 0."""
    positive = t > 0
    safe = torch.where(positive, t, torch.ones_like(t))
    return torch.where(positive, torch.exp(-1.0 / safe), torch.zeros_like(t))


def smooth_switch(r: Tensor, x_on: float, x_off: float) -> Tensor:
    """C∞ switch ``S(r) = σ(1−c) / (σ(1−c) + σ(c))``, ``σ(t) = exp(−1/t)``, ``c = (r − x_on)/(x_off − x_on)``.

    S = 1 for r ≤ x_on, S = 0 for r ≥ x_off, smooth (all derivatives continuous) in between. This is the
    switch of the SO3LR long-range terms and ZBL (Kabylda et al., J. Am. Chem. Soc. 147 (2025);
    numerical specification: models/so3lr/FORMULAS.md §6).

    Args:
        r: [*] distances (Å, any float dtype).
        x_on: where the switch starts to fall below 1 (same unit as r).
        x_off: where it reaches 0; must be > x_on.

    Returns:
        [*] values in [0, 1], same dtype as ``r``.

    Raises:
        ValueError: if ``x_off <= x_on``.
    """
    if not x_off > x_on:
        raise ValueError(f"smooth_switch needs x_off > x_on, got x_on={x_on}, x_off={x_off}")
    c = (r - x_on) / (x_off - x_on)
    off = _exp_inverse(1.0 - c)
    on = _exp_inverse(c)
    # max(c, 1 − c) ≥ ½, so at least one of the two terms is ≥ e⁻² and the denominator never vanishes.
    return off / (off + on)


def cosine_cutoff(distances: Tensor, cutoff: float) -> Tensor:
    """Cosine cutoff ``φ(d) = ½(cos(πd/cutoff) + 1)`` for d < cutoff, else 0.

    φ(0) = 1 and φ falls to 0 at the cutoff with a vanishing first derivative (Behler, J. Chem. Phys.
    134, 074106 (2011), eq. 4; the cutoff of ViSNet, Wang et al., Nat. Commun. 15, 313 (2024), and of
    PyTorch Geometric's ``CosineCutoff``).

    Args:
        distances: [*] distances (Å, any float dtype).
        cutoff: cutoff radius (same unit).

    Returns:
        [*] values in [0, 1], same dtype as ``distances``.
    """
    value = 0.5 * (torch.cos(distances * (math.pi / cutoff)) + 1.0)
    return torch.where(distances < cutoff, value, torch.zeros_like(value))
