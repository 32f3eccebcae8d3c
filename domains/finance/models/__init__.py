"""Fraud-scoring networks: one :class:`~sectorkit.domains.finance.models.base.FraudNetwork` per file, named by a
model config's ``net._target_``."""
