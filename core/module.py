"""The base LightningModule every domain model extends."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.utilities import move_data_to_device
from torchmetrics import MetricCollection

Batch = dict[str, torch.Tensor]

# Plain attributes written on every step: Lightning sets ``_current_fx_name`` around each of the ~20 hook
# calls of a training step, and ``training_step`` updates the running epoch loss. ``nn.Module.__setattr__``
# checks every value against parameters, buffers and submodules (~5 µs a call, ~0.2 ms a step), which none
# of these can be, so they are set directly.
_STEP_ATTRIBUTES = frozenset({"_current_fx_name", "_loss_sum", "_loss_count"})


def plain_container(value: Any) -> Any:
    """OmegaConf containers, dicts, lists and tuples → plain dicts and lists (recursively).

    Model hyper-parameters must be plain: checkpoints are read back with ``torch.load(weights_only=True)``.
    """
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: plain_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_container(v) for v in value]
    return value


class SectorModule(pl.LightningModule):
    """Optimizer and scheduler from config, one MetricCollection per stage, predict and export paths.

    Subclasses call ``super().__init__(optimizer=..., scheduler=..., compile=..., channels_last=...)`` then
    ``self.save_hyperparameters()``, build their network from the ``net`` config with
    :func:`sectorkit.core.network.build_network`, and implement :meth:`build_metrics`, :meth:`training_loss`,
    :meth:`forward` (the full inference path, also what ONNX export traces) and, when batches hold more
    than ``inputs``, :meth:`batch_inputs`. What is chosen on the validation split (thresholds, score
    normalisation, intervals) is fitted in :meth:`calibrate` from what :meth:`validation_outputs` collects.
    A module with no trainable parameters (a memory bank) trains without an optimizer.
    """

    def __init__(
        self,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.optimizer_cfg = dict(optimizer) if optimizer else {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
        self.scheduler_cfg = dict(scheduler) if scheduler else None
        self.compile_model = compile
        self.use_channels_last = channels_last
        self._loss_sum, self._loss_count = torch.zeros(()), 0
        self._validation_outputs: list[dict[str, torch.Tensor]] = []
        metrics = self.build_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STEP_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # --- what a domain model implements -------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        """The domain's metrics, named without a stage prefix."""
        raise NotImplementedError

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """The loss of one training batch."""
        raise NotImplementedError

    def batch_inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The positional inputs of :meth:`forward` taken from a batch."""
        return (batch["inputs"],)

    export_outputs: tuple[str, ...] = ()  # names of forward's outputs in an exported graph (default: output_0, ...)

    def export_dynamic_axes(self, inputs: tuple[torch.Tensor, ...]) -> list[dict[int, str]]:
        """Which dimensions of each forward input vary in an exported graph (default: the batch dimension)."""
        return [{0: "batch"} for _ in inputs]

    def update_metrics(self, metrics: MetricCollection, batch: Batch) -> None:
        """Feed one evaluation batch to ``metrics`` (override when targets are not ``batch['target']``)."""
        metrics.update(self(*self.batch_inputs(batch)), batch["target"])

    def prepare_fit(self, state: dict[str, Any]) -> None:
        """Take the data state the model needs before fitting (the pipeline passes ``datamodule.training_state()``).

        Default: nothing needed. Override for e.g. the training interactions of a recommender or the training
        span a reference forecast is fitted on.
        """

    def validation_outputs(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        """What :meth:`calibrate` needs from one validation batch (default: None, nothing is calibrated)."""
        return None

    def decisions(self) -> dict[str, Any]:
        """What the model chose on the validation split (thresholds and the rules behind them), written to
        metrics.json and shown at the end of a run. Default: nothing."""
        return {}

    def calibrate(self, outputs: dict[str, torch.Tensor]) -> None:
        """Fit what is chosen on the validation split from the outputs of every validation batch, concatenated
        (on the CPU). Called at the end of each validation epoch, before its metrics are logged; not during
        Lightning's sanity check."""

    # --- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.use_channels_last:
            self.to(memory_format=torch.channels_last)
        if self.compile_model and stage == "fit":
            self.forward = torch.compile(self.forward)  # type: ignore[method-assign]

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_count = torch.zeros((), device=self.device), 0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        n = _batch_size(batch) or 1
        self._loss_sum = self._loss_sum + loss.detach() * n  # the epoch mean is logged once, at epoch end:
        self._loss_count += n  # a self.log call per step costs ~0.5 ms, a sixth of a small model's step
        if (batch_idx + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._loss_count:  # 0 for models that do not train by gradient steps
            self.log("train/loss", self._loss_sum / self._loss_count, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.update_metrics(self.val_metrics, batch)
        outputs = self.validation_outputs(batch)
        if outputs is not None:
            self._validation_outputs.append({k: v.detach().cpu() for k, v in outputs.items()})

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.update_metrics(self.test_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        collected, self._validation_outputs = self._validation_outputs, []
        if collected and not (self._trainer is not None and self.trainer.sanity_checking):
            self.calibrate({key: torch.cat([part[key] for part in collected]) for key in collected[0]})
        self._log_and_reset(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_and_reset(self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self(*self.batch_inputs(batch))

    def predict_loader(self, loader: Any) -> list[Any]:
        """``predict_step`` over every batch of ``loader`` in eval and inference mode, outputs moved to the CPU.

        The one-process inference loop behind prediction tables and report plots (no Trainer needed).
        """
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        self.eval()
        outputs = []
        with torch.inference_mode():
            for index, batch in enumerate(loader):
                outputs.append(move_data_to_device(self.predict_step(move_data_to_device(batch, device), index), torch.device("cpu")))
        return outputs

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:  # a memory bank: fitted in its training steps without gradients
            return None
        optimizer = instantiate(self.optimizer_cfg)(params)
        if not self.scheduler_cfg:
            return optimizer
        scheduler_cfg = dict(self.scheduler_cfg)
        monitor = scheduler_cfg.pop("monitor", None)
        interval = scheduler_cfg.pop("interval", "epoch")
        scheduler = instantiate(scheduler_cfg)(optimizer)
        lr_scheduler = {"scheduler": scheduler, "interval": interval}
        if monitor:
            lr_scheduler["monitor"] = monitor
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sectorkit_model_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def _log_and_reset(self, metrics: MetricCollection) -> None:
        values = {k: v.float() for k, v in metrics.compute().items() if v.numel() == 1}
        self.log_dict(values, prog_bar=True, sync_dist=False)
        metrics.reset()


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                return int(value.shape[0])
    return None
