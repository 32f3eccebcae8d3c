"""sectorkit: GPU-ready deep-learning pipelines for industry on one PyTorch Lightning + Hydra core.

The installed package holds the domain-agnostic core (``sectorkit.core``), the built-in domains
(``sectorkit.domains.<name>``) and the core Hydra configs (``sectorkit.conf``). The Python API
(``sectorkit.train``, ``sectorkit.load`` and the :class:`TrainedModel` it returns) runs what the
``sectorkit`` command runs; see docs/api.md.
"""

from sectorkit.core import __version__
from sectorkit.core.api import RunResult, TrainedModel, load, train

__all__ = ["RunResult", "TrainedModel", "__version__", "load", "train"]
