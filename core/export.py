"""Export a model's full inference path (``forward``) to ONNX or TorchScript, with a parity check."""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sectorkit.core.errors import SectorkitError
from sectorkit.core.io import atomic_path
from sectorkit.core.module import Batch, SectorModule

ATOL, RTOL = 1e-4, 1e-3
MAX_FLIPPED_DECISIONS = 0.001  # share of boolean outputs allowed to differ (scores exactly at a threshold)


@dataclass
class ExportGraph:
    """What is exported in place of ``forward`` when a domain moves row-wise preprocessing into the graph, so a
    deployed file takes the user's raw inputs (a data module's :meth:`export_graph`).

    ``module`` maps the raw ``inputs`` (named ``names``) to the outputs named ``outputs``; ``dynamic_axes`` names
    each input's variable dimensions. The parity check runs on ``inputs`` and on each tuple of ``checks`` (other
    batch sizes, image sizes, unknown ids). ``reference``: what the data module's own preprocessing and the model
    give on the rows of ``inputs`` (None for an output not compared); the graph must agree with it.
    """

    module: torch.nn.Module
    inputs: tuple[torch.Tensor, ...]
    names: list[str]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    checks: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    reference: list[torch.Tensor | None] | None = None


def input_names(model: SectorModule, count: int) -> list[str]:
    """The names of ``forward``'s inputs (its parameter names), so an exported graph says what it takes."""
    names = [p.name for p in inspect.signature(model.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] if len(names) >= count else [f"input_{i}" for i in range(count)]


def export_model(model: SectorModule, batch: Batch, output: Path, fmt: str, metadata: dict[str, Any] | None = None,
                 graph: ExportGraph | None = None) -> dict[str, Any]:
    """Write ``model`` (or ``graph``, the model with its row-wise preprocessing) to ``output`` and return a parity
    report: the exported outputs against PyTorch's on the same inputs (``graph``: its raw inputs and each of its
    ``checks``; without it, ``model(*inputs)`` on ``batch``).

    ONNX inputs and outputs carry real names (``forward``'s parameters and the module's ``export_outputs``, or the
    graph's), and the file carries ``metadata`` (domain, model, version, decisions, the input contract) as JSON
    metadata entries. Raises :class:`SectorkitError` when the exported outputs differ from PyTorch's beyond
    tolerance, or when the graph's in-graph preprocessing disagrees with the data module's (``graph.reference``).
    """
    model = model.eval().cpu()
    if graph is None:
        inputs = tuple(t.cpu() for t in model.batch_inputs(batch))
        module: torch.nn.Module = model
        names = input_names(model, len(inputs))
        axes = dict(zip(names, model.export_dynamic_axes(inputs)))
        checks: list[tuple[torch.Tensor, ...]] = []
    else:
        module, inputs, names, axes = graph.module.eval().cpu(), tuple(t.cpu() for t in graph.inputs), list(graph.names), dict(graph.dynamic_axes)
        checks = [tuple(t.cpu() for t in case) for case in graph.checks]
    cases = [inputs, *checks]
    expected = [_flatten(_run_torch(module, case)) for case in cases]
    if graph is not None:
        outputs = list(graph.outputs)
    else:
        n = len(expected[0])
        outputs = list(model.export_outputs) if len(model.export_outputs) == n else [f"output_{i}" for i in range(n)]
    with atomic_path(output) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(module, inputs, str(tmp), input_names=names, output_names=outputs, dynamic_axes=axes, dynamo=False)
            _add_metadata(tmp, {**(metadata or {}), "inputs": names, "outputs": outputs})
            got = [_run_onnx(tmp, names, case) for case in cases]
        else:
            if graph is None:
                model.to_torchscript(file_path=str(tmp), method="trace", example_inputs=inputs)
            else:
                torch.jit.save(_trace(module, inputs), str(tmp))
            loaded = torch.jit.load(str(tmp))
            with torch.inference_mode():
                got = [[t.numpy() for t in _flatten(loaded(*case))] for case in cases]
        reports = [parity(want, have) for want, have in zip(expected, got)]
        report = reports[0]
        report.update({"format": fmt, "path": str(output), "inputs": dict(zip(names, (list(t.shape) for t in inputs))),
                       "outputs_named": outputs, "model": type(model).__name__, "metadata": metadata or {}})
        if checks:
            report["checks"] = [{"inputs": dict(zip(names, (list(t.shape) for t in case))), **r} for case, r in zip(checks, reports[1:])]
            report["passed"] = all(r["passed"] for r in reports)
            report["max_abs_diff"] = max(r["max_abs_diff"] for r in reports)
        if not report["passed"]:
            failed = next(r["outputs"] for r in reports if not r["passed"])
            raise SectorkitError(f"export parity check failed for {output.name}: {failed}")
        if graph is not None and graph.reference is not None:
            pairs = [(want, have.detach().cpu().numpy()) for want, have in zip(expected[0], graph.reference) if have is not None]
            check = parity([w for w, _ in pairs], [h for _, h in pairs])
            report["preprocessing_parity"] = {**check, "compared": [o for o, r in zip(outputs, graph.reference) if r is not None]}
            if not check["passed"]:
                raise SectorkitError(f"export of {output.name}: the graph's preprocessing differs from the data module's: {check['outputs']}")
    return report


def _trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of a graph holding a LightningModule (flagged as Lightning's own ``to_torchscript`` flags it,
    so its trainer-bound properties are not read while tracing)."""
    inner = [m for m in module.modules() if isinstance(m, SectorModule)]
    for m in inner:
        m._jit_is_scripting = True
    try:
        return torch.jit.trace(module, inputs, check_trace=False)
    finally:
        for m in inner:
            m._jit_is_scripting = False


def _run_torch(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    with torch.inference_mode():
        return module(*inputs)


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
