"""sectorkit core: the domain-agnostic Lightning + Hydra layer every domain plugs into."""

__version__ = "0.1.0"
