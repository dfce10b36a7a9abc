"""OpenMM coupling: forces from viskrates models and the openmm-ml plugin."""
from .force import OpenMMModel, check_elements, create_force, topology_atomic_numbers, torchforce_unavailable_reason

__all__ = ["OpenMMModel", "check_elements", "create_force", "topology_atomic_numbers", "torchforce_unavailable_reason"]
from .pme import PMEHandoff, add_pme_handoff

__all__ += ["PMEHandoff", "add_pme_handoff"]
