"""LightGCN validation time with the propagation cached once per pass vs. propagated for every batch, in one process.

    OMP_NUM_THREADS=1 python benchmarks/retail_lightgcn_eval.py --users 20000 --items 5000

Both paths run the module's own evaluation loop (``update_metrics`` over batches of ``--batch`` users, eval mode,
``torch.inference_mode``), alternating, and must give identical metrics. The interactions are synthetic:
``--per-user`` draws per user from a Zipf(0.8) item popularity (duplicates dropped); each user's last
interaction is the evaluation target, the others the training graph and the masked known items.
"""

from __future__ import annotations

import argparse
import time

import torch
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.module import RecommenderModule


def synthetic(n_users: int, n_items: int, per_user: int, batch: int) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Training interactions and evaluation batches (users, history, exclude, targets) of the module's layout."""
    g = torch.Generator().manual_seed(0)
    popularity = torch.arange(1, n_items + 1, dtype=torch.float64).pow(-0.8)
    users = torch.arange(n_users).repeat_interleave(per_user)
    items = torch.multinomial(popularity, len(users), replacement=True, generator=g)
    keys = torch.unique(users * n_items + items)  # sorted by user
    users, items = keys // n_items, keys % n_items
    last = torch.ones(len(keys), dtype=torch.bool)
    last[:-1] = users[1:] != users[:-1]
    train_users, train_items = users[~last], items[~last]
    counts = torch.bincount(train_users, minlength=n_users)
    width = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    known = torch.full((n_users, width), -1, dtype=torch.long)
    known[train_users, torch.arange(len(train_users)) - starts[train_users]] = train_items
    target = torch.full((n_users,), -1, dtype=torch.long)
    target[users[last]] = items[last]
    batches = []
    for rows in torch.arange(n_users).split(batch):
        exclude = known[rows]
        batches.append(
            {"users": rows, "history": torch.where(exclude < 0, n_items, exclude), "exclude": exclude, "targets": target[rows, None]}
        )
    return {"users": train_users, "items": train_items}, batches


def validation_pass(module: RecommenderModule, loader) -> tuple[float, dict[str, float]]:
    metrics = module.build_metrics()
    module.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            module.update_metrics(metrics, batch)
    seconds = time.perf_counter() - start
    module.train()
    return seconds, {k: float(v) for k, v in metrics.compute().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    state, loader = synthetic(args.users, args.items, args.per_user, args.batch)
    torch.manual_seed(0)
    module = RecommenderModule(
        {"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 64, "n_layers": 2},
        n_users=args.users,
        n_items=args.items,
        n_train=len(state["users"]),
    )
    module.prepare_fit(state)
    cached_propagate = LightGCN.propagate
    print(
        f"{args.users} users x {args.items} items, {len(state['users'])} training interactions, "
        f"{len(loader)} evaluation batches of {args.batch} users; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    times: dict[str, list[float]] = {"per batch": [], "cached": []}
    results = {}
    for _ in range(args.repeats):
        for name, values in times.items():
            LightGCN.propagate = LightGCN._propagate if name == "per batch" else cached_propagate
            seconds, results[name] = validation_pass(module, loader)
            values.append(seconds)
    LightGCN.propagate = cached_propagate
    assert results["per batch"] == results["cached"], "cached and per-batch metrics differ"
    for name, values in times.items():
        print(f"{name:>9}: best {min(values):.2f} s of {', '.join(f'{v:.2f}' for v in values)}")
    print(f"speed-up {min(times['per batch']) / min(times['cached']):.1f}x; metrics identical (ndcg@10 {results['cached']['ndcg@10']:.4f})")


if __name__ == "__main__":
    main()
