"""Export a model's full inference path (``forward``) to ONNX or TorchScript, with a parity check."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sectorkit.core.errors import SectorkitError
from sectorkit.core.io import atomic_path
from sectorkit.core.module import Batch, SectorModule

ATOL, RTOL = 1e-4, 1e-3
MAX_FLIPPED_DECISIONS = 0.001  # share of boolean outputs allowed to differ (scores exactly at a threshold)


def input_names(model: SectorModule, count: int) -> list[str]:
    """The names of ``forward``'s inputs (its parameter names), so an exported graph says what it takes."""
    names = [p.name for p in inspect.signature(model.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] if len(names) >= count else [f"input_{i}" for i in range(count)]


def export_model(model: SectorModule, batch: Batch, output: Path, fmt: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` to ``output`` and return a parity report against ``model(*inputs)`` on ``batch``.

    ONNX inputs and outputs carry real names (``forward``'s parameters; the module's ``export_outputs``), and the
    file carries ``metadata`` (domain, model, version, decisions, the input contract) as JSON metadata entries.
    Raises :class:`SectorkitError` when the exported outputs differ from PyTorch's beyond tolerance.
    """
    model = model.eval().cpu()
    inputs = tuple(t.cpu() for t in model.batch_inputs(batch))
    with torch.inference_mode():
        expected = _flatten(model(*inputs))
    names = input_names(model, len(inputs))
    outputs = list(model.export_outputs) if len(model.export_outputs) == len(expected) else [f"output_{i}" for i in range(len(expected))]
    with atomic_path(output) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            axes = dict(zip(names, model.export_dynamic_axes(inputs)))
            torch.onnx.export(model, inputs, str(tmp), input_names=names, output_names=outputs, dynamic_axes=axes, dynamo=False)
            _add_metadata(tmp, {**(metadata or {}), "inputs": names, "outputs": outputs})
            got = _run_onnx(tmp, names, inputs)
        else:
            model.to_torchscript(file_path=str(tmp), method="trace", example_inputs=inputs)
            with torch.inference_mode():
                got = [t.numpy() for t in _flatten(torch.jit.load(str(tmp))(*inputs))]
        report = parity(expected, got)
        report.update({"format": fmt, "path": str(output), "inputs": dict(zip(names, (list(t.shape) for t in inputs))),
                       "outputs_named": outputs, "model": type(model).__name__, "metadata": metadata or {}})
        if not report["passed"]:
            raise SectorkitError(f"export parity check failed for {output.name}: {report['outputs']}")
    return report


def parity(expected: list[torch.Tensor], got: list[np.ndarray]) -> dict[str, Any]:
    """Compare every output: float outputs within ATOL/RTOL, boolean/integer outputs almost all equal."""
    rows = []
    for index, (want, have) in enumerate(zip(expected, got)):
        want_np = want.detach().cpu().numpy()
        if want_np.dtype.kind in "fc":
            finite = np.isfinite(want_np)
            diff = float(np.max(np.abs(want_np[finite] - have[finite]))) if finite.any() else 0.0
            ok = bool(np.array_equal(finite, np.isfinite(have)) and np.allclose(want_np[finite], have[finite], atol=ATOL, rtol=RTOL))
            rows.append({"output": index, "kind": "float", "max_abs_diff": diff, "passed": ok})
        else:
            flipped = float(np.mean(want_np != have)) if want_np.size else 0.0
            rows.append({"output": index, "kind": "decision", "share_different": flipped, "passed": flipped <= MAX_FLIPPED_DECISIONS})
    passed = len(expected) == len(got) and all(r["passed"] for r in rows)
    return {"passed": passed, "max_abs_diff": max((r.get("max_abs_diff", 0.0) for r in rows), default=0.0), "outputs": rows}


def _add_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """Store ``metadata`` in the ONNX file's ``metadata_props`` (strings; other values as JSON)."""
    import onnx

    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = str(key), value if isinstance(value, str) else json.dumps(value)
    onnx.save(graph, str(path))


def _run_onnx(path: Path, names: list[str], inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}  # inputs the graph does not use are pruned
    return session.run(None, {n: t.numpy() for n, t in zip(names, inputs) if n in used})


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    return [t for v in out for t in _flatten(v)]
