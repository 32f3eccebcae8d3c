"""Serving load: requests/s and p50/p99 latency of ``sectorkit serve`` per domain, at one row and at a larger batch.

    python benchmarks/serve_load.py [--quick] [--domains finance retail ...] [--run finance=RUN_FOLDER ...] [--compare] [--out FILE]

Each domain's quick model (``experiment=quick``, 1 epoch; or the run folder given with ``--run``) is served by
``python -m sectorkit serve`` in its own process on loopback; a bounded load generator (a fixed number of requests
from a few concurrent clients, each with its own HTTP connection) posts JSON rows in the training data's own
schema, after a few warm-up requests. The latency is the client's (request sent to response read, JSON included).
Finance requests carry new transaction ids (the server appends every scored row to its card/terminal history);
agriculture's larger batch is every series of the sample (one forecast per series). ``--compare`` also measures,
in the same run, a server started with ``serve.in_memory=false`` (each request written
to a file that ``predict``'s file path reads back, the route every request took before requests were scored in memory);
both servers run at once and take the same requests in alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from sectorkit.core.io import atomic_write_json

from benchmarks.common import RESULTS, machine_info

DOMAINS = ("finance", "retail", "agriculture", "healthcare")
QUIET = ["trainer.max_epochs=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_quick(domain: str, root: Path) -> Path:
    """A quick run of ``domain`` (1 epoch) under ``root``; its run folder."""
    env = {**os.environ, "SECTORKIT_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "sectorkit", "train", f"domain={domain}", "experiment=quick", *QUIET], env=env, cwd=root,
                   check=True, capture_output=True, text=True)
    return next((root / "outputs" / domain / "runs").glob("*/metrics.json")).parent


def payloads(domain: str, run: Path, root: Path, batch: int, count: int) -> tuple[list[dict[str, Any]], int]:
    """``count`` request bodies of ``batch`` rows (or as many as the domain allows) and the rows each holds."""
    import torch
    from sectorkit.core.run_record import RECORD_KEY

    metrics = json.loads((run / "metrics.json").read_text())
    data = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)[RECORD_KEY]["data"]
    if domain == "finance":
        from sectorkit.domains.finance.sample import SimulatorConfig, load_sample

        raw = load_sample(SimulatorConfig(**data["simulator"]), data.get("cache_dir") or root / "data_cache")
        rows = raw.tail(batch).drop(columns=["TX_FRAUD", "TX_FRAUD_SCENARIO"], errors="ignore")
        rows = rows.assign(TX_DATETIME=rows["TX_DATETIME"].astype(str))
        bodies = []
        for index in range(count):  # new transaction ids each request: the server keeps every scored row as history
            fresh = rows.assign(TRANSACTION_ID=10**9 + index * batch + np.arange(len(rows)))
            bodies.append({"rows": fresh.to_dict(orient="records")})
        return bodies, len(rows)
    if domain == "retail":
        users = pd.read_csv(run / "predictions.csv")["user"].astype(str).unique().tolist()
        chosen = [users[i % len(users)] if i % 8 else f"new-user-{i}" for i in range(batch)]  # one in eight unknown: the fallback
        return [{"rows": [{data["user_column"]: u} for u in chosen]}] * count, batch
    if domain == "agriculture":
        from sectorkit.domains.agriculture.sample import synthetic_weather

        series = synthetic_weather(**data["synthetic"])
        ids = series["series_id"].unique()[: batch]
        rows = series[series["series_id"].isin(ids)].groupby("series_id").tail(data["lookback"])
        rows = rows.assign(date=pd.to_datetime(rows["date"]).dt.strftime("%Y-%m-%d"))
        return [{"rows": rows.to_dict(orient="records")}] * count, len(ids)
    from sectorkit.domains.healthcare.sample import make_phantoms

    size = data["image_size"]
    images = make_phantoms(batch - batch // 2, batch // 2, size=size, spatial_dims=2, seed=3).images.astype(np.float32)
    return [{"images": np.round(images.reshape(batch, size, size), 4).tolist()}] * count, batch


def load(url: str, bodies: list[dict[str, Any]], clients: int) -> tuple[list[float], float, int]:
    """Post every body from ``clients`` concurrent clients: per-request latency (s), wall time and error count."""
    import httpx

    encoded = [json.dumps(b).encode() for b in bodies]
    chunks = [encoded[i::clients] for i in range(clients)]

    def client(chunk: list[bytes]) -> tuple[list[float], int]:
        latencies, errors = [], 0
        with httpx.Client(timeout=300) as http:
            for body in chunk:
                started = time.perf_counter()
                response = http.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200
        return latencies, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(client, chunks))
    return [t for p in parts for t in p[0]], time.perf_counter() - started, sum(p[1] for p in parts)


def start_server(domain: str, run: Path, root: Path, in_memory: bool) -> tuple[subprocess.Popen, str, dict[str, Any], float]:
    """``sectorkit serve`` of ``run`` on a free loopback port: the process, its URL, its health and its start-up time (s)."""
    import httpx

    port = free_port()
    env = {**os.environ, "SECTORKIT_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "sectorkit", "serve", f"ckpt_path={run}", f"port={port}", f"serve.in_memory={str(in_memory).lower()}"],
                              env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"{domain}: the server stopped: {server.stderr.read()[-2000:]}")
        try:
            return server, url, httpx.get(f"{url}/health", timeout=2).json(), time.perf_counter() - started
        except httpx.HTTPError:
            time.sleep(0.2)


def measure(domain: str, run: Path, root: Path, batches: list[int], requests: int, clients: int, warmup: int,
            routes: tuple[bool, ...] = (True,)) -> list[dict[str, Any]]:
    """Per batch and route (``True``: in memory, ``False``: ``serve.in_memory=false``) the load figures. With two routes
    both servers run at once and take the same request bodies in alternating rounds, so a change in the machine's load
    touches both alike."""
    servers = {}
    try:
        for in_memory in routes:
            servers[in_memory] = start_server(domain, run, root, in_memory)
        rows = []
        for batch in batches:
            bodies, per_request = payloads(domain, run, root, batch, warmup + requests)
            rounds = 4 if len(routes) > 1 else 1
            measured: dict[bool, list] = {route: [[], 0.0, 0] for route in routes}
            for route in routes:
                load(servers[route][1], bodies[:warmup], 1)
            for index in range(rounds):
                for route in routes if index % 2 == 0 else routes[::-1]:
                    latencies, wall, errors = load(servers[route][1], bodies[warmup + index::rounds], clients)
                    measured[route][0] += latencies
                    measured[route][1] += wall
                    measured[route][2] += errors
            for route in routes:
                latencies, wall, errors = measured[route]
                ms = np.asarray(latencies) * 1e3
                rows.append({"domain": domain, "model": servers[route][2]["model"], "route": "memory" if route else "file", "batch": per_request,
                             "requests": requests, "clients": clients, "errors": errors, "seconds": round(wall, 3),
                             "requests_per_s": round(requests / wall, 2), "rows_per_s": round(requests * per_request / wall, 1),
                             "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
                             "server_start_s": round(servers[route][3], 1)})
                print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        for server, *_ in servers.values():
            server.terminate()
            server.wait(timeout=30)


def markdown(results: dict[str, Any]) -> str:
    """The table of docs/benchmarks.md."""
    s = results["settings"]
    lines = [f"Measured with `{results.get('command', 'python benchmarks/serve_load.py')}` (OMP_NUM_THREADS={results.get('threads')})"
             + ("" if results.get("complete", True) else "; cut short: the domains below only") + ".", "",
             (f"`sectorkit serve` on loopback, one server process per domain (quick model, 1 epoch), {s['requests']} requests per row of "
              f"the table from {s['clients']} concurrent clients after {s['warmup']} warm-up requests; latency is the client's, JSON "
              "included. Batch: rows (finance, retail users), images (healthcare: PatchCore's nearest-neighbour search over its "
              "memory bank is most of a request) or forecasts (agriculture: one per series, "
              f"{s.get('lookback', 28)} days each) per request. Finance keeps and extends its card/terminal history on every request."),
             "", "| domain | model | route | batch | requests/s | rows/s | p50 ms | p99 ms | errors |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    if any(r.get("route") == "file" for r in results["results"]):
        lines[2] += (" Route `memory`: the server as shipped, each request's rows scored in memory by the data module built at "
                     "start; `file`: the same server with `serve.in_memory=false`, each request written to a file that `predict`'s "
                     "file path reads back with a data module built per request (the route before), measured in the same run: both servers "
                     "running at once, the same requests sent to each in four alternating rounds.")
    for r in results["results"]:
        lines.append(f"| {r['domain']} | {r['model']} | {r.get('route', 'file')} | {r['batch']} | {r['requests_per_s']:.1f} | {r['rows_per_s']:.0f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and clients")
    parser.add_argument("--domains", nargs="*", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--run", action="append", default=[], metavar="DOMAIN=RUN_FOLDER", help="serve this run instead of training one")
    parser.add_argument("--batch", type=int, default=64, help="the larger batch (rows or users per request)")
    parser.add_argument("--image-batch", type=int, default=8, help="healthcare's larger batch (images per request)")
    parser.add_argument("--merge", action="store_true", help="keep the other domains' results already in --out")
    parser.add_argument("--compare", action="store_true", help="also measure serve.in_memory=false (the file route) in the same run")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = parser.parse_args(argv)
    requests, clients, warmup = (20, 2, 2) if args.quick else (60, 4, 3)
    given = dict(item.split("=", 1) for item in args.run)
    out: dict[str, Any] = {"machine": machine_info(), "torch": __import__("torch").__version__, "threads": os.environ.get("OMP_NUM_THREADS"),
                           "settings": {"requests": requests, "clients": clients, "warmup": warmup, "batch": args.batch, "image_batch": args.image_batch,
                                        "quick": args.quick},
                           "command": " ".join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])]),
                           "results": [], "complete": False}
    if args.merge and args.out.is_file():  # a domain measured again replaces its rows; the others are kept, with their command
        earlier = json.loads(args.out.read_text())
        out["results"] = [r for r in earlier["results"] if r["domain"] not in args.domains]
        out["command"] = f"{earlier['command']}; {out['command']}"
    with tempfile.TemporaryDirectory(prefix="serve_load_") as folder:
        for domain in args.domains:
            root = Path(folder) / domain
            root.mkdir()
            run = Path(given[domain]) if domain in given else train_quick(domain, root)
            root = run.parents[3] if domain in given else root  # the run's SECTORKIT_ROOT (its data cache)
            batches = [1, args.image_batch if domain == "healthcare" else args.batch]
            out["results"] += measure(domain, run, root, batches, requests, clients, warmup, (False, True) if args.compare else (True,))
            atomic_write_json(args.out, out)  # after each domain: a cut-short run keeps what it measured
    out["complete"] = True
    atomic_write_json(args.out, out)
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
