"""Building blocks of the models: radial bases, cutoff and switching functions, spherical harmonics,
Euclidean attention."""
from .attention import euclidean_attention
from .cutoff import cosine_cutoff, polynomial_cutoff, smooth_switch
from .radial import BernsteinBasis, ExpNormalSmearing
from .spherical_harmonics import DegreeContraction, real_spherical_harmonics

__all__ = ["BernsteinBasis", "DegreeContraction", "ExpNormalSmearing", "cosine_cutoff", "euclidean_attention",
           "polynomial_cutoff", "real_spherical_harmonics", "smooth_switch"]
