"""Real spherical harmonics (degrees 1..4) and their rotation-invariant per-degree contraction."""
import math
from typing import List

import torch
from torch import Tensor, nn

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
    # Orthonormal ("integral"-normalised) prefactors, so that Σ_m Y_lm² = (2l+1)/(4π); computed here
    # because TorchScript cannot read module-level float constants.
    pi = math.pi
    c1 = math.sqrt(3.0 / (4.0 * pi))
    c2a = 0.5 * math.sqrt(15.0 / pi)
    c2b = 0.25 * math.sqrt(5.0 / pi)
    c2c = 0.25 * math.sqrt(15.0 / pi)
    c3a = 0.25 * math.sqrt(35.0 / (2.0 * pi))
    c3b = 0.5 * math.sqrt(105.0 / pi)
    c3c = 0.25 * math.sqrt(21.0 / (2.0 * pi))
    c3d = 0.25 * math.sqrt(7.0 / pi)
    c3e = 0.25 * math.sqrt(105.0 / pi)
    c4a = 0.75 * math.sqrt(35.0 / pi)
    c4b = 0.75 * math.sqrt(35.0 / (2.0 * pi))
    c4c = 0.75 * math.sqrt(5.0 / pi)
    c4d = 0.75 * math.sqrt(5.0 / (2.0 * pi))
    c4e = (3.0 / 16.0) * math.sqrt(1.0 / pi)
    c4f = (3.0 / 8.0) * math.sqrt(5.0 / pi)
    c4g = (3.0 / 16.0) * math.sqrt(35.0 / pi)
    x = unit_vectors[:, 0]
    y = unit_vectors[:, 1]
    z = unit_vectors[:, 2]
    out: List[Tensor] = [c1 * y, c1 * z, c1 * x]
    if lmax >= 2:
        xx = x * x
        yy = y * y
        zz = z * z
        xy = x * y
        out += [c2a * xy, c2a * y * z, c2b * (3.0 * zz - 1.0), c2a * x * z, c2c * (xx - yy)]
        if lmax >= 3:
            out += [c3a * y * (3.0 * xx - yy), c3b * xy * z, c3c * y * (5.0 * zz - 1.0),
                    c3d * (5.0 * zz * z - 3.0 * z), c3c * x * (5.0 * zz - 1.0), c3e * (xx - yy) * z,
                    c3a * x * (xx - 3.0 * yy)]
            if lmax >= 4:
                out += [c4a * xy * (xx - yy), c4b * y * (3.0 * xx - yy) * z, c4c * xy * (7.0 * zz - 1.0),
                        c4d * y * (7.0 * zz * z - 3.0 * z), c4e * (35.0 * zz * zz - 30.0 * zz + 3.0),
                        c4d * x * (7.0 * zz * z - 3.0 * z), c4f * (xx - yy) * (7.0 * zz - 1.0),
                        c4b * x * (xx - 3.0 * yy) * z,
                        c4g * (xx * (xx - 3.0 * yy) - yy * (3.0 * xx - yy))]
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
        self.lmax = lmax

    def forward(self, v: Tensor) -> Tensor:
        # Python-float weights (doubles, also in TorchScript) keep 1/√(2l+1) exact in any dtype.
        out: List[Tensor] = []
        for l in range(1, self.lmax + 1):
            out.append((v[..., l * l - 1:(l + 1) * (l + 1) - 1] ** 2).sum(-1) * (1.0 / math.sqrt(2 * l + 1)))
        return torch.stack(out, dim=-1)


def component_degrees(lmax: int) -> Tensor:
    """[(lmax+1)² − 1] int64: the zero-based degree slot (l − 1) of every harmonic component."""
    return torch.cat([torch.full((2 * l + 1,), l - 1, dtype=torch.long) for l in range(1, lmax + 1)])
