"""Real spherical harmonics (degrees 1..4) and their rotation-invariant per-degree contraction."""
import math
from typing import List

import torch
from torch import Tensor, nn

_PI = math.pi
# Orthonormal ("integral"-normalised) real harmonics: Σ_m Y_lm² = (2l+1)/(4π) on the unit sphere.
_C1 = math.sqrt(3.0 / (4.0 * _PI))
_C2A = 0.5 * math.sqrt(15.0 / _PI)
_C2B = 0.25 * math.sqrt(5.0 / _PI)
_C2C = 0.25 * math.sqrt(15.0 / _PI)
_C3A = 0.25 * math.sqrt(35.0 / (2.0 * _PI))
_C3B = 0.5 * math.sqrt(105.0 / _PI)
_C3C = 0.25 * math.sqrt(21.0 / (2.0 * _PI))
_C3D = 0.25 * math.sqrt(7.0 / _PI)
_C3E = 0.25 * math.sqrt(105.0 / _PI)
_C4A = 0.75 * math.sqrt(35.0 / _PI)
_C4B = 0.75 * math.sqrt(35.0 / (2.0 * _PI))
_C4C = 0.75 * math.sqrt(5.0 / _PI)
_C4D = 0.75 * math.sqrt(5.0 / (2.0 * _PI))
_C4E = (3.0 / 16.0) * math.sqrt(1.0 / _PI)
_C4F = (3.0 / 8.0) * math.sqrt(5.0 / _PI)
_C4G = (3.0 / 16.0) * math.sqrt(35.0 / _PI)


def num_spherical_components(lmax: int) -> int:
    """Number of components of degrees 1..lmax: Σ (2l+1) = (lmax+1)² − 1."""
    return (lmax + 1) * (lmax + 1) - 1


def real_spherical_harmonics(unit_vectors: Tensor, lmax: int = 4) -> Tensor:
    """Orthonormal real spherical harmonics ``Y_lm(r̂)`` of degrees l = 1..lmax (no l = 0), lmax ≤ 4.

    Components are concatenated by degree, m = −l..l within a degree, in the convention of the SO3LR
    specification (models/so3lr/FORMULAS.md §2): l=1 is ``√(3/4π)·(y, z, x)``, and so on. The
    normalisation is the "integral" one, ``Σ_m Y_lm² = (2l+1)/(4π)``. The polynomials assume
    ``|r̂| = 1``.

    Args:
        unit_vectors: [E, 3] unit vectors (x, y, z), any float dtype.
        lmax: highest degree, 1..4.

    Returns:
        [E, (lmax+1)² − 1] harmonics, same dtype.

    Raises:
        ValueError: if lmax is not in 1..4.
    """
    if lmax < 1 or lmax > 4:
        raise ValueError(f"real_spherical_harmonics supports lmax in 1..4, got {lmax}")
    x = unit_vectors[:, 0]
    y = unit_vectors[:, 1]
    z = unit_vectors[:, 2]
    out: List[Tensor] = [_C1 * y, _C1 * z, _C1 * x]
    if lmax >= 2:
        xx = x * x
        yy = y * y
        zz = z * z
        xy = x * y
        out += [_C2A * xy, _C2A * y * z, _C2B * (3.0 * zz - 1.0), _C2A * x * z, _C2C * (xx - yy)]
        if lmax >= 3:
            out += [_C3A * y * (3.0 * xx - yy), _C3B * xy * z, _C3C * y * (5.0 * zz - 1.0),
                    _C3D * (5.0 * zz * z - 3.0 * z), _C3C * x * (5.0 * zz - 1.0), _C3E * (xx - yy) * z,
                    _C3A * x * (xx - 3.0 * yy)]
            if lmax >= 4:
                out += [_C4A * xy * (xx - yy), _C4B * y * (3.0 * xx - yy) * z, _C4C * xy * (7.0 * zz - 1.0),
                        _C4D * y * (7.0 * zz * z - 3.0 * z), _C4E * (35.0 * zz * zz - 30.0 * zz + 3.0),
                        _C4D * x * (7.0 * zz * z - 3.0 * z), _C4F * (xx - yy) * (7.0 * zz - 1.0),
                        _C4B * x * (xx - 3.0 * yy) * z,
                        _C4G * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy))]
    return torch.stack(out, dim=-1)


class DegreeContraction(nn.Module):
    """Per-degree invariant ``c_l(v) = (2l+1)^(−1/2) · Σ_m v_lm²`` of features of degrees 1..lmax.

    This is the Clebsch–Gordan coupling of a degree-l feature with itself to degree 0
    (⟨l m; l m | 0 0⟩ = 1/√(2l+1)), the invariant used by SO3krates' attention filters and exchange block
    (Frank et al., Nat. Commun. 15, 6539 (2024)). It is invariant under rotations and under any
    orthogonal change of basis within a degree.

    Args:
        lmax: highest degree.

    Shapes:
        forward(v [..., (lmax+1)² − 1]) -> [..., lmax], dtype of ``v``.
    """

    def __init__(self, lmax: int):
        super().__init__()
        weights = torch.zeros(num_spherical_components(lmax), lmax, dtype=torch.float64)
        for l in range(1, lmax + 1):
            weights[l * l - 1:(l + 1) * (l + 1) - 1, l - 1] = 1.0 / math.sqrt(2 * l + 1)
        self.register_buffer("weights", weights)

    def forward(self, v: Tensor) -> Tensor:
        return (v * v) @ self.weights


def component_degrees(lmax: int) -> Tensor:
    """[(lmax+1)² − 1] int64: the zero-based degree slot (l − 1) of every harmonic component."""
    return torch.cat([torch.full((2 * l + 1,), l - 1, dtype=torch.long) for l in range(1, lmax + 1)])
