"""Physics-based energy terms of SO3LR: ZBL repulsion, damped electrostatics, vdW-QDO dispersion."""
from .dispersion import BOHR, FINE_STRUCTURE, FREE_ATOM_REFERENCE, HARTREE, QDODispersion
from .electrostatics import Electrostatics
from .zbl import COULOMB_CONSTANT, ZBLRepulsion, sum_per_structure

__all__ = ["BOHR", "COULOMB_CONSTANT", "Electrostatics", "FINE_STRUCTURE", "FREE_ATOM_REFERENCE", "HARTREE",
           "QDODispersion", "ZBLRepulsion", "sum_per_structure"]
