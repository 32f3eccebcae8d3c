"""The verdict at the end of every run says plainly when a baseline wins."""

from __future__ import annotations

import math

from rich.console import Console

from sectorkit.core.verdict import judge, relative_margin, verdict_table


def metrics(model: float, baselines: dict[str, float], mode: str = "max") -> dict:
    return {"primary_metric": "ndcg@10", "mode": mode, "model_name": "lightgcn", "test": {"ndcg@10": model},
            "baselines": {name: {"ndcg@10": value} for name, value in baselines.items()}}


def test_a_winning_baseline_is_named_with_its_margin() -> None:
    verdict = judge(metrics(0.160, {"ease": 0.206, "itemknn": 0.191}))
    assert verdict.best_baseline == "ease" and math.isclose(verdict.margin, (0.160 - 0.206) / 0.206)
    assert verdict.text == "the baseline ease beats the model by 22.3% on ndcg@10: see report.md"


def test_a_winning_model_and_a_tie() -> None:
    assert judge(metrics(0.25, {"ease": 0.20, "pop": 0.1})).text == "the model beats the best baseline ease by 25.0% on ndcg@10"
    assert judge(metrics(0.20005, {"ease": 0.2})).text.startswith("the model ties the best baseline ease")


def test_lower_is_better_and_missing_values() -> None:
    verdict = judge(metrics(2.5, {"ridge_ar": 2.764, "persistence": 3.9}, mode="min"))
    assert verdict.best_baseline == "ridge_ar" and verdict.margin > 0 and "beats the best baseline ridge_ar by 9.6%" in verdict.text
    assert relative_margin(3.0, 2.0, "min") == -0.5
    assert judge(metrics(float("nan"), {"ease": 0.2})).text.startswith("the model's test ndcg@10 could not be computed")
    assert judge(metrics(0.2, {})).text == "no baseline was scored on ndcg@10: nothing to compare with"


def test_the_table_lists_every_baseline_with_the_model_margin() -> None:
    console = Console(width=120, record=True)
    console.print(verdict_table(metrics(0.160, {"ease": 0.206, "itemknn": 0.191})))
    text = console.export_text()
    assert "lightgcn (model)" in text and "0.1600" in text and "ease (baseline)" in text and "-22.3%" in text and "-16.2%" in text
