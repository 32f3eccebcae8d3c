"""benchmarks/gpu_scale.py: its pieces at tiny sizes on the CPU (default suite), the whole script with
``--cpu-only --small`` (slow) and the CUDA side (requires_gpu)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from benchmarks import gpu_scale

CPU = torch.device("cpu")


@pytest.fixture
def tiny_sizes(monkeypatch):
    sizes = copy.deepcopy(gpu_scale.SIZES)
    sizes["small"]["healthcare"].update(image_size=32, train_images=2, test_images=2, batch=2, max_bank_patches=1500)
    monkeypatch.setattr(gpu_scale, "SIZES", sizes)
    return sizes


def test_synthetic_interactions_have_the_movielens_shape():
    users, items = gpu_scale.synthetic_interactions(400, 1000, 20_000, CPU)
    assert 0.97 * 20_000 <= len(users) <= 1.1 * 20_000
    assert users.max() < 400 and items.max() < 1000 and users.min() >= 0
    assert len(torch.unique(users * 1000 + items)) == len(users)  # distinct pairs
    activity, popularity = torch.bincount(users, minlength=400), torch.bincount(items, minlength=1000).sort(descending=True).values
    assert activity.min() >= 15 and activity.max() > 3 * activity.float().median()  # a floor and a long tail of users
    assert popularity[:30].sum() > 3 * popularity[-30:].sum()  # popular head vs long tail of items


def test_ceilings_and_retail_and_healthcare_pieces_run_at_tiny_size(tiny_sizes):
    limits = gpu_scale.ceilings(CPU, small=True)
    assert limits["matmul_bf16_tflops"] > 0 and limits["copy_gbs"] > 0
    records = gpu_scale.retail(CPU, "small", limits, bf16=False)
    names = [r["workload"] for r in records]
    assert names == ["LightGCN epoch", "full-ranking evaluation", "EASE closed form", "EASE full-ranking evaluation"]
    by_name = dict(zip(names, records))
    assert by_name["LightGCN epoch"]["train_per_s"] > 0 and by_name["full-ranking evaluation"]["users_ranked"] > 100
    assert 0 < by_name["EASE full-ranking evaluation"]["ndcg_at_10"] <= 1
    assert 0 < by_name["full-ranking evaluation"]["tflops_share"] < 10
    (patchcore,) = gpu_scale.healthcare(CPU, "small", limits, bf16=False)
    assert patchcore["inference_per_s"] > 0 and patchcore["finite"] and patchcore["tflops"] > 0

    run = {"device": "cpu", "size": "small", "bf16": False, "ceilings": limits, "results": records + [patchcore], "failures": {}}
    text = gpu_scale.markdown({"gpu": None, "cpu": run})
    assert "No GPU figures yet" in text and "python benchmarks/gpu_scale.py" in text and "| retail | EASE closed form |" in text


def test_targets_and_ratios_compare_like_with_like():
    gpu = [gpu_scale.row("retail", "full-ranking evaluation", torch.device("cuda"), "gpu", eval_s=8.0, inference_per_s=16_000.0),
           gpu_scale.row("healthcare", "PatchCore", torch.device("cuda"), "gpu", inference_per_s=1500.0, train_per_s=900.0),
           gpu_scale.row("finance", "MLP", torch.device("cuda"), "gpu", train_per_s=6e6, inference_per_s=4e7)]
    gpu_scale.check_targets(gpu)
    assert [r["target_met"] for r in gpu] == [True, False, True] and gpu[2]["scoring_target_met"] is False
    cpu = {"results": [gpu_scale.row("healthcare", "PatchCore", CPU, "cpu", inference_per_s=3.0, train_per_s=9.0)]}
    (ratio,) = gpu_scale.ratios({"results": gpu}, cpu)
    assert ratio["workload"] == "PatchCore" and ratio["inference_per_s"] == pytest.approx(500.0) and ratio["train_per_s"] == pytest.approx(100.0)


def test_without_cuda_the_full_mode_writes_a_note_and_exits_0(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_scale.json"
    assert gpu_scale.main(["--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert "CUDA is not available" in results["skipped"] and results["gpu"] is None
    assert "No GPU figures yet" in gpu_scale.markdown(results)


@pytest.mark.slow
def test_whole_script_on_the_cpu_at_small_size(tmp_path):
    out = tmp_path / "gpu_scale.json"
    assert gpu_scale.main(["--cpu-only", "--small", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["gpu"] is None and not results["cpu"]["failures"]
    assert {r["domain"] for r in results["cpu"]["results"]} == set(gpu_scale.DOMAINS)
    assert all(r.get("train_per_s", 1) > 0 and r.get("inference_per_s", 1) > 0 for r in results["cpu"]["results"])


@pytest.mark.slow
def test_compiled_network_trains_and_scores(tmp_path):
    limits = gpu_scale.ceilings(CPU, small=True)
    plain = gpu_scale.table_workload("finance", CPU, "small", limits, False, False, False, tmp_path)
    compiled = gpu_scale.table_workload("finance", CPU, "small", limits, False, True, False, tmp_path)
    assert compiled["workload"] == "MLP (compiled)" and compiled["train_per_s"] > 0 and plain["train_per_s"] > 0
    assert compiled["inference_per_s"] > 0 and plain["inference_per_s"] > 0


@pytest.mark.requires_gpu
def test_cuda_side_at_small_size(tmp_path):
    out = tmp_path / "gpu_scale.json"
    gpu_scale.main(["--small", "--domains", "retail", "healthcare", "--gpu-check-steps", "0", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["gpu"]["device"] == "cuda" and not results["gpu"]["failures"]
    assert all(r["peak_gpu_mb"] > 0 for r in results["gpu"]["results"] if "peak_gpu_mb" in r)
    assert results["ratios"]


def test_run_all_registers_and_renders_the_part(tmp_path):
    from benchmarks import run_all

    part = run_all.PARTS["gpu_scale"]
    assert part.command(True, tmp_path, None)[:3] == ["benchmarks/gpu_scale.py", "--quick", "--cpu-only"]
    limits = {"matmul_bf16_tflops": 1.0, "matmul_n": 256, "copy_gbs": 10.0, "copy_mb": 4.0}
    record = gpu_scale.row("finance", "MLP", CPU, "small", shape="8,192 rows in memory", train_per_s=5000.0, inference_per_s=2e4, epoch_s=1.6)
    cpu = {"device": "cpu", "size": "small", "bf16": False, "ceilings": limits, "results": [record], "failures": {}}
    (tmp_path / "gpu_scale_quick.json").write_text(json.dumps({"machine": {"device": "cpu"}, "gpu": None, "cpu": cpu}))
    docs = run_all.write_docs(tmp_path, tmp_path / "benchmarks.md").read_text()
    assert "### GPU scale" in docs and "| finance | MLP | 8,192 rows in memory | 5,000 | 20,000 |" in docs and "No GPU figures yet" in docs
