"""Radial basis functions of interatomic distance."""
import math

import torch
from torch import Tensor, nn


class BernsteinBasis(nn.Module):
    """Exponential Bernstein polynomials ``b_k(d) = C(K−1, k) · x^k · (1 − x)^(K−1−k)``, ``x = exp(−γd)``.

    The radial basis of SO3krates/SO3LR (Frank et al., Nat. Commun. 15, 6539 (2024); Unke et al.,
    SpookyNet, Nat. Commun. 12, 7273 (2021), eq. 5). It is evaluated in log space,
    ``exp(log C + k·log x + (K−1−k)·log(1−x))`` with ``log x = −γd``, which is stable for large K and
    equal to the official SO3LR evaluation (models/so3lr/FORMULAS.md §2), except that values below the
    dtype's smallest normal number are 0. The basis does not vanish at any cutoff: multiply by a cutoff
    function.

    Args:
        num_basis: K, the number of functions (SO3LR: 32).
        gamma: γ in 1/length-unit (SO3LR: 0.94486308097839355 Å⁻¹, the float32 value of its parameter).

    Shapes:
        forward(distances [E]) -> [E, K], dtype of ``distances``. Distances must be > 0.
    """

    def __init__(self, num_basis: int, gamma: float):
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.num_basis = num_basis
        self.gamma = float(gamma)
        # just above the logarithms of the smallest normal float32 and float64 numbers (1.18e-38, 2.23e-308), so
        # that exp() of a larger argument is normal after rounding
        self.log_smallest_normal_float32 = -87.0
        self.log_smallest_normal_float64 = -708.0
        # The binomial coefficients are exact integers in an int64 buffer: a float buffer would be rounded by
        # a float32 round trip of the module, and TorchScript builds torch.tensor(List[float]) via float32.
        self.register_buffer("binomials", torch.tensor([math.comb(num_basis - 1, k) for k in range(num_basis)]),
                             persistent=False)

    def forward(self, distances: Tensor) -> Tensor:
        log_binomial = torch.log(self.binomials.to(torch.float64)).to(distances.dtype)
        k = torch.arange(self.num_basis, dtype=distances.dtype, device=distances.device)
        scaled = (-self.gamma * distances).unsqueeze(-1)  # log x
        log_one_minus_x = torch.log(-torch.expm1(scaled))
        exponent = log_binomial + k * scaled + (self.num_basis - 1 - k) * log_one_minus_x
        # Values that would be subnormal are set to 0: they cannot change a sum of the working precision, but
        # subnormal operands make x86 arithmetic several times slower (in float32 about 3 % of SO3LR's basis
        # values at 4.5 Å are subnormal, which made its filter matrix products 4× slower).
        floor = self.log_smallest_normal_float64
        if distances.dtype == torch.float32:
            floor = self.log_smallest_normal_float32
        return torch.exp(exponent.masked_fill(exponent < floor, float("-inf")))


def zero_subnormals(values: Tensor) -> Tensor:
    """``values`` with the entries of magnitude below the dtype's smallest normal number (float32 1.18e-38,
    float64 2.23e-308) set to 0; same shape and dtype.

    Subnormal operands make x86 arithmetic several times slower, and they cannot change a sum of the working
    precision. A Gaussian basis has a subnormal tail (about 5 % of ViSNet's ExpNormal features in float32 on
    0.8-5 Å), which made the weight-gradient products of its first linear layer several times slower in
    training. The gradient through a zeroed entry is 0.
    """
    tiny = 2.2250738585072014e-308
    if values.dtype == torch.float32:
        tiny = 1.1754943508222875e-38
    return values.masked_fill(values.abs() < tiny, 0.0)


class ExpNormalSmearing(nn.Module):
    """Exponential-normal radial basis ``b_k(d) = exp(−β_k · (exp(−α·d) − μ_k)²)`` with ``α = 5/cutoff``.

    Gaussians in ``exp(−αd)`` rather than in d, so they are dense at short range (PhysNet, Unke & Meuwly,
    J. Chem. Theory Comput. 15, 3678 (2019), eq. 7; the RBF of ViSNet, Wang et al., Nat. Commun. 15, 313
    (2024), and TorchMD-Net). Initial centres ``μ_k`` are evenly spaced from ``exp(−cutoff)`` to 1 and all
    widths are ``β_k = (2/K · (1 − exp(−cutoff)))⁻²``, as in PyTorch Geometric (whose start value equals
    ``exp(−α·cutoff)`` only for cutoff = 5). The basis does not vanish at the cutoff: PyG's ViSNet
    multiplies it by the cosine cutoff (``nn.cutoff.cosine_cutoff``), which the caller does.

    Args:
        cutoff: cutoff radius (Å).
        num_basis: K (ViSNet default 32).
        trainable: if True, ``means`` and ``betas`` are parameters, else fixed buffers.

    Shapes:
        forward(distances [E]) -> [E, K], dtype of ``distances``. ``means`` and ``betas`` are [K]; when
        loading published weights take them from the state dict (their float32 rounding is visible in
        float64 comparisons).
    """

    def __init__(self, cutoff: float, num_basis: int = 32, trainable: bool = False):
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        self.num_basis = num_basis
        self.alpha = 5.0 / cutoff
        start = math.exp(-cutoff)
        means = torch.linspace(start, 1.0, num_basis)
        betas = torch.full((num_basis,), (2.0 / num_basis * (1.0 - start)) ** -2,
                           dtype=torch.get_default_dtype())
        if trainable:
            self.means = nn.Parameter(means)
            self.betas = nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, distances: Tensor) -> Tensor:
        shifted = torch.exp(-self.alpha * distances).unsqueeze(-1) - self.means
        return torch.exp(-self.betas * shifted * shifted)
