"""OpenMM coupling: forces from viskrates models and the openmm-ml plugin."""
# openmm-ml imports its entry points (viskrates.openmm.mlpotential, .chargeembedding) when it is first imported.
# Importing it here, before any of those modules, keeps a direct `import viskrates.openmm.mlpotential` from
# being the first import of openmm-ml, which would load that module's entry point while it is half-initialised.
import openmmml  # noqa: F401
from .force import OpenMMModel, check_elements, create_force, topology_atomic_numbers, torchforce_unavailable_reason

__all__ = ["OpenMMModel", "check_elements", "create_force", "topology_atomic_numbers", "torchforce_unavailable_reason"]
from .pme import PMEHandoff, add_pme_handoff

__all__ += ["PMEHandoff", "add_pme_handoff"]
from .chargeembedding import ChargeEmbeddedModel, ChargeEmbedding, WaterBox, water_box_with_ml_waters

__all__ += ["ChargeEmbeddedModel", "ChargeEmbedding", "WaterBox", "water_box_with_ml_waters"]
from .mlpotential import ml_region_charge

__all__ += ["ml_region_charge"]
