"""sectorkit: GPU-ready deep-learning pipelines for industry on one PyTorch Lightning + Hydra core.

The installed package holds the domain-agnostic core (``sectorkit.core``), the built-in domains
(``sectorkit.domains.<name>``) and the core Hydra configs (``sectorkit.conf``).
"""

from sectorkit.core import __version__

__all__ = ["__version__"]
