"""Retail: ``data.split.method=recbole`` against RecBole 1.2.1's own split of MovieLens-100K, row for row.

For each seed and order, RecBole builds its ``RS`` 8:1:1 split grouped by user (``RO`` for ``random``, ``TO``
for ``temporal``) exactly as ``run_recbole`` does (seed, dataset, ``build``); sectorkit splits the same file
with ``method=recbole``; every (user, item) row must land in the same part.

RecBole is not a dependency of sectorkit: read it from its wheel, unzipped, with the four small packages its
imports need beside it (not in the project's environment):

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole && unzip -q /tmp/recbole/recbole-1.2.1-py3-none-any.whl -d /tmp/recbole
    pip install --target /tmp/rbdeps texttable colorlog colorama tabulate
    PYTHONPATH=/tmp/recbole:/tmp/rbdeps python benchmarks/retail_recbole_split.py /tmp/recbole/recbole/dataset_example/ml-100k
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save_results
from sectorkit.domains.retail.data import prepare_interactions
from sectorkit.domains.retail.readers import read_interactions

ORDERS = {"random": "RO", "temporal": "TO"}
PARTS = ("train", "valid", "test")


def recbole_parts(folder: Path, seed: int, order: str) -> pd.DataFrame:
    """RecBole's split of ``folder``/ml-100k.inter: columns user, item (raw tokens) and part (0, 1, 2)."""
    for name, alias in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, name):  # RecBole 1.2.1 still names these NumPy 1 aliases
            setattr(np, name, alias)
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    config = Config(model="BPR", dataset="ml-100k", config_dict={
        "data_path": str(folder.parent), "seed": seed, "checkpoint_dir": tempfile.mkdtemp(), "show_progress": False,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": ORDERS[order], "mode": "full"}})
    logging.getLogger().setLevel(logging.ERROR)
    init_seed(config["seed"], config["reproducibility"])  # as run_recbole: seed, then the dataset, then build()
    dataset = create_dataset(config)
    frames = []
    for part, split in enumerate(dataset.build()):
        users = dataset.id2token("user_id", split.inter_feat["user_id"].numpy())
        items = dataset.id2token("item_id", split.inter_feat["item_id"].numpy())
        frames.append(pd.DataFrame({"user": users, "item": items, "part": part}))
    return pd.concat(frames, ignore_index=True)


def sectorkit_parts(file: Path, seed: int, order: str, method: str = "recbole") -> pd.DataFrame:
    """sectorkit's ``method`` split of ``file`` (RecBole keeps repeated rows: ``duplicates=keep``)."""
    prepared = prepare_interactions(read_interactions(file, format="inter"), str(file), duplicates="keep",
                                    split={"method": method, "ratios": [0.8, 0.1, 0.1], "order": order}, seed=seed)
    users, items = np.asarray(prepared.user_ids, dtype=object), np.asarray(prepared.item_ids, dtype=object)
    return pd.concat([pd.DataFrame({"user": users[f["user"]], "item": items[f["item"]], "part": part})
                      for part, f in enumerate((prepared.train, prepared.valid, prepared.test))], ignore_index=True)


def compare(folder: Path, seed: int, order: str) -> dict:
    ours, theirs = sectorkit_parts(folder / "ml-100k.inter", seed, order), recbole_parts(folder, seed, order)
    if ours.duplicated(["user", "item"]).any():
        raise SystemExit("the file repeats (user, item) pairs: rows cannot be matched by pair")
    merged = ours.merge(theirs, on=["user", "item"], how="outer", suffixes=("", "_recbole"), indicator=True)
    ratio = sectorkit_parts(folder / "ml-100k.inter", seed, order, "ratio").merge(theirs, on=["user", "item"], suffixes=("", "_recbole"))
    return {"seed": seed, "order": order, "rows": len(ours), "rows_recbole": len(theirs),
            "unmatched": int((merged["_merge"] != "both").sum()),
            "different_part": int((merged["part"] != merged["part_recbole"]).sum()),
            "different_part_method_ratio": int((ratio["part"] != ratio["part_recbole"]).sum()),
            "sizes": {p: int((ours["part"] == i).sum()) for i, p in enumerate(PARTS)},
            "sizes_recbole": {p: int((theirs["part"] == i).sum()) for i, p in enumerate(PARTS)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the ml-100k folder of the recbole==1.2.1 wheel (holds ml-100k.inter)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "retail_recbole_split.json")
    args = parser.parse_args()
    rows = [compare(args.path, seed, order) for seed in args.seeds for order in ORDERS]
    save_results(args.out, {"command": "benchmarks/retail_recbole_split.py", "recbole": "1.2.1", "comparisons": rows})
    print("| seed | order | rows | method=recbole: rows in another part than RecBole's | unmatched rows | method=ratio: rows in another part "
          "| train/valid/test |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['order']} ({ORDERS[r['order']]}) | {r['rows']} | {r['different_part']} | {r['unmatched']} | "
              f"{r['different_part_method_ratio']} | {'/'.join(str(r['sizes'][p]) for p in PARTS)} |")


if __name__ == "__main__":
    main()
