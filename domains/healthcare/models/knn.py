"""Exact nearest-neighbour search and greedy k-centre coresets with bounded memory, on the tensors' device.

Written by hand because the search must stay exact, run on whatever device holds the tensors, and export
the same arithmetic as PatchCore's ONNX graph (matmuls only); FAISS would add an approximate, CPU/CUDA-build
specific dependency for what is two matmul loops here.
"""

from __future__ import annotations

import torch


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances with matmuls only (exports to ONNX, unlike cdist)."""
    return (a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(-1)[None]).clamp_min(0)


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, query_chunk: int = 4096, bank_chunk: int = 16384) -> torch.Tensor:
    """Squared distance of each query row to its nearest ``bank`` row, exactly: ``query_chunk`` queries against
    ``bank_chunk`` bank rows at a time with a running minimum, so at most ``query_chunk x bank_chunk`` distances
    exist at once and the cost is linear in the number of queries. Computed in float32 (also under autocast)."""
    queries, bank = queries.float(), bank.float()
    with torch.autocast(queries.device.type, enabled=False):
        parts = []
        for part in queries.split(query_chunk):
            best = None
            for block in bank.split(bank_chunk):
                d = squared_distances(part, block).min(dim=1).values
                best = d if best is None else torch.minimum(best, d)
            parts.append(best if best is not None else part.new_full((len(part),), float("inf")))
        return torch.cat(parts) if parts else queries.new_zeros(0)


def greedy_coreset(x: torch.Tensor, size: int, seed: int = 0, projection: int = 64, max_candidates: int = 40000,
                   chunk: int = 65536) -> torch.Tensor:
    """Indices (on ``x``'s device) of a greedy k-centre coreset of ``x``, computed on a random projection as in
    PatchCore, over at most ``max_candidates`` randomly drawn rows.

    Runs on ``x``'s device; the random draws come from a seeded CPU generator, so a CPU and a GPU run pick from the
    same candidates and projection. Memory: the projected candidates (``max_candidates x projection``) and one
    distance per candidate; the projection is computed ``chunk`` rows at a time."""
    device = x.device
    if size >= len(x):
        return torch.arange(len(x), device=device)
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_candidates:
        subset = torch.randperm(len(x), generator=g)[:max_candidates].to(device)
        return subset[greedy_coreset(x[subset], size, seed, projection, max_candidates, chunk)]
    if x.shape[1] > projection:
        weights = (torch.randn(x.shape[1], projection, generator=g) / projection**0.5).to(device, x.dtype)
        proj = torch.cat([part @ weights for part in x.split(chunk)])
    else:
        proj = x
    proj = proj.float().contiguous()
    norms = proj.pow(2).sum(1)
    chosen = torch.empty(size, dtype=torch.long, device=device)
    first = int(torch.randint(len(x), (1,), generator=g))
    chosen[0] = first
    dist = norms - 2 * proj @ proj[first] + norms[first]
    for i in range(1, size):
        index = dist.argmax()  # stays on the device: no host synchronisation per step
        chosen[i] = index
        dist = torch.minimum(dist, norms - 2 * proj @ proj[index] + norms[index])
    return chosen
