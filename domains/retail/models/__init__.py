"""Recommendation networks: one :class:`~sectorkit.domains.retail.models.base.RecommenderNetwork` per file, named by
a model config's ``net._target_``; each scores the whole catalogue for a batch of users."""
