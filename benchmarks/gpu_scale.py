"""Every domain's hot path at production size on one GPU, beside the same workloads on the CPU, against the card's
own ceilings measured in the same run.

Workloads (the domain's network and LightningModule on tensors resident on the device; no DataLoader):

- retail: synthetic interactions with MovieLens-20M's shape (138,493 users, 26,744 items, ~20 M interactions;
  every user >= 20 interactions, log-normal user activity, Zipf item popularity, 10 % held out at random):
  one LightGCN epoch (the module's BPR loss with on-device negatives, sparse propagation), the exact
  full-ranking evaluation of every test user (chunked top-K, known items masked, ``domains/retail/ranking.py``),
  EASE's closed form on the device and EASE's full-ranking evaluation;
- healthcare: PatchCore (the default preset's network, 256 px) filling its bank from normal images with the
  patch store capped (``max_bank_patches``), the device coreset, then 10,000 test images each searched
  exactly against the whole bank; and PatchCore on 128³ volumes (``experiment=volumes``' network: features at
  1/2 of the side, patch store capped) filling its bank from 32 normal volumes, then 256 test volumes searched exactly;
- finance and agriculture: the default network and module (``model=mlp``; a GRU ensemble of five, the default
  being ten) trained and scored on synthetic rows of the right shape: rows drawn with replacement from a real batch of the quick
  data and kept on the device, batches sliced from it.

For each: samples/s (training, inference), epoch time, peak GPU memory, and for the dense parts the achieved
TFLOP/s (operations counted by ``torch.utils.flop_counter``) and GB/s as a share of a bf16 matmul and a
device-to-device copy measured first; then the CPU at a size that fits 2 cores, and GPU/CPU ratios. The
GPU check (``benchmarks/gpu_check.py``: 32-true and bf16-mixed vs CPU, every domain) runs in the same process.

    python benchmarks/gpu_scale.py                         # CUDA: production sizes + CPU + GPU check, ~8 min on an H100
    python benchmarks/gpu_scale.py --compile               # also measure torch.compile (on vs off)
    python benchmarks/gpu_scale.py --cpu-only --small      # the whole script on the CPU at tiny sizes (< 2 min)

``--quick`` (run_all's quick mode) is ``--small`` on whatever is present. Without CUDA and without ``--cpu-only``
or ``--small`` it writes a note saying so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sectorkit.core.io import atomic_write_json

from benchmarks.common import RESULTS, compose_domain, machine_info, markdown_table, quiet_lightning

# production sizes (GPU), sizes that fit 2 CPU cores, and tiny sizes (--small)
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "retail": {"users": 138_493, "items": 26_744, "interactions": 20_000_263, "batch": 65_536, "user_chunk": 8192},
        "healthcare": {"image_size": 256, "train_images": 1000, "test_images": 10_000, "batch": 32, "max_bank_patches": 1_000_000},
        "healthcare_volumes": {"volume_size": 128, "train_volumes": 32, "test_volumes": 256, "batch": 2, "max_bank_patches": 1_000_000},
        "finance": {"rows": 20_000_000, "train_batch": 65_536, "train_steps": 200, "infer_batch": 1_048_576},
        "agriculture": {"rows": 5_000_000, "train_batch": 16_384, "train_steps": 200, "infer_batch": 262_144},
    },
    "cpu": {
        "retail": {"users": 4000, "items": 1500, "interactions": 200_000, "batch": 8192, "user_chunk": 1024},
        "healthcare": {"image_size": 256, "train_images": 2, "test_images": 4, "batch": 2, "max_bank_patches": 100_000},
        "healthcare_volumes": {"volume_size": 64, "train_volumes": 2, "test_volumes": 2, "batch": 1, "max_bank_patches": 100_000},
        "finance": {"rows": 100_000, "train_batch": 4096, "train_steps": 20, "infer_batch": 50_000},
        "agriculture": {"rows": 50_000, "train_batch": 1024, "train_steps": 20, "infer_batch": 10_000},
    },
    "small": {
        "retail": {"users": 300, "items": 200, "interactions": 12_000, "batch": 2048, "user_chunk": 128},
        "healthcare": {"image_size": 64, "train_images": 2, "test_images": 4, "batch": 2, "max_bank_patches": 4000},
        "healthcare_volumes": {"volume_size": 16, "train_volumes": 2, "test_volumes": 2, "batch": 1, "max_bank_patches": 4000},
        "finance": {"rows": 8192, "train_batch": 1024, "train_steps": 4, "infer_batch": 4096},
        "agriculture": {"rows": 4096, "train_batch": 512, "train_steps": 4, "infer_batch": 2048},
    },
}
TARGETS = {  # on one H100-class GPU (issue 23)
    ("retail", "full-ranking evaluation"): ("eval_s", "<=", 10.0),
    ("retail", "LightGCN epoch"): ("epoch_s", "<=", 30.0),
    ("healthcare", "PatchCore"): ("inference_per_s", ">=", 2000.0),
    ("finance", "MLP"): ("train_per_s", ">=", 5e6),
    ("finance", "MLP scoring"): ("inference_per_s", ">=", 5e7),
    ("agriculture", "GRU ensemble"): ("train_per_s", ">=", 1e6),
}
DOMAINS = ("retail", "healthcare", "finance", "agriculture")
# the default model of each table domain, composed on the quick data (sizes only come from it)
TABLE_DOMAINS = {
    "finance": ("MLP", ["experiment=quick", "model=mlp"]),
    "agriculture": ("GRU ensemble", ["experiment=quick", "model.ensemble=5"]),
}


# --- timing helpers -------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


@contextlib.contextmanager
def clock(device: torch.device, out: dict[str, float], key: str) -> Iterator[None]:
    """Wall seconds of the block into ``out[key]``, the device synchronised at both ends."""
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    out[key] = time.perf_counter() - start


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call (matmuls and convolutions, as torch's flop counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# --- the card's ceilings --------------------------------------------------------------------------------------
def ceilings(device: torch.device, small: bool) -> dict[str, Any]:
    """bf16 matmul TFLOP/s, device-to-device copy GB/s and, on CUDA, host-to-device GB/s from pageable and pinned
    memory: what the dense parts below are compared with."""
    n = 8192 if device.type == "cuda" else (256 if small else 1024)
    a, b = (torch.randn(n, n, device=device).to(torch.bfloat16) for _ in range(2))
    reps = 20 if device.type == "cuda" else 3
    a @ b
    t: dict[str, float] = {}
    with clock(device, t, "matmul"):
        for _ in range(reps):
            a @ b
    numel = 2**28 if device.type == "cuda" else (2**20 if small else 2**24)  # 1 GiB on the GPU
    src, dst = torch.empty(numel, device=device), torch.empty(numel, device=device)
    dst.copy_(src)
    with clock(device, t, "copy"):
        for _ in range(reps):
            dst.copy_(src)
    out = {"matmul_bf16_tflops": 2 * n**3 * reps / t["matmul"] / 1e12, "matmul_n": n,
           "copy_gbs": 2 * numel * 4 * reps / t["copy"] / 1e9, "copy_mb": numel * 4 / 2**20}
    if device.type == "cuda":
        host = torch.empty(2**26)
        for name, tensor in (("pageable", host), ("pinned", host.pin_memory())):
            tensor.to(device, non_blocking=True)
            with clock(device, t, name):
                for _ in range(5):
                    tensor.to(device, non_blocking=True)
            out[f"h2d_{name}_gbs"] = 5 * tensor.numel() * 4 / t[name] / 1e9
    del a, b, src, dst
    return out


def row(domain: str, workload: str, device: torch.device, size: str, **values: Any) -> dict[str, Any]:
    return {"domain": domain, "workload": workload, "device": device.type, "size": size, **values}


def shares(record: dict[str, Any], flops: float | None, nbytes: float | None, seconds: float, limits: dict[str, Any]) -> None:
    """Achieved TFLOP/s and GB/s of a timed part, and their shares of the measured ceilings."""
    if flops:
        record["tflops"] = flops / seconds / 1e12
        record["tflops_share"] = record["tflops"] / limits["matmul_bf16_tflops"]
    if nbytes:
        record["gbs"] = nbytes / seconds / 1e9
        record["gbs_share"] = record["gbs"] / limits["copy_gbs"]


# --- retail ---------------------------------------------------------------------------------------------------
def synthetic_interactions(users: int, items: int, interactions: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, item) pairs shaped like MovieLens-20M: every user >= 20 interactions, log-normal activity (sd 1),
    Zipf item popularity (exponent 0.9, item ids shuffled); duplicates dropped, the draws scaled up (two
    passes) so that about ``interactions`` distinct pairs remain."""
    g = torch.Generator().manual_seed(seed)
    activity = torch.exp(torch.randn(users, generator=g))
    popularity = torch.arange(1, items + 1, dtype=torch.float64).pow(-0.9)[torch.randperm(items, generator=g)]
    cdf = (popularity.cumsum(0) / popularity.sum()).to(device)
    draws = float(interactions)
    for _ in range(3):
        counts = 20 + (activity / activity.sum() * max(draws - 20 * users, 0)).floor().long()
        user_ids = torch.repeat_interleave(torch.arange(users), counts).to(device)
        uniform = torch.rand(len(user_ids), generator=torch.Generator(device).manual_seed(seed), device=device, dtype=torch.float64)
        keys = torch.unique(user_ids * items + torch.searchsorted(cdf, uniform).clamp(max=items - 1))
        if len(keys) >= 0.97 * interactions:
            break
        draws *= interactions / len(keys)
    return keys // items, keys % items


def retail(device: torch.device, size: str, limits: dict[str, Any], bf16: bool) -> list[dict[str, Any]]:
    from sectorkit.domains.retail.models.ease import ease_weights
    from sectorkit.domains.retail.module import RecommenderModule
    from sectorkit.domains.retail.ranking import ItemSets, factor_scorer, full_ranking, item_item_scorer

    s = SIZES[size]["retail"]
    n_users, n_items = s["users"], s["items"]
    users, items = synthetic_interactions(n_users, n_items, s["interactions"], device)
    held_out = torch.rand(len(users), generator=torch.Generator(device).manual_seed(1), device=device) < 0.1
    tu, ti, vu, vi = users[~held_out], items[~held_out], users[held_out], items[held_out]
    shape = f"{n_users:,} users x {n_items:,} items, {len(users):,} interactions"
    out = []
    # LightGCN: one epoch of the module's BPR loss (fp32: sparse propagation has no bf16 kernel worth it)
    reset_peak(device)
    torch.manual_seed(0)
    net = {"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 64, "n_layers": 2}
    module = RecommenderModule(net, n_users, n_items, len(tu), ks=[10, 20]).to(device)
    module.prepare_fit({"users": tu, "items": ti})
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    order = torch.randperm(len(tu), device=device)
    t: dict[str, float] = {}
    with clock(device, t, "epoch"):
        for part in order.split(s["batch"]):
            loss = module.training_loss({"users": tu[part], "items": ti[part]})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    out.append(row("retail", "LightGCN epoch", device, size, shape=shape, batch=s["batch"], epoch_s=t["epoch"],
                   train_per_s=len(tu) / t["epoch"], peak_gpu_mb=peak_mb(device), loss=float(loss.detach())))
    # exact full-ranking evaluation of every test user
    reset_peak(device)
    module.eval()
    with clock(device, t, "index"):
        known, targets = ItemSets.from_pairs(tu, ti, n_users, n_items), ItemSets.from_pairs(vu, vi, n_users, n_items)
        test_users = torch.unique(vu)
    with torch.no_grad(), clock(device, t, "eval"):
        user_out, item_out = module.net.propagate()
        metrics, _ = full_ranking(factor_scorer(user_out, item_out), test_users, known, targets, [10, 20], n_items,
                                  module.popularity, user_chunk=s["user_chunk"])
    flops = 2 * len(test_users) * n_items * user_out.shape[1]
    record = row("retail", "full-ranking evaluation", device, size, shape=shape, users_ranked=len(test_users), eval_s=t["eval"],
                 index_s=t["index"], inference_per_s=len(test_users) / t["eval"], peak_gpu_mb=peak_mb(device), ndcg_at_10=metrics["ndcg@10"])
    shares(record, flops, len(test_users) * n_items * 4 * 2, t["eval"], limits)  # scores written and read by top-k
    out.append(record)
    del module, optimizer
    # EASE: the closed form on the device, then its full-ranking evaluation (a dense item-item product)
    reset_peak(device)
    with clock(device, t, "ease_fit"):
        weights = ease_weights(tu, ti, n_users, n_items, 250.0)
    record = row("retail", "EASE closed form", device, size, shape=shape, fit_s=t["ease_fit"], peak_gpu_mb=peak_mb(device))
    shares(record, 2 * n_items**3, None, t["ease_fit"], limits)  # Cholesky + its inverse, about n^3 multiply-adds
    out.append(record)
    reset_peak(device)
    with torch.no_grad(), clock(device, t, "ease_eval"):
        metrics, _ = full_ranking(item_item_scorer(weights, known), test_users, known, targets, [10, 20], n_items,
                                  user_chunk=max(256, s["user_chunk"] // 4))
    record = row("retail", "EASE full-ranking evaluation", device, size, shape=shape, eval_s=t["ease_eval"],
                 inference_per_s=len(test_users) / t["ease_eval"], peak_gpu_mb=peak_mb(device), ndcg_at_10=metrics["ndcg@10"])
    shares(record, 2 * len(test_users) * n_items * n_items, None, t["ease_eval"], limits)
    out.append(record)
    return out


# --- healthcare -----------------------------------------------------------------------------------------------
def smooth_noise(n: int, size: int, dims: int, device: torch.device, seed: int) -> torch.Tensor:
    """Smooth random grey images (``dims`` 2) or volumes (``dims`` 3): a coarse noise field upsampled, values in 0..1."""
    g = torch.Generator(device).manual_seed(seed)
    coarse = torch.rand(n, 1, *([max(size // 16, 2)] * dims), generator=g, device=device)
    mode = {2: "bilinear", 3: "trilinear"}[dims]
    return torch.nn.functional.interpolate(coarse, size=(size,) * dims, mode=mode, align_corners=False)


def healthcare(device: torch.device, size: str, limits: dict[str, Any], bf16: bool) -> list[dict[str, Any]]:
    from sectorkit.domains.healthcare.module import AnomalyDetector

    s = SIZES[size]["healthcare"]
    px, batch = s["image_size"], s["batch"]
    net = {"_target_": "sectorkit.domains.healthcare.models.patchcore.PatchCoreDetector", "coreset_size": 2000, "sigma": 4.0,
           "max_pool": False, "max_bank_patches": s["max_bank_patches"],  # the default preset's network, patch store capped
           "chunk": 65536 if device.type == "cuda" else 4096}  # test patches per distance block (x 2000 bank patches)
    model = AnomalyDetector(net=net, image_size=px).to(device).eval()
    pool = smooth_noise(batch, px, 2, device, seed=0)  # the same device-resident images, batch after batch
    fit_and_search = patchcore_fit_and_search(model, pool, s["train_images"], s["test_images"], device, bf16)
    shape = f"{px} px, {s['train_images']:,} train / {s['test_images']:,} test images, bank {len(model.net.bank):,}"
    return [patchcore_row("PatchCore", device, size, shape, s["train_images"], s["test_images"], fit_and_search, limits)]


def patchcore_fit_and_search(model: Any, pool: torch.Tensor, n_train: int, n_test: int, device: torch.device,
                             bf16: bool) -> tuple[dict[str, float], float, bool, float]:
    """Fill the bank from ``n_train`` inputs (the device-resident ``pool`` batch after batch), build the coreset,
    then search ``n_test`` inputs exactly against the whole bank: the clocks, the training peak, whether every score
    is finite, and the inference FLOPs."""
    batch = len(pool)
    t: dict[str, float] = {}
    reset_peak(device)
    with torch.no_grad(), autocast(device, bf16), clock(device, t, "collect"):
        for start in range(0, n_train, batch):
            model.net.collect(pool[: min(batch, n_train - start)])
    with clock(device, t, "coreset"):
        model.net.fit_memory()
    train_peak = peak_mb(device)
    reset_peak(device)
    scores = []
    with torch.inference_mode(), autocast(device, bf16):
        model.raw_outputs(pool)  # warm-up
        with clock(device, t, "inference"):
            for start in range(0, n_test, batch):
                scores.append(model.raw_outputs(pool[: min(batch, n_test - start)])[0])
        flops = count_flops(lambda: model.raw_outputs(pool)) * n_test / batch
    return t, train_peak, bool(torch.isfinite(torch.cat(scores)).all()), flops


def patchcore_row(name: str, device: torch.device, size: str, shape: str, n_train: int, n_test: int,
                  fit_and_search: tuple[dict[str, float], float, bool, float], limits: dict[str, Any]) -> dict[str, Any]:
    """The table row of one PatchCore workload (``patchcore_fit_and_search``'s results)."""
    t, train_peak, finite, flops = fit_and_search
    record = row("healthcare", name, device, size, shape=shape, train_per_s=n_train / t["collect"], coreset_s=t["coreset"],
                 epoch_s=t["collect"] + t["coreset"], inference_per_s=n_test / t["inference"], inference_s=t["inference"],
                 train_peak_gpu_mb=train_peak, peak_gpu_mb=peak_mb(device), finite=finite)
    shares(record, flops, None, t["inference"], limits)
    return record


def healthcare_volumes(device: torch.device, size: str, limits: dict[str, Any], bf16: bool) -> list[dict[str, Any]]:
    """PatchCore on 3D volumes with ``experiment=volumes``' network (128³ on the GPU): the bank filled from normal
    volumes with the patch store capped, the coreset, then every test volume searched exactly against the whole bank."""
    from sectorkit.domains.healthcare.module import AnomalyDetector

    s = SIZES[size]["healthcare_volumes"]
    side, batch = s["volume_size"], s["batch"]
    net = {"_target_": "sectorkit.domains.healthcare.models.patchcore.PatchCoreDetector", "coreset_size": 2000, "sigma": 4.0,
           "max_pool": True, "max_bank_patches": s["max_bank_patches"],  # the volumes preset's network
           "chunk": 65536 if device.type == "cuda" else 4096}
    model = AnomalyDetector(net=net, spatial_dims=3, image_size=side).to(device).eval()
    pool = smooth_noise(batch, side, 3, device, seed=0)  # the same device-resident volumes, batch after batch
    fit_and_search = patchcore_fit_and_search(model, pool, s["train_volumes"], s["test_volumes"], device, bf16)
    shape = f"{side}³ volumes, {s['train_volumes']:,} train / {s['test_volumes']:,} test, bank {len(model.net.bank):,}"
    return [patchcore_row("PatchCore 3D", device, size, shape, s["train_volumes"], s["test_volumes"], fit_and_search, limits)]


# --- finance and agriculture: the default network + module on device-resident synthetic rows ---------------------
def table_workload(domain: str, device: torch.device, size: str, limits: dict[str, Any], bf16: bool, compile_net: bool,
                   pinned: bool, workdir: Path) -> dict[str, Any]:
    from sectorkit.core.pipeline import build_datamodule, build_model

    name, overrides = TABLE_DOMAINS[domain]
    s = SIZES[size][domain]
    cfg = compose_domain(domain, workdir / domain, overrides)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model(cfg, dm)
    sample = {k: v for k, v in next(iter(dm.train_dataloader())).items() if isinstance(v, torch.Tensor)}
    pick = torch.randint(len(next(iter(sample.values()))), (s["rows"],), generator=torch.Generator().manual_seed(0))
    t: dict[str, float] = {}
    with clock(device, t, "upload"):
        table = {k: (v[pick].pin_memory() if pinned and device.type == "cuda" else v[pick]).to(device, non_blocking=True) for k, v in sample.items()}
    model = model.to(device)
    if compile_net:  # in place: the network keeps its class (the module checks it), its calls go through torch.compile
        model.net.compile()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    bs, steps = s["train_batch"], s["train_steps"]
    order = torch.randperm(s["rows"], device=device)

    def batch(i: int, size_: int) -> dict[str, torch.Tensor]:
        index = order[(i * size_) % max(s["rows"] - size_, 1):][:size_]
        return {k: v[index] for k, v in table.items()}

    def step(b: dict[str, torch.Tensor]) -> None:
        with autocast(device, bf16):
            loss = model.training_loss(b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    reset_peak(device)
    with clock(device, t, "warmup"):
        for i in range(3):
            step(batch(i, bs))
    with clock(device, t, "train"):
        for i in range(steps):
            step(batch(i, bs))
    train_flops = count_flops(lambda: step(batch(0, bs))) * steps
    batch_bytes = sum(v[:bs].element_size() * v[:bs].numel() for v in table.values())
    model.eval()
    with torch.inference_mode(), autocast(device, bf16):
        model(*model.batch_inputs(batch(0, min(s["infer_batch"], s["rows"]))))
        with clock(device, t, "infer"):
            for start in range(0, s["rows"], s["infer_batch"]):
                part = {k: v[start:start + s["infer_batch"]] for k, v in table.items()}
                model(*model.batch_inputs(part))
        infer_flops = count_flops(lambda: model(*model.batch_inputs({k: v[: s["infer_batch"]] for k, v in table.items()})))
    infer_flops *= s["rows"] / min(s["infer_batch"], s["rows"])
    record = row(domain, name + (" (compiled)" if compile_net else ""), device, size, shape=f"{s['rows']:,} rows in memory",
                 batch=bs, train_per_s=bs * steps / t["train"], epoch_s=s["rows"] / (bs * steps / t["train"]),
                 inference_per_s=s["rows"] / t["infer"], upload_s=t["upload"], warmup_s=t["warmup"], peak_gpu_mb=peak_mb(device))
    shares(record, train_flops, batch_bytes * steps, t["train"], limits)
    record["inference_tflops"] = infer_flops / t["infer"] / 1e12
    return record


# --- running it all -------------------------------------------------------------------------------------------
def run_device(device: torch.device, size: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Ceilings, then every selected domain, on one device at one size; a failing part is recorded, the rest run."""
    print(f"--- {device.type} ({size} sizes)", flush=True)
    limits = ceilings(device, args.small)
    print(f"ceilings: bf16 matmul {limits['matmul_bf16_tflops']:.2f} TFLOP/s, copy {limits['copy_gbs']:.1f} GB/s", flush=True)
    bf16 = args.bf16 if args.bf16 is not None else device.type == "cuda"
    results: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    jobs: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = []
    for domain in args.domains:
        if domain == "retail":
            jobs.append((domain, lambda: retail(device, size, limits, bf16)))
        elif domain == "healthcare":
            jobs.append((domain, lambda: healthcare(device, size, limits, bf16)))
            jobs.append(("healthcare volumes", lambda: healthcare_volumes(device, size, limits, bf16)))
        else:
            for compiled in ((False, True) if args.compile else (False,)):
                jobs.append((domain + (" compiled" if compiled else ""),
                             lambda d=domain, c=compiled: [table_workload(d, device, size, limits, bf16, c, args.pinned, workdir)]))
    for name, job in jobs:
        start = time.perf_counter()
        try:
            for record in job():
                record["bf16"] = bf16
                results.append(record)
                print(f"{record['domain']:<12} {record['workload']:<30} " + ", ".join(
                    f"{k} {v:,.3g}" for k, v in record.items() if isinstance(v, float) and k.endswith(("_per_s", "_s"))), flush=True)
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others' figures
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"{name}: FAILED {failures[name]}\n{traceback.format_exc(limit=3)}", flush=True)
        print(f"  ({name}: {time.perf_counter() - start:.1f} s)", flush=True)
    return {"device": device.type, "size": size, "bf16": bf16, "ceilings": limits, "results": results, "failures": failures}


def check_targets(records: list[dict[str, Any]]) -> None:
    """Mark each production-size GPU figure against its target."""
    for r in records:
        if r["device"] != "cuda" or r["size"] != "gpu":
            continue
        target = TARGETS.get((r["domain"], r["workload"]))
        if target:
            key, op, value = target
            r["target"] = f"{key} {op} {value:,.0f}"
            r["target_met"] = bool(r[key] <= value if op == "<=" else r[key] >= value)
        if (r["domain"], r["workload"]) == ("finance", "MLP"):  # finance scoring has its own target on the same record
            r["scoring_target_met"] = bool(r["inference_per_s"] >= TARGETS[("finance", "MLP scoring")][2])


def ratios(gpu: dict[str, Any] | None, cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """GPU over CPU throughput of each workload measured on both."""
    if gpu is None:
        return []
    cpu_rows = {(r["domain"], r["workload"]): r for r in cpu["results"]}
    out = []
    for r in gpu["results"]:
        c = cpu_rows.get((r["domain"], r["workload"]))
        if c is None:
            continue
        entry = {"domain": r["domain"], "workload": r["workload"]}
        for key in ("train_per_s", "inference_per_s"):
            if r.get(key) and c.get(key):
                entry[key] = r[key] / c[key]
        if r.get("fit_s") and c.get("fit_s"):
            entry["fit_speedup"] = c["fit_s"] / r["fit_s"]
        out.append(entry)
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e3 else f"{value:,.0f}"
    return str(value)


def device_table(run: dict[str, Any]) -> str:
    limits = run["ceilings"]
    head = (f"{run['device']} ({run['size']} sizes, bf16 autocast {'on' if run['bf16'] else 'off'}): bf16 matmul "
            f"{limits['matmul_bf16_tflops']:.2f} TFLOP/s (n={limits['matmul_n']}), copy {limits['copy_gbs']:.1f} GB/s"
            + (f", host→device {limits['h2d_pageable_gbs']:.1f} GB/s pageable / {limits['h2d_pinned_gbs']:.1f} GB/s pinned"
               if "h2d_pinned_gbs" in limits else "") + ".")
    headers = ["domain", "workload", "size", "train samples/s", "inference samples/s", "epoch / fit / eval s", "peak GPU MB",
               "TFLOP/s (share of bf16 matmul)", "GB/s (share of copy)", "target met"]
    rows = []
    for r in run["results"]:
        seconds = r.get("epoch_s", r.get("fit_s", r.get("eval_s")))
        tflops = f"{r['tflops']:.3g} ({r['tflops_share']:.0%})" if "tflops" in r else "–"
        gbs = f"{r['gbs']:.3g} ({r['gbs_share']:.0%})" if "gbs" in r else "–"
        met = _fmt(r.get("target_met")) + ("" if "scoring_target_met" not in r else f"; scoring {_fmt(r['scoring_target_met'])}")
        rows.append([r["domain"], r["workload"], r["shape"], _fmt(r.get("train_per_s")), _fmt(r.get("inference_per_s")), _fmt(seconds),
                     _fmt(r.get("peak_gpu_mb"), 4), tflops, gbs, met if "target_met" in r else "–"])
    text = head + "\n\n" + markdown_table(headers, rows)
    if run["failures"]:
        text += "\n\nFailed: " + "; ".join(f"{k}: {v}" for k, v in run["failures"].items())
    return text


def markdown(results: dict[str, Any]) -> str:
    """The tables of one run: GPU (when measured), CPU, the GPU/CPU ratios and the GPU check."""
    parts = []
    if results.get("skipped"):
        parts.append(f"Not measured: {results['skipped']}")
    if results.get("gpu") is None:
        parts.append("No GPU figures yet: the GPU table appears here when the script runs on a CUDA machine, with "
                     "`python benchmarks/gpu_scale.py` (production sizes, about 8 minutes on one H100-class GPU).")
    for key in ("gpu", "cpu"):
        if results.get(key):
            parts.append(device_table(results[key]))
    if results.get("ratios"):
        rows = [[r["domain"], r["workload"], _fmt(r.get("train_per_s")), _fmt(r.get("inference_per_s")), _fmt(r.get("fit_speedup"))]
                for r in results["ratios"]]
        parts.append("GPU / CPU throughput (samples/s at each device's size):\n\n"
                     + markdown_table(["domain", "workload", "train", "inference", "fit speed-up"], rows))
    if results.get("gpu_check"):
        from benchmarks.gpu_check import markdown as gpu_check_markdown

        parts.append("GPU check (32-true and bf16-mixed against the CPU):\n\n" + gpu_check_markdown(results["gpu_check"]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="measure only the CPU side")
    parser.add_argument("--small", action="store_true", help="tiny sizes on every device (a smoke run, < 2 min on CPU)")
    parser.add_argument("--quick", action="store_true", help="run_all's quick mode: --small")
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    parser.add_argument("--compile", action="store_true", help="also measure finance and agriculture with torch.compile")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on CUDA only)")
    parser.add_argument("--pinned", action=argparse.BooleanOptionalAction, default=True, help="upload tables from pinned memory")
    parser.add_argument("--gpu-check-steps", type=int, default=30, help="steps per run of benchmarks/gpu_check.py (0: skip it)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/gpu_scale.json (gpu_scale_quick.json with --small)")
    args = parser.parse_args(argv)
    args.small = args.small or args.quick
    out = args.out or RESULTS / f"gpu_scale{'_quick' if args.small else ''}.json"
    quiet_lightning()
    cuda = torch.cuda.is_available() and not args.cpu_only
    results: dict[str, Any] = {"machine": machine_info(), "sizes": {k: SIZES["small" if args.small else k] for k in ("gpu", "cpu")},
                               "gpu": None, "cpu": None, "targets": {f"{d}: {w}": f"{k} {o} {v:,.0f}" for (d, w), (k, o, v) in TARGETS.items()}}
    if not cuda and not (args.cpu_only or args.small):
        results["skipped"] = "CUDA is not available on this machine (run with --cpu-only --small for the CPU side)"
        print(results["skipped"])
        atomic_write_json(out, results)
        return 0
    with tempfile.TemporaryDirectory(prefix="sectorkit-gpu-scale-") as tmp:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 scores for the rankings and distances
            results["gpu"] = run_device(torch.device("cuda"), "small" if args.small else "gpu", args, Path(tmp) / "gpu")
            check_targets(results["gpu"]["results"])
        torch.set_num_threads(min(2, torch.get_num_threads()))
        results["cpu"] = run_device(torch.device("cpu"), "small" if args.small else "cpu", args, Path(tmp) / "cpu")
        results["ratios"] = ratios(results["gpu"], results["cpu"])
        if cuda and args.gpu_check_steps > 0:
            from benchmarks import gpu_check

            check_file = Path(tmp) / "gpu_check.json"
            gpu_check.main(["--steps", str(args.gpu_check_steps), "--out", str(check_file)])
            results["gpu_check"] = json.loads(check_file.read_text()) if check_file.is_file() else None
    atomic_write_json(out, results)
    print("\n" + markdown(results))
    print(f"\nwrote {out}")
    failed = any(results[k]["failures"] for k in ("gpu", "cpu") if results[k])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
