"""An HTTP inference server for a trained model: FastAPI on uvicorn (the ``serve`` extra).

    sectorkit serve ckpt_path=<checkpoint or run folder> [port=8000] [host=127.0.0.1] [serve.max_rows=10000]
                    [serve.max_bytes=16777216] [serve.history=<file>] [serve.max_history_rows=1000000]
                    [serve.in_memory=true] [runtime.torch_threads=1] [data.<key>=...]

The checkpoint is read once at start through the same safe path as ``predict`` (weights only, classes of
registered domains only, the data config recorded in the checkpoint with ``data.*`` overrides on top), and the
model and its data module (with the fitted preprocessing) are built once; no config is composed and no file is
written per request. Each request's rows (JSON, CSV or an uploaded file in the user's own raw schema; images as
base64 PNG or nested arrays) become a DataFrame (or an image array) that the data module's ``setup_predict`` takes:
the code ``setup('predict')`` runs on ``data.path`` once it has read the file (the domain's checks, features and
fitted preprocessing), then the model's ``predict_step`` and the data module's ``predict_frame``, so a response is
the table ``predict`` writes for those rows. A data module that needs earlier rows (``serving_history``) gets the
history loaded at start, and the rows of every request are appended to it. Torch runs one thread per server
process unless ``runtime.torch_threads=`` says otherwise; data loaders run in the request's thread (no workers).
"""

import base64
import binascii
import io
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
from sectorkit.core.errors import ConfigError, SectorkitError

if TYPE_CHECKING:
    from fastapi import FastAPI


@dataclass(frozen=True)
class ServeSettings:
    """Limits and state of a server: at most ``max_rows`` rows (or images) and ``max_bytes`` bytes a request (413
    beyond); ``history``: a file of earlier rows to start the history with instead of the training data;
    ``max_history_rows``: the newest rows kept in that history; ``in_memory``: score each request's rows in memory
    (false: write them to a file that ``predict``'s file path reads back, the slower route a data module without
    ``setup_predict`` takes anyway)."""

    max_rows: int = 10_000
    max_bytes: int = 16 * 2**20
    history: str | None = None
    max_history_rows: int = 1_000_000
    in_memory: bool = True

    def __post_init__(self) -> None:
        for key in ("max_rows", "max_bytes", "max_history_rows"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"serve.{key}={getattr(self, key)!r}: expected a whole number >= 1")
        if not isinstance(self.in_memory, bool):
            raise ConfigError(f"serve.in_memory={self.in_memory!r}: expected true or false")


SERVE_KEYS = tuple(f.name for f in fields(ServeSettings))  # the serve.<key> settings of the command line


class RequestError(SectorkitError):
    """A request the server refuses: its HTTP status and a one-line reason naming the field, column or limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModelService:
    """A trained model loaded once for serving; :meth:`predict` returns what ``predict`` writes for the same rows.

    The model and one data module (the checkpoint's data config and fitted preprocessing) are built at start; each
    request's rows go through the data module's ``setup_predict`` in memory. Requests are scored one at a time (a
    lock): the model, the data module and the history are shared state.
    """

    def __init__(self, path: str | Path, overrides: Sequence[str] = (), settings: ServeSettings | None = None) -> None:
        from omegaconf import open_dict
        from sectorkit.core import __version__
        from sectorkit.core.config import compose_config, validate_overrides
        from sectorkit.core.datamodule import SectorDataModule
        from sectorkit.core.io import read_table
        from sectorkit.core.pipeline import prepare_inference
        from sectorkit.core.registry import get_domain
        from sectorkit.core.checkpoint import checkpoint_record
        from sectorkit.core.run_record import checkpoint_data_preset

        self.settings = settings or ServeSettings()
        checkpoint, record = checkpoint_record(path)  # a run folder or a checkpoint; the record names the domain (weights only)
        domain = get_domain(str(record["domain"]))
        overrides = [*overrides, *checkpoint_data_preset(domain, "serve", [f"ckpt_path={checkpoint}", *overrides], record)]
        if not any(o.lstrip("+~").startswith("runtime.torch_threads=") for o in overrides):
            overrides.append("runtime.torch_threads=1")  # one torch thread per server process unless configured: scale out with processes
        run_overrides = [f"ckpt_path={checkpoint}", *overrides]
        validate_overrides(domain, run_overrides)
        self.cfg = compose_config(domain, ["task=predict", *run_overrides])  # once, at start
        self.inference = prepare_inference(self.cfg, list(overrides))
        self.checkpoint, self.version = checkpoint, __version__
        self.datamodule = self.inference.datamodule(num_workers=0)  # built once; its loaders run in the request's thread
        keeps_history = type(self.datamodule).serving_history is not SectorDataModule.serving_history
        if self.settings.history and not keeps_history:
            raise ConfigError(f"serve.history: the {domain.name} model scores each row on its own and keeps no history")
        history_file = self.settings.history
        self.history = read_table(Path(history_file).expanduser(), "history table") if history_file else self.datamodule.serving_history()
        self.in_memory = self.settings.in_memory and type(self.datamodule).setup_predict is not SectorDataModule.setup_predict
        self.workdir = Path(tempfile.mkdtemp(prefix="sectorkit-serve-"))
        with open_dict(self.cfg):
            self.cfg.paths.output_dir = str(self.workdir)
        self.lock = threading.Lock()
        self.served = 0

    @property
    def domain(self) -> str:
        return self.inference.domain.name

    @property
    def model_name(self) -> str:
        return self.inference.name

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "ready": True, "domain": self.domain, "model": self.model_name, "version": self.version,
                "checkpoint": str(self.checkpoint), "requests_served": self.served, "in_memory": self.in_memory}

    def contract(self) -> dict[str, Any]:
        """What a request holds and a response returns: the data settings the rows are read with (column mapping,
        sizes, ...), the model's decisions (thresholds), the limits and the history kept."""
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(self.inference.data_cfg, resolve=True)
        data.pop("path", None)
        return {
            "domain": self.domain, "model": self.model_name, "version": self.version,
            "request": {"json": {"rows": "list of objects, one per row, in the training file's own columns (data.columns)",
                                 "images": "list of images: base64-encoded PNG strings or nested arrays (H, W) / (C, H, W)",
                                 "figures": "true: also return the figures predict draws (healthcare: heatmap overlays) as base64 PNG"},
                        "csv": "a text/csv body or a multipart upload named 'file' (.csv or .parquet)",
                        "query": {"format": "json (default) or csv: the table predict writes", "figures": "true | false"}},
            "data": data, "decisions": self.inference.model.decisions(), "limits": asdict(self.settings),
            "history": None if self.history is None else {"rows": len(self.history), "columns": [str(c) for c in self.history.columns],
                                                           "updated": "each request's rows are appended after they are scored"},
        }

    def predict(self, data: pd.DataFrame | np.ndarray, figures: bool = False) -> tuple[pd.DataFrame, dict[str, str]]:
        """The predictions table of ``data`` (rows in the raw schema, or images) and, with ``figures``, the figures
        ``predict`` draws for them (relative name -> base64 PNG)."""
        from sectorkit.core.pipeline import collect_predictions
        from sectorkit.core.reporting import RunContext

        if len(data) > self.settings.max_rows:
            raise RequestError(413, f"{len(data)} rows: a request holds at most serve.max_rows={self.settings.max_rows}")
        if len(data) == 0:
            raise RequestError(422, "the request holds no rows")
        takes = type(self.datamodule).predict_input
        if (takes == "images") != isinstance(data, np.ndarray):
            what = '{"images": [...]}' if takes == "images" else '{"rows": [...]}, a CSV body or an upload'
            raise RequestError(422, f"the {self.domain} model scores {takes}: send {what}")
        with self.lock:
            folder: Path | None = None
            try:
                if self.in_memory:
                    datamodule = self._prepare(data)
                else:
                    folder = Path(tempfile.mkdtemp(dir=self.workdir))
                    datamodule = self._prepare_from_file(data, folder)
                outputs, table = collect_predictions(self.inference.model, datamodule, "predict")
                drawn: dict[str, str] = {}
                if figures and self.inference.domain.report:
                    folder = folder or Path(tempfile.mkdtemp(dir=self.workdir))
                    plots = folder / "figures"
                    self.inference.domain.report(RunContext(folder, self.cfg, datamodule, self.inference.model, {}, stage="predict",
                                                            predictions=table, outputs=outputs, plots_dir=plots))
                    drawn = {str(p.relative_to(plots)): base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(plots.rglob("*.png"))}
                if self.history is not None and isinstance(data, pd.DataFrame):
                    self.history = pd.concat([self.history, data], ignore_index=True).tail(self.settings.max_history_rows).reset_index(drop=True)
                self.served += 1
                return table, drawn
            except SectorkitError as err:
                if isinstance(err, RequestError):
                    raise
                raise RequestError(422, str(err)) from None
            finally:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)

    def _prepare(self, data: pd.DataFrame | np.ndarray) -> Any:
        """The data module built at start, its predict split set up from ``data`` in memory (``setup_predict``)."""
        datamodule = self.datamodule
        if self.history is not None:
            datamodule.history = self.history
        try:
            datamodule.setup_predict(data, "request")
        except SectorkitError:
            raise
        except (ValueError, TypeError, OverflowError) as err:  # a value the column checks did not foresee (pandas' own error)
            raise RequestError(422, f"request: the rows cannot be read ({str(err).splitlines()[0]})") from None
        return datamodule

    def _prepare_from_file(self, data: pd.DataFrame | np.ndarray, folder: Path) -> Any:
        """A new data module for ``data`` written to a file in ``folder`` and read back by ``setup('predict')``
        (``serve.in_memory=false``, or a data module without ``setup_predict``)."""
        from sectorkit.core.io import write_input

        try:
            path = write_input(data, folder)
        except (ValueError, TypeError, OverflowError) as err:  # e.g. a column mixing numbers and text (pyarrow)
            raise RequestError(422, f"the rows cannot be stored as a table: {str(err).splitlines()[0]}") from None
        kwargs: dict[str, Any] = {"path": str(path)}
        if self.history is not None:
            kwargs["history"] = self.history
        try:
            datamodule = self.inference.datamodule(**kwargs)
            datamodule.prepare_data()
            datamodule.setup("predict")
        except SectorkitError as err:
            raise RequestError(422, str(err).replace(str(path), "request")) from None
        return datamodule


def write_frame_check(frame: pd.DataFrame) -> None:
    """Refuse column names a table file cannot hold (non-strings) before writing."""
    bad = [c for c in frame.columns if not isinstance(c, str)]
    if bad:
        raise RequestError(422, f"column names must be strings, got {bad[:3]}")


# --- request parsing -----------------------------------------------------------------------------------
def rows_from_json(payload: Any) -> tuple[pd.DataFrame | np.ndarray, bool]:
    """``{"rows": [...]}`` or ``{"images": [...]}`` (with optional ``"figures": true``) -> a frame or an image array."""
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object with 'rows' (a list of objects) or 'images' (a list of images)")
    unknown = sorted(set(payload) - {"rows", "images", "figures"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; expected 'rows' or 'images', and optionally 'figures'")
    figures = payload.get("figures", False)
    if not isinstance(figures, bool):
        raise RequestError(422, f"field 'figures' must be true or false, got {figures!r}")
    if ("rows" in payload) == ("images" in payload):
        raise RequestError(422, "give exactly one of the fields 'rows' (a list of objects) or 'images' (a list of images)")
    if "rows" in payload:
        rows = payload["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise RequestError(422, "field 'rows' must be a list of objects (one per row, keyed by column name)")
        for index, row in enumerate(rows):
            for key, value in row.items():
                if isinstance(value, (dict, list)):
                    raise RequestError(422, f"rows[{index}].{key}: expected a number, a string or null, got a {type(value).__name__}")
        return pd.DataFrame.from_records(rows), figures
    images = payload["images"]
    if not isinstance(images, list):
        raise RequestError(422, "field 'images' must be a list of base64 PNG strings or nested arrays")
    return image_array(images), figures


def image_array(images: list[Any]) -> np.ndarray:
    """Images (base64 PNG strings or nested arrays, all of one shape) as one array (N, H, W) or (N, C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for index, image in enumerate(images):
        if isinstance(image, str):
            try:
                picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(image, validate=True))))
            except (binascii.Error, UnidentifiedImageError, ValueError) as err:
                raise RequestError(422, f"images[{index}]: not a base64-encoded PNG ({err})") from None
            array = picture if picture.ndim == 2 else np.moveaxis(picture, -1, 0)  # (H, W, C) -> (C, H, W)
        else:
            try:
                array = np.asarray(image, dtype=np.float32)
            except (ValueError, TypeError):
                raise RequestError(422, f"images[{index}]: expected a nested array of numbers (H, W) or (C, H, W)") from None
        if array.ndim not in (2, 3):
            raise RequestError(422, f"images[{index}]: expected (H, W) or (C, H, W), got shape {list(array.shape)}")
        if arrays and array.shape != arrays[0].shape:
            raise RequestError(422, f"images[{index}]: shape {list(array.shape)} differs from images[0]'s {list(arrays[0].shape)}")
        arrays.append(array)
    if not arrays:
        raise RequestError(422, "field 'images' is empty")
    return np.stack(arrays)


def rows_from_table(body: bytes, name: str) -> pd.DataFrame:
    """A CSV body or an uploaded CSV / Parquet file as a frame."""
    try:
        if name.lower().endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(body))
        return pd.read_csv(io.BytesIO(body))
    except Exception as err:  # noqa: BLE001 - any unreadable upload is the caller's error, said in one line
        raise RequestError(422, f"{name}: not a readable {'Parquet' if name.endswith('.parquet') else 'CSV'} table ({str(err).splitlines()[0]})") from None


# --- the HTTP application ------------------------------------------------------------------------------
def create_app(service: ModelService) -> "FastAPI":
    """The FastAPI application: ``GET /health``, ``GET /contract``, ``POST /predict``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title=f"sectorkit {service.domain} / {service.model_name}", version=service.version)
    limit = service.settings.max_bytes

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/contract")
    async def contract() -> dict[str, Any]:
        return service.contract()

    @app.post("/predict")
    async def predict(request: Request, format: str = "json", figures: bool = False) -> Response:
        if format not in ("json", "csv"):
            raise RequestError(422, f"query parameter 'format'={format!r}: expected json or csv")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"the body has {int(declared)} bytes: a request holds at most serve.max_bytes={limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, f"the body has more than serve.max_bytes={limit} bytes")
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                payload = json.loads(bytes(body) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RequestError(400, f"the body is not valid JSON ({err})") from None
            data, asked = rows_from_json(payload)
            figures = figures or asked
        elif kind == "text/csv":
            data = rows_from_table(bytes(body), "request.csv")
        elif kind == "multipart/form-data":
            data = await _upload(request, bytes(body))
        else:
            raise RequestError(415, f"content-type {kind!r}: send application/json, text/csv or a multipart upload named 'file'")
        if isinstance(data, pd.DataFrame):
            write_frame_check(data)
        started = time.perf_counter()
        table, drawn = await run_in_threadpool(service.predict, data, figures)
        headers = {"x-inference-ms": f"{(time.perf_counter() - started) * 1e3:.2f}"}
        if format == "csv":
            return Response(table.to_csv(index=False), media_type="text/csv", headers=headers)
        records = json.loads(table.to_json(orient="records", date_format="iso"))
        content = {"domain": service.domain, "model": service.model_name, "rows": len(table), "predictions": records}
        if figures:
            content["figures"] = drawn
        return JSONResponse(content, headers=headers)

    return app


async def _upload(request: Any, body: bytes) -> pd.DataFrame:
    """The table uploaded as the multipart field ``file``."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise RequestError(422, "multipart upload: expected a file field named 'file' (.csv or .parquet)")
    return rows_from_table(await upload.read(), upload.filename or "file.csv")


# --- running it ----------------------------------------------------------------------------------------
class RunningServer:
    """A server started in a background thread (for notebooks and tests): ``url``, ``stop()``."""

    def __init__(self, service: ModelService, host: str, port: int) -> None:
        import uvicorn

        self.service = service
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SectorkitError(f"the server did not start on {host}:{port} (is the port in use?)")
            time.sleep(0.02)
        bound = self.server.servers[0].sockets[0].getsockname()
        self.url = f"http://{host}:{bound[1]}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        shutil.rmtree(self.service.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000, overrides: Sequence[str] = (),
          settings: ServeSettings | None = None, block: bool = True) -> "RunningServer | None":
    """Serve the model at ``path`` (a run folder or a checkpoint) on ``host:port`` (``port=0``: a free one); blocks
    until interrupted, or with ``block=False`` returns the :class:`RunningServer` running in the background."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs the serve extra: pip install 'sectorkit[serve]' (FastAPI, uvicorn)") from None
    service = ModelService(path, overrides, settings)
    if not block:
        return RunningServer(service, host, port)
    print(f"serving {service.domain} / {service.model_name} on http://{host}:{port} (GET /health, GET /contract, POST /predict; "
          "Ctrl+C stops)", flush=True)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        shutil.rmtree(service.workdir, ignore_errors=True)
    return None


def serve_command(arguments: Sequence[str]) -> int:
    """``sectorkit serve key=value ...``: ckpt_path, host, port and serve.* here; anything else (``data.<key>=...``)
    is an override of the checkpoint's settings."""
    values: dict[str, str] = {}
    overrides: list[str] = []
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep:
            raise ConfigError(f"{argument!r}: serve takes key=value arguments (ckpt_path=..., port=..., serve.max_rows=...)")
        if key in ("ckpt_path", "host", "port") or key.startswith("serve."):
            values[key] = value
        else:
            overrides.append(argument)
    if "ckpt_path" not in values:
        raise ConfigError("ckpt_path is not set: give the run folder or checkpoint to serve, e.g. ckpt_path=outputs/<domain>/runs/<run>")
    unknown = [k for k in values if k.startswith("serve.") and k.removeprefix("serve.") not in SERVE_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; valid: host, port, {', '.join(f'serve.{k}' for k in SERVE_KEYS)}")
    settings: dict[str, Any] = {}
    for key in SERVE_KEYS:
        raw = values.get(f"serve.{key}")
        if raw is None or raw in ("null", ""):
            continue
        settings[key] = raw if key == "history" else _flag(f"serve.{key}", raw) if key == "in_memory" else _whole_number(f"serve.{key}", raw)
    port = _whole_number("port", values.get("port", "8000"))
    if not 0 <= port <= 65535:
        raise ConfigError(f"port={port}: expected 0..65535")
    serve(values["ckpt_path"], values.get("host", "127.0.0.1"), port, overrides, ServeSettings(**settings))
    return 0


def _flag(key: str, raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ConfigError(f"{key}={raw!r}: expected true or false")
    return raw.lower() == "true"


def _whole_number(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected a whole number") from None

