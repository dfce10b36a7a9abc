"""Energy models (Å in, eV out); each is a ``torch.nn.Module`` that ``torch.jit.script`` accepts."""
from .so3krates import SO3krates
from .so3lr import SO3LR
from .visnet import ViSNet, load_pyg_visnet

__all__ = ["SO3LR", "SO3krates", "ViSNet", "load_pyg_visnet"]
from .so3krates_potential import SO3kratesPotential  # noqa: E402  (training from scratch)
