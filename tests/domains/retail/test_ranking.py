"""Chunked full-ranking evaluation and the device EASE closed form give the same numbers as the reference paths."""

from __future__ import annotations

import pytest
import torch
from sectorkit.domains.retail.baselines import EASE as EASEBaseline
from sectorkit.domains.retail.baselines import evaluate_baselines, interaction_matrix
from sectorkit.domains.retail.data import RetailDataModule
from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets, mask_scores
from sectorkit.domains.retail.models.ease import EASE, ease_weights
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.module import RecommenderModule
from sectorkit.domains.retail.ranking import ItemSets, factor_scorer, full_ranking, item_item_scorer, masked_topk

SAMPLE = {"n_users": 200, "n_items": 120, "mean_length": 20, "popularity_exponent": 0.5, "taste_strength": 6.0}


@pytest.fixture(scope="module")
def sample_dm() -> RetailDataModule:
    dm = RetailDataModule(sample=SAMPLE, batch_size=256, eval_batch_size=64, seed=0, network=LightGCN)
    dm.setup("fit")
    return dm


def _random_sets(n_users: int, n_items: int, per_user: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    users = torch.arange(n_users).repeat_interleave(per_user)
    return users, torch.randint(n_items, (len(users),), generator=g)


@pytest.mark.parametrize("item_chunk", [None, 7, 50])
def test_chunked_topk_equals_topk_of_the_masked_score_matrix(item_chunk):
    n_users, n_items, k = 30, 97, 10
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(1))
    users, items = _random_sets(n_users, n_items, 12, seed=2)
    known = ItemSets.from_pairs(users, items, n_users, n_items)
    rows = torch.arange(n_users)
    values, top = masked_topk(lambda u, a, b: scores[u, a:b], rows, k, n_items, known, item_chunk)
    dense_known = torch.zeros(n_users, n_items, dtype=torch.bool)
    dense_known[users, items] = True
    reference = torch.topk(scores.masked_fill(dense_known, float("-inf")), k, dim=1)
    assert torch.equal(top, reference.indices) and torch.equal(values, reference.values)
    assert not dense_known.gather(1, top).any()


def test_item_sets_pairs_counts_and_membership():
    sets = ItemSets.from_pairs(torch.tensor([0, 0, 0, 2, 2]), torch.tensor([3, 1, 3, 0, 4]), 3, 5)  # a duplicate counts once
    assert sets.counts(torch.tensor([0, 1, 2])).tolist() == [2, 0, 2]
    rows, items = sets.pairs(torch.tensor([2, 0]))
    assert rows.tolist() == [0, 0, 1, 1] and items.tolist() == [0, 4, 1, 3]
    assert sets.contains(torch.tensor([0, 1]), torch.tensor([[1, 2], [1, 3]])).tolist() == [[True, False], [False, False]]


def _module_path_metrics(module: RecommenderModule, dm: RetailDataModule, ks: list[int]) -> dict[str, float]:
    """The module's own evaluation: batches from the test loader, dense targets, torch.topk of the whole catalogue."""
    metric = RankingMetrics(ks, dm.n_items)
    with torch.no_grad():
        for batch in dm.test_dataloader():
            scores = module(*module.batch_inputs(batch))
            metric.update(torch.topk(scores, max(ks), dim=1).indices, dense_targets(batch["targets"], dm.n_items), module.popularity)
    return {k: float(v) for k, v in metric.compute().items()}


@pytest.mark.parametrize("user_chunk,item_chunk", [(4096, None), (17, 23)])
def test_full_ranking_reproduces_the_module_metrics_on_the_sample(sample_dm, user_chunk, item_chunk):
    dm, ks = sample_dm, [5, 10, 20]
    torch.manual_seed(0)
    module = RecommenderModule({"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 16}, **dm.model_kwargs(), ks=ks)
    module.prepare_fit(dm.training_state())
    module.eval()
    reference = _module_path_metrics(module, dm, ks)
    users = torch.as_tensor(dm.eval_dataset("test").users)
    known = ItemSets.from_lists(dm.known_history("test"), dm.n_items)
    targets = ItemSets.from_lists(dm.lists["test"], dm.n_items)
    with torch.no_grad():
        scorer = factor_scorer(*module.net.propagate())
        metrics, top = full_ranking(scorer, users, known, targets, ks, dm.n_items, module.popularity, user_chunk, item_chunk, keep_topk=True)
    assert metrics.keys() == reference.keys()
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    assert metrics["ndcg@10"] > 0 and top.shape == (len(users), 20)


def _reference_ease(matrix, reg_weight: float) -> torch.Tensor:
    """EASE as first written: dense float64 Gram and a general inverse."""
    gram = torch.as_tensor((matrix.T @ matrix).toarray(), dtype=torch.float64) + reg_weight * torch.eye(matrix.shape[1], dtype=torch.float64)
    precision = torch.linalg.inv(gram)
    weights = -precision / torch.diagonal(precision)[None, :]
    return weights.fill_diagonal_(0.0).float()


def test_ease_closed_form_matches_the_reference_and_is_shared(sample_dm):
    dm = sample_dm
    users, items = dm.train_users, dm.train_items
    matrix = interaction_matrix(users.numpy(), items.numpy(), dm.n_users, dm.n_items)
    reference = _reference_ease(matrix, 50.0)
    chunked = ease_weights(users, items, dm.n_users, dm.n_items, 50.0, item_chunk=16)
    torch.testing.assert_close(chunked, reference, atol=1e-6, rtol=1e-5)
    single = ease_weights(users, items, dm.n_users, dm.n_items, 50.0, dtype=torch.float32)
    torch.testing.assert_close(single, reference, atol=1e-4, rtol=1e-3)
    baseline = EASEBaseline(50.0).fit(matrix).weights
    network = EASE(dm.n_users, dm.n_items, reg_weight=50.0)
    network.set_graph(users, items)
    assert torch.equal(baseline, network.weights) and torch.equal(baseline, ease_weights(users, items, dm.n_users, dm.n_items, 50.0))


def test_item_item_scorer_reproduces_the_ease_baseline_metrics(sample_dm):
    dm, ks = sample_dm, [10]
    expected = evaluate_baselines(dm, ks, ["ease"], {"ease": {"reg_weight": 50.0}})["ease"].metrics
    weights = ease_weights(dm.train_users, dm.train_items, dm.n_users, dm.n_items, 50.0)
    known = ItemSets.from_lists(dm.known_history("test"), dm.n_items)
    targets = ItemSets.from_lists(dm.lists["test"], dm.n_items)
    popularity = torch.bincount(dm.train_items, minlength=dm.n_items).float() / dm.n_users
    users = torch.as_tensor(dm.eval_dataset("test").users)
    metrics, _ = full_ranking(item_item_scorer(weights, known), users, known, targets, ks, dm.n_items, popularity, user_chunk=50, item_chunk=40)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_mask_scores_agrees_with_item_set_masking():
    n_users, n_items = 8, 20
    scores = torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(3))
    users, items = _random_sets(n_users, n_items, 5, seed=4)
    exclude = items.reshape(n_users, 5)
    known = ItemSets.from_pairs(users, items, n_users, n_items)
    _, top = masked_topk(lambda u, a, b: scores[u, a:b], torch.arange(n_users), 6, n_items, known, item_chunk=6)
    assert torch.equal(top, torch.topk(mask_scores(scores.clone(), exclude), 6, dim=1).indices)


@pytest.mark.requires_gpu
def test_full_ranking_and_ease_on_cuda_match_the_cpu(sample_dm):
    dm, ks = sample_dm, [10, 20]
    weights = ease_weights(dm.train_users, dm.train_items, dm.n_users, dm.n_items, 50.0)
    gpu_weights = ease_weights(dm.train_users.cuda(), dm.train_items.cuda(), dm.n_users, dm.n_items, 50.0)
    torch.testing.assert_close(gpu_weights.cpu(), weights, atol=1e-5, rtol=1e-4)
    matrix = interaction_matrix(dm.train_users.numpy(), dm.train_items.numpy(), dm.n_users, dm.n_items)
    torch.testing.assert_close(EASEBaseline(50.0, device="cuda").fit(matrix).weights, weights, atol=1e-5, rtol=1e-4)
    known = ItemSets.from_lists(dm.known_history("test"), dm.n_items)
    targets = ItemSets.from_lists(dm.lists["test"], dm.n_items)
    users = torch.as_tensor(dm.eval_dataset("test").users)
    cpu, _ = full_ranking(item_item_scorer(weights, known), users, known, targets, ks, dm.n_items, item_chunk=50)
    gpu, _ = full_ranking(item_item_scorer(gpu_weights, known.to("cuda")), users.cuda(), known.to("cuda"), targets.to("cuda"), ks, dm.n_items, item_chunk=50)
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, abs=1e-4), name


@pytest.mark.requires_gpu
def test_lightgcn_trains_and_ranks_on_cuda(sample_dm):
    dm = sample_dm
    torch.manual_seed(0)
    module = RecommenderModule({"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 16}, **dm.model_kwargs(), ks=[10]).cuda()
    state = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in dm.training_state().items()}
    module.prepare_fit(state)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    users, items = state["users"], state["items"]
    loss = module.training_loss({"users": users[:256], "items": items[:256]})
    loss.backward()
    optimizer.step()
    assert module.net.adjacency.is_cuda and module.net.user_embedding.weight.grad is not None
    module.eval()
    reference = _module_path_metrics(module.cpu(), dm, [10])
    module.cuda()
    known = ItemSets.from_lists(dm.known_history("test"), dm.n_items, "cuda")
    targets = ItemSets.from_lists(dm.lists["test"], dm.n_items, "cuda")
    with torch.no_grad():
        metrics, _ = full_ranking(factor_scorer(*module.net.propagate()), torch.as_tensor(dm.eval_dataset("test").users).cuda(), known, targets,
                                  [10], dm.n_items, module.popularity, user_chunk=64, item_chunk=50)
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value, abs=1e-4), name
