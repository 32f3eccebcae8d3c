"""A pretrained time-series foundation model from Hugging Face ``transformers`` behind the weather network
interface: TimesFM 2.5 / 2.0 (``AutoModelForTimeSeriesPrediction``) or a pretrained PatchTST
(``PatchTSTForPrediction``), loaded with ``from_pretrained`` from a hub id or a local folder, used zero-shot or
fine-tuned (frozen backbone + head, full, or LoRA through ``peft``).

The models are univariate: they read the target's lookback window only (optionally its departure from the
day-of-year climatology, ``seasonal``); the covariates (tmin, precipitation, ...) are not inputs of the
backbone. TimesFM's own quantiles are mapped onto the domain's quantile levels by linear interpolation;
PatchTST gives a point forecast, copied to every level (its intervals come from the module's validation
calibration, or from the trained head when fine-tuned).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from sectorkit.core.errors import ConfigError
from sectorkit.domains.agriculture.models.common import WindowForecaster
from torch import nn

FINETUNE_MODES = ("zero_shot", "frozen", "full", "lora")
DEFAULT_MODEL_ID = "google/timesfm-2.5-200m-transformers"
# the attention projections LoRA adapts, per model type (names of the transformers modules)
LORA_TARGETS = {
    "timesfm": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "timesfm2_5": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "patchtst": ["q_proj", "k_proj", "v_proj", "out_proj"],
}


def hub_offline() -> bool:
    """True when the user asked for no network access (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"} for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch_hint(model_id: str) -> str:
    """How to get the weights of ``model_id`` once, or where to point instead."""
    return (
        f"download the weights once with `hf download {model_id}` (older huggingface_hub: "
        f"`huggingface-cli download {model_id}`) or let the run fetch them (runtime.offline=false), or save the model to a "
        "folder and set model.net.model_id=/path/to/folder"
    )


def load_pretrained(model_id: str, revision: str | None = None, cache_dir: str | None = None) -> nn.Module:
    """The pretrained forecasting model ``model_id`` (hub id or local folder) in float32, from safetensors only.

    Honours the Hugging Face cache (``cache_dir``, ``HF_HOME``) and ``HF_HUB_OFFLINE``; a model that cannot be
    had is one ``ConfigError`` naming the id and how to fetch it.
    """
    from transformers import AutoConfig, AutoModelForTimeSeriesPrediction, PatchTSTForPrediction

    local = os.path.isdir(model_id)
    if not local and (model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1):
        raise ConfigError(f"model.net.model_id={model_id!r}: no such folder (expected a hub id such as {DEFAULT_MODEL_ID!r} "
                          "or a folder written by save_pretrained)")
    options: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local or hub_offline()}
    try:
        config = AutoConfig.from_pretrained(model_id, **options)
    except (OSError, ValueError) as err:
        where = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache" if hub_offline() and not local else str(err).splitlines()[0]
        raise ConfigError(f"model.net.model_id={model_id!r}: cannot load it ({where}); {fetch_hint(model_id)}") from None
    if config.model_type in ("timesfm", "timesfm2_5"):
        cls: Any = AutoModelForTimeSeriesPrediction
    elif config.model_type == "patchtst":
        cls = PatchTSTForPrediction
    else:
        raise ConfigError(
            f"model.net.model_id={model_id!r} is a {config.model_type!r} model; expected a TimesFM (timesfm, timesfm2_5) "
            "or PatchTST (patchtst) forecasting checkpoint"
        )
    from transformers.utils import logging as transformers_logging

    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the run's output
    try:
        return cls.from_pretrained(model_id, config=config, dtype=torch.float32, use_safetensors=True, **options)
    except OSError as err:
        raise ConfigError(
            f"model.net.model_id={model_id!r}: cannot load its safetensors weights ({str(err).splitlines()[0]}); {fetch_hint(model_id)}"
        ) from None
    finally:
        if bar:
            transformers_logging.enable_progress_bar()


def interpolation_matrix(levels: Sequence[float], wanted: Sequence[float]) -> torch.Tensor:
    """``(len(levels), len(wanted))`` weights mapping forecasts at quantile ``levels`` to the ``wanted`` levels by
    linear interpolation between the two nearest levels (exact where a level is wanted)."""
    levels, out = [float(q) for q in levels], torch.zeros(len(levels), len(wanted))
    for j, q in enumerate(wanted):
        if not levels[0] - 1e-9 <= q <= levels[-1] + 1e-9:
            raise ConfigError(f"data.quantiles: {q} lies outside the model's quantiles {levels[0]}..{levels[-1]}")
        hi = next(i for i, level in enumerate(levels) if level >= q - 1e-9)
        if abs(levels[hi] - q) < 1e-9 or hi == 0:
            out[hi, j] = 1.0
        else:
            w = (q - levels[hi - 1]) / (levels[hi] - levels[hi - 1])
            out[hi - 1, j], out[hi, j] = 1.0 - w, w
    return out


class FoundationForecaster(WindowForecaster):
    """``forward(past (B, L, C), future (B, H, F)) -> (B, H, Q)`` from a pretrained forecasting model.

    ``model_id``: a hub id (e.g. ``google/timesfm-2.5-200m-transformers``) or a local folder written by
    ``save_pretrained``. ``finetune``: ``zero_shot`` (every parameter frozen, no head: the module then trains
    nothing and only calibrates its intervals on the validation span), ``frozen`` (backbone frozen, a
    zero-initialised linear head trained on the pinball loss: it starts at the zero-shot forecast), ``full``
    (backbone and head), ``lora`` (LoRA adapters of rank ``lora_rank`` on the attention projections, through
    ``peft``, and the head). ``seasonal``: the backbone forecasts the departure from the day-of-year climatology
    fitted on the training span, which is added back for the forecast days (a 56-day window holds no annual
    cycle); ``False``: the scaled target itself.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_past: int,
        n_future: int,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        model_id: str = DEFAULT_MODEL_ID,
        finetune: str = "zero_shot",
        seasonal: bool = True,
        revision: str | None = None,
        cache_dir: str | None = None,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_target_modules: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if finetune not in FINETUNE_MODES:
            raise ConfigError(f"model.net.finetune={finetune!r}: expected one of {', '.join(FINETUNE_MODES)}")
        self.horizon, self.lookback, self.finetune, self.seasonal = int(horizon), int(lookback), finetune, bool(seasonal)
        self.climatology_channel = int(n_past) - 3  # past: target, covariates, climatology, doy sin, doy cos
        backbone = load_pretrained(str(model_id), revision, cache_dir)
        config = backbone.config
        self.model_type = config.model_type
        available = config.horizon_length if self.model_type != "patchtst" else config.prediction_length
        if self.horizon > available:
            raise ConfigError(f"data.horizon={self.horizon}: {model_id!r} forecasts at most {available} steps ahead")
        if self.model_type == "patchtst":
            if not config.share_projection or config.channel_attention:
                raise ConfigError(f"model.net.model_id={model_id!r}: only channel-independent PatchTST checkpoints "
                                  "(share_projection=true, channel_attention=false) can forecast one series")
            if getattr(config, "loss", "mse") != "mse":
                raise ConfigError(f"model.net.model_id={model_id!r}: a distributional PatchTST (loss={config.loss}) is not "
                                  "supported; use a point-forecast checkpoint (loss=mse)")
            self.register_buffer("to_quantiles", torch.ones(1, len(quantiles)))  # the point forecast at every level
        else:
            self.register_buffer("to_quantiles", interpolation_matrix(config.quantiles, quantiles))
        for parameter in backbone.parameters():
            parameter.requires_grad_(finetune == "full")
        if finetune == "lora":
            backbone = self._with_lora(backbone, lora_rank, lora_alpha, lora_dropout, lora_target_modules)
        self.backbone = backbone
        out = self.horizon * len(quantiles)
        self.head = None if finetune == "zero_shot" else nn.Linear(out + self.horizon * int(n_future), out)
        if self.head is not None:  # zero-initialised: fine-tuning starts from the zero-shot forecast
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> FoundationForecaster:
        """A backbone that is not trained stays in eval mode (no dropout) while the head trains."""
        super().train(mode)
        if self.finetune in ("zero_shot", "frozen"):
            self.backbone.eval()
        return self

    def _with_lora(self, backbone: nn.Module, rank: int, alpha: float, dropout: float, targets: Sequence[str] | None) -> nn.Module:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ConfigError("model.net.finetune=lora needs peft: pip install 'sectorkit[pretrained]' (or pip install 'peft>=0.10')") from None
        targets = list(targets) if targets else LORA_TARGETS[self.model_type]
        config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=targets)
        return get_peft_model(backbone, config)

    def backbone_forecast(self, series: torch.Tensor) -> torch.Tensor:
        """The backbone's forecast of ``series (B, L)`` for the next H steps at the model's levels ``(B, H, Qm)``."""
        if self.model_type == "patchtst":
            config = self.backbone.config
            context, length = config.context_length, series.shape[1]
            observed = torch.ones_like(series)
            if length < context:  # left-pad with the first value, marked unobserved (the scaler ignores it)
                pad = context - length
                series = torch.cat([series[:, :1].expand(-1, pad), series], dim=1)
                observed = torch.cat([torch.zeros_like(series[:, :pad]), observed], dim=1)
            series, observed = series[:, -context:], observed[:, -context:]
            out = self.backbone(past_values=series.unsqueeze(-1), past_observed_mask=observed.unsqueeze(-1))
            return out.prediction_outputs[:, : self.horizon, :1]
        config = self.backbone.config
        options: dict[str, Any] = {"truncate_negative": False}
        if self.model_type == "timesfm":
            options["freq"] = [0] * series.shape[0]  # TimesFM's high-frequency class (daily and finer)
        else:  # context rounded up to whole patches: few padded steps (TimesFM 2.5 pads the front itself)
            patches = math.ceil(series.shape[1] / config.patch_length)
            options["forecast_context_len"] = min(patches * config.patch_length, config.context_length)
        out = self.backbone(past_values=series, **options)
        return out.full_predictions[:, : self.horizon, 1:]  # column 0 is the mean, then the quantile levels

    def forward(self, past: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        series = past[..., 0]
        if self.seasonal:
            series = series - past[..., self.climatology_channel]
        forecast = self.backbone_forecast(series.float()) @ self.to_quantiles.to(series.dtype)  # (B, H, Q)
        if self.seasonal:
            forecast = forecast + future[..., :1]  # the known-ahead climatology of the forecast days
        if self.head is not None:
            correction = self.head(torch.cat([forecast.flatten(1), future.flatten(1)], dim=1))
            forecast = forecast + correction.view_as(forecast)
        return torch.sort(forecast, dim=-1).values  # non-crossing quantiles
