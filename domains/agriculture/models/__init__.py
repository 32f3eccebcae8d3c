"""The agriculture networks, one per file.

Weather (:class:`~sectorkit.domains.agriculture.models.common.WindowForecaster` subclasses, all mapping
``past (B, L, C), future (B, H, F)`` to non-crossing quantiles ``(B, H, Q)``): ``gru.GRUForecaster``,
``dlinear.DLinear``, ``nhits.NHiTS``, ``patchtst.PatchTST``, and the pretrained ``foundation.FoundationForecaster``
(TimesFM or PatchTST from ``transformers``, zero-shot or fine-tuned). Crop yield: ``yield_mlp.YieldMLP``.
"""
