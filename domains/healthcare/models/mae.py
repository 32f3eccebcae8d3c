"""Self-supervised backbone where no pretrained weights can be had: a masked autoencoder (``transformers``'
``ViTMAEForPreTraining``) trained on the user's own normal training images, then frozen under PatchCore.

:func:`pretrain_mae` trains the MAE (75 % of the patches hidden, the decoder reconstructs them; He et al. 2022);
:func:`save_backbone` writes it with ``save_pretrained`` (safetensors) plus a ``preprocessor_config.json`` holding the
grey-level mean and std it was trained with, so the folder is a backbone every pretrained detector reads
(``model.net.backbone=<folder>``). :class:`MAEPatchCore` (``model=patchcore_mae``) does both inside one training run:
it gathers the normal training images, pretrains, optionally saves (``save_to``), then fills PatchCore's bank with the
encoder's patch features. The encoder's weights are part of the network's state, so checkpoints carry them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from sectorkit.core.io import atomic_write_text
from sectorkit.domains.healthcare.models.hf_backbone import PretrainedFeatures
from sectorkit.domains.healthcare.models.patchcore_pretrained import PretrainedPatchCore
from transformers import ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel


def mae_config(image_size: int, in_channels: int = 1, patch_size: int = 4, hidden_size: int = 128, num_layers: int = 4,
               num_heads: int = 4, mask_ratio: float = 0.75) -> ViTMAEConfig:
    """A small ViT-MAE for small grey images (the decoder is half as wide and two blocks deep)."""
    side = max(patch_size, round(image_size / patch_size) * patch_size)
    return ViTMAEConfig(image_size=side, patch_size=patch_size, num_channels=in_channels, hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                        decoder_hidden_size=max(32, hidden_size // 2), decoder_num_hidden_layers=2,
                        decoder_num_attention_heads=max(1, num_heads // 2), decoder_intermediate_size=2 * hidden_size,
                        mask_ratio=mask_ratio, norm_pix_loss=True)


def pretrain_mae(images: torch.Tensor, config: ViTMAEConfig, epochs: int = 100, batch_size: int = 32, lr: float = 1e-3,
                 seed: int = 0, flip: bool = True) -> tuple[ViTMAEForPreTraining, float, float, list[float]]:
    """Train a ViT-MAE on ``images`` (N, C, H, W in 0..1); returns the model, the mean and std used to normalise the
    images, and the mean loss per epoch. AdamW with a one-epoch warm-up and cosine decay; random horizontal flips
    (left-right symmetry of brain slices) unless ``flip`` is False. Runs on ``images``' device."""
    device = images.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = ViTMAEForPreTraining(config).to(device)
        side = config.image_size
        if images.shape[-1] != side:
            images = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        mean, std = float(images.mean()), float(images.std().clamp_min(1e-3))
        data = (images - mean) / std
        steps_per_epoch = math.ceil(len(data) / batch_size)
        total = max(1, epochs * steps_per_epoch)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * s / total)))
        losses = []
        model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")  # mixed precision on GPU
        for _ in range(epochs):
            order = torch.randperm(len(data), device=device)
            total_loss = 0.0
            for idx in order.split(batch_size):
                batch = data[idx]
                if flip:
                    flipped = torch.rand(len(batch), device=device) < 0.5
                    batch = torch.where(flipped[:, None, None, None], batch.flip(-1), batch)
                with autocast:
                    loss = model(pixel_values=batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += float(loss.detach()) * len(idx)
            losses.append(total_loss / len(data))
        model.eval()
    return model, mean, std, losses


def save_backbone(model: ViTMAEForPreTraining | ViTMAEModel, folder: str | Path, mean: float, std: float) -> Path:
    """``save_pretrained`` (safetensors) plus the preprocessing the backbone expects; returns the folder."""
    folder = Path(folder).expanduser()
    model.save_pretrained(folder, safe_serialization=True)
    side = model.config.image_size
    atomic_write_text(folder / "preprocessor_config.json", json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": side, "width": side},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [mean] * model.config.num_channels, "image_std": [std] * model.config.num_channels}, indent=2) + "\n")
    return folder


class MAEPatchCore(PretrainedPatchCore):
    """PatchCore on a ViT-MAE pretrained, during the same training run, on the normal training images.

    ``collect`` keeps the images (C × S² floats each); ``fit_memory`` pretrains the MAE for ``epochs`` epochs (once),
    writes it to ``save_to`` when given (a backbone folder for ``model.net.backbone=``), then builds the bank from
    the frozen encoder's features. ``patch_size``, ``hidden_size``, ``num_layers``, ``num_heads``, ``mask_ratio``
    set the ViT; ``layers`` (hidden-state indices) default to the middle and last block.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, patch_size: int = 4, hidden_size: int = 96,
                 num_layers: int = 3, num_heads: int = 4, mask_ratio: float = 0.75, epochs: int = 40, batch_size: int = 32,
                 lr: float = 1e-3, save_to: str | None = None, layers: Sequence[int] | None = None, coreset_size: int = 2000,
                 sigma: float = 4.0, seed: int = 0, chunk: int = 4096) -> None:
        self.mae_settings = {"image_size": image_size, "in_channels": in_channels, "patch_size": patch_size, "hidden_size": hidden_size,
                             "num_layers": num_layers, "num_heads": num_heads, "mask_ratio": mask_ratio}
        self.epochs, self.batch_size, self.lr, self.save_to, self.mae_seed = epochs, batch_size, lr, save_to, seed
        super().__init__(spatial_dims, in_channels, image_size, "", layers, None, coreset_size, sigma, seed, chunk)
        self.register_buffer("pretrained", torch.tensor(False))
        self.register_buffer("pixel_stats", torch.tensor([0.5, 0.25]))  # grey mean and std of the pretraining images
        self.pretrain_losses: list[float] = []

    def build_backbone(self, backbone: str, image_size: int, layers: Sequence[int] | None, input_size: int | None) -> PretrainedFeatures:
        config = mae_config(**self.mae_settings)
        config.mask_ratio = 0.0
        with torch.random.fork_rng():
            torch.manual_seed(self.mae_seed)
            encoder = ViTMAEModel(config)
        return PretrainedFeatures(encoder, image_size, layers, config.image_size, key="model.net")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.set_normalisation()

    def set_normalisation(self) -> None:
        mean, std = (float(v) for v in self.pixel_stats)
        self.backbone.mean.fill_(mean)
        self.backbone.std.fill_(std)

    @torch.no_grad()
    def collect(self, images: torch.Tensor) -> None:
        if bool(self.pretrained):
            super().collect(images)
        else:
            self._collected.append(images.detach().float().cpu())

    def fit_memory(self) -> None:
        if not self._collected or bool(self.pretrained):
            super().fit_memory()
            return
        images = torch.cat(self._collected)
        self._collected = []
        device = self.bank.device
        with torch.inference_mode(False), torch.enable_grad():  # Lightning may call this inside its no-grad validation loop
            model, mean, std, self.pretrain_losses = pretrain_mae(images.clone().to(device), mae_config(**self.mae_settings), self.epochs,
                                                                  self.batch_size, self.lr, self.seed)
        state = {k.removeprefix("vit."): v for k, v in model.state_dict().items() if k.startswith("vit.")}
        self.backbone.model.load_state_dict(state)
        self.backbone.freeze()
        self.pixel_stats = torch.tensor([mean, std], device=device)
        self.set_normalisation()
        self.pretrained = torch.tensor(True, device=device)
        if self.save_to:
            save_backbone(model.vit, self.save_to, mean, std)
        with torch.no_grad():
            for chunk in images.split(64):
                super().collect(chunk.to(device))
        super().fit_memory()
