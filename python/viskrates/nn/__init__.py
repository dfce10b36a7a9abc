"""Building blocks of the models: radial bases, cutoff and switching functions, spherical harmonics,
Euclidean attention."""
from .attention import euclidean_attention
from .cutoff import polynomial_cutoff, smooth_switch
from .radial import BernsteinBasis
from .spherical_harmonics import DegreeContraction, real_spherical_harmonics

__all__ = ["BernsteinBasis", "DegreeContraction", "euclidean_attention", "polynomial_cutoff",
           "real_spherical_harmonics", "smooth_switch"]
