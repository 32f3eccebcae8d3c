"""The base LightningDataModule every domain data pipeline extends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.network import Network


class SectorDataModule(pl.LightningDataModule):
    """Built-in sample vs user file, deterministic splits and deliberate DataLoader settings.

    ``path=None`` selects the domain's built-in sample; otherwise ``path`` is the user's file or folder.
    ``network`` is the class of the network the data feeds (the pipeline passes it): its declared needs
    (:class:`~sectorkit.core.network.Network`) choose how batches are built.
    ``pin_memory=None`` pins host memory only when CUDA is available. Fitted preprocessing (scalers,
    vocabularies, id maps) is returned by :meth:`state_dict` and saved in every checkpoint, so
    ``evaluate``/``predict`` restore it before ``setup``.
    """

    predict_input: ClassVar[str] = "rows"  # what setup_predict takes: "rows" (a frame) or "images" (an array)

    def __init__(
        self,
        path: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
        network: type[Network] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        if isinstance(path, str) and not path.strip():  # `data.path=` must not fall back to the built-in sample silently
            raise ConfigError("data.path is empty: give the file or folder to read (data.path=/path/to/file), or "
                              "data.path=null for the built-in sample")
        self.path = Path(path).expanduser() if path else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    # --- hooks for domains ---------------------------------------------------------------------
    def model_kwargs(self) -> dict[str, Any]:
        """Data-dependent constructor arguments for the model (called after ``setup('fit')``)."""
        return {}

    def training_state(self) -> dict[str, Any]:
        """Data the model needs before fitting that is not a hyper-parameter (called after ``setup('fit')``;
        handed over once by the pipeline through ``model.prepare_fit``)."""
        return {}

    def predict_frame(self, outputs: Sequence[Any], stage: str) -> pd.DataFrame:
        """Turn ``trainer.predict`` outputs on ``stage`` ('test' or 'predict') into a table."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict_frame")

    def export_contract(self) -> dict[str, Any]:
        """What a caller of an exported model must know about its inputs (feature names and order, units, the
        preprocessing that is not inside the graph), stored in the export's metadata. Default: nothing beyond
        the input names and shapes."""
        return {}

    def export_graph(self, model: Any, batch: dict[str, torch.Tensor]) -> Any:
        """The graph to export when part of the preprocessing is a pure function of the row (image scaling and
        resizing, id lookup, window scaling): a :class:`sectorkit.core.export.ExportGraph` wrapping ``model`` so the
        exported file takes the user's raw inputs, built from ``batch`` (an :meth:`example_batch`) and the fitted
        state; :meth:`export_contract` then describes its inputs. Default: None, ``model.forward`` is exported."""
        return None

    def data_summary(self) -> dict[str, Any]:
        """What the run's data was, for the "Data" section of report.md and ``data`` in metrics.json (called after
        ``setup``): ``source``; ``facts``, whole-data facts (users, items, series); ``splits``, per split its facts
        (rows, time range, class balance), numbers or short strings. Default: the source only; domains add theirs."""
        return {"source": str(self.path) if self.path else "built-in sample", "facts": {}, "splits": {}}

    def serving_history(self) -> pd.DataFrame | None:
        """Earlier raw rows (the user's schema) that the predictions of new rows depend on, read from the training
        source: a server keeps them, appends the rows it scores and hands them to its data module as ``history``
        before each request (the module must take that argument and keep it as ``self.history``). Default: None, each
        row stands alone."""
        return None

    def setup_predict(self, rows: Any, source: str = "request") -> None:
        """Prepare the predict split from rows held in memory (a frame in ``data.path``'s raw layout; images for an
        image domain) with the code ``setup('predict')`` runs on ``data.path`` once it has read the file, so both give
        the same predictions. A server builds its data module once and calls this per request; ``source`` names the
        rows in messages. Default: not supported (the server then writes each request to a file)."""
        raise NotImplementedError(f"{type(self).__name__} does not take rows in memory")

    def example_batch(self) -> dict[str, torch.Tensor]:
        """One test batch (after ``setup('test')``), used to trace exports and check their parity."""
        return next(iter(self.test_dataloader()))

    # --- helpers -------------------------------------------------------------------------------
    def dataloader(
        self,
        dataset: Dataset,
        shuffle: bool = False,
        batch_size: int | None = None,
        sampler: Sampler | None = None,
        collate_fn: Any = None,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader with this module's worker, pinning and seeding settings."""
        generator = torch.Generator().manual_seed(self.seed) if shuffle and sampler is None else None
        return DataLoader(
            dataset,
            batch_size=batch_size or (self.batch_size if shuffle or sampler is not None else self.eval_batch_size),
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=collate_fn,
            drop_last=drop_last,
            generator=generator,
        )

    def require_path(self) -> Path:
        """The user's input path, checked to exist."""
        if self.path is None:
            raise DataError("data.path is not set: give the file to read, e.g. data.path=/path/to/file.csv")
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or folder (from data.path)")
        return self.path
