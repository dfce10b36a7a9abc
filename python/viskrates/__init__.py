"""viskrates: equivariant machine-learned potentials (ViSNet, SO3krates/SO3LR) for OpenMM.

Importing the package loads the compiled op library so that TorchScript models using
``torch.ops.viskrates.*`` can be built and deserialised.

It also repairs openmm-torch's kernel plugins when OpenMM was imported before torch (see
``_retry_openmm_torch_plugins``), so a System with a TorchForce deserialised from XML runs.
"""
import glob
import os
import re
import sys

import torch

__version__ = "0.1.0"


def _load_ops() -> str:
    # A regular install puts the library next to this file; an editable install (scikit-build-core's
    # redirect mode) keeps it in the CMake install tree, which it adds to the package's __path__.
    here = os.path.dirname(os.path.abspath(__file__))
    places = [here] + [p for p in globals().get("__path__", []) if os.path.abspath(p) != here]
    found = [f for p in places for f in sorted(glob.glob(os.path.join(p, "libviskrates_ops*.so")))]
    if not found:
        raise ImportError(
            f"the compiled op library libviskrates_ops.so is missing from {here}; "
            "install viskrates with `pip install --no-build-isolation .` so that it is built against your torch")
    torch.ops.load_library(found[0])
    return found[0]


OPS_LIBRARY = _load_ops()


def _retry_openmm_torch_plugins() -> None:
    # OpenMM loads its plugins at import. openmm-torch's kernel plugins link against libraries that
    # only torch's import makes findable (libnvrtc, ...), so after `import openmm` before `import torch`
    # they are listed as load failures and every TorchForce Context lacks kernels. torch is loaded now.
    openmm = sys.modules.get("openmm")
    if openmm is None:
        return  # a later `import openmm` finds torch's libraries already loaded
    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (\S*libOpenMMTorch\w*\.so)", failure)
        if match:
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except Exception:
                pass  # GPU plugins without their driver libraries stay unloaded, as OpenMM itself leaves them


_retry_openmm_torch_plugins()
