"""Metrics, negative sampling, networks and baselines of the retail domain."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from sectorkit.core.errors import ConfigError
from sectorkit.domains.retail.baselines import EASE, ItemKNN, MostPop, evaluate_baselines, interaction_matrix, seen_matrix
from sectorkit.domains.retail.data import RetailDataModule
from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets, mask_scores, per_user_metrics
from sectorkit.domains.retail.models.bpr import BPRMF
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.models.multvae import MultVAE
from sectorkit.domains.retail.models.neumf import NeuMF
from sectorkit.domains.retail.models.sasrec import SASRec, SASRecBCE
from sectorkit.domains.retail.module import NegativeSampler, RecommenderModule

NETWORKS = {"bpr": BPRMF, "lightgcn": LightGCN, "neumf": NeuMF, "multvae": MultVAE, "sasrec": SASRec, "sasrec_bce": SASRecBCE}


def net(name: str, **kwargs) -> dict:
    """The ``net`` config of a network (its class path and constructor arguments)."""
    cls = NETWORKS[name]
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}


def mostpop_ndcg(dm: RetailDataModule) -> float:
    return evaluate_baselines(dm, [10], ["mostpop"])["mostpop"].metrics["ndcg@10"]


def test_metrics_follow_recbole_definitions():
    targets = dense_targets(torch.tensor([[2, 5, -1], [0, -1, -1], [-1, -1, -1]]), 6)
    top = torch.tensor([[5, 1, 2], [1, 3, 0], [0, 1, 2]])
    values = per_user_metrics(top, targets, [1, 3])
    assert len(values["ndcg@3"]) == 2  # the user without targets is not averaged
    assert values["hit@1"].tolist() == [1.0, 0.0]
    assert values["recall@3"].tolist() == [1.0, 1.0]
    assert values["mrr@3"].tolist() == pytest.approx([1.0, 1 / 3])
    assert values["precision@3"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert values["ndcg@3"][0] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    assert values["ndcg@3"][1] == pytest.approx(0.5)
    metric = RankingMetrics([1, 3], 6)
    metric.update(top, targets, torch.tensor([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
    out = metric.compute()
    assert out["hit@1"] == pytest.approx(0.5) and out["coverage@1"] == pytest.approx(2 / 6)
    assert out["popularity_lift@1"] == pytest.approx(0.1 / (1.0 / 6))


def test_masking_excludes_seen_items_from_topk():
    scores = torch.arange(5.0).repeat(2, 1)
    masked = mask_scores(scores, torch.tensor([[4, 3], [-1, -1]]))
    assert torch.topk(masked, 1).indices.ravel().tolist() == [2, 4]


def test_negative_sampler_avoids_positives():
    users = torch.tensor([0, 0, 0, 1])
    items = torch.tensor([0, 1, 2, 3])
    sampler = NegativeSampler(users, items, n_items=50)
    neg = sampler(torch.zeros(5000, dtype=torch.long), (5000, 2))
    assert not set(neg.unique().tolist()) & {0, 1, 2} and len(neg.unique()) == 47
    assert 3 not in sampler(torch.ones(5000, dtype=torch.long), (5000,)).tolist()


SAMPLE = {"n_users": 200, "n_items": 120, "mean_length": 20, "popularity_exponent": 0.5, "taste_strength": 6.0}


def sample_datamodule(network: str | None = None, batch_size: int = 256) -> RetailDataModule:
    dm = RetailDataModule(sample=SAMPLE, batch_size=batch_size, eval_batch_size=128, seed=0, network=NETWORKS[network] if network else None)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def sample_dm() -> RetailDataModule:
    return sample_datamodule()


def _fit(dm: RetailDataModule, network: str, epochs: int, lr: float, **kwargs) -> RecommenderModule:
    assert dm.network is NETWORKS[network]
    torch.manual_seed(0)
    module = RecommenderModule(net(network, **kwargs), **dm.model_kwargs(), ks=[10])
    module.prepare_fit(dm.training_state())
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(epochs):
        module.train()
        for batch in dm.train_dataloader():
            loss = module.training_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return module


def _ndcg(module: RecommenderModule, dm: RetailDataModule) -> float:
    metric = RankingMetrics([10], dm.n_items)
    module.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            metric.update(torch.topk(module(*module.batch_inputs(batch)), 10).indices, dense_targets(batch["targets"], dm.n_items))
    return float(metric.compute()["ndcg@10"])


def test_baselines_rank_as_expected_on_planted_tastes(sample_dm):
    results = {name: result.metrics for name, result in evaluate_baselines(sample_dm, [10]).items()}
    assert results["ease"]["ndcg@10"] > results["mostpop"]["ndcg@10"]
    assert results["itemknn"]["ndcg@10"] > results["mostpop"]["ndcg@10"]
    assert results["mostpop"]["popularity_lift@10"] > results["ease"]["popularity_lift@10"]


def test_baseline_predictions_are_the_top_items_of_each_test_user(sample_dm):
    result = evaluate_baselines(sample_dm, [5, 10], ["mostpop"])["mostpop"]
    test_users = sample_dm.eval_dataset("test").users
    assert result.predictions.shape == (len(test_users), 10)
    seen = sample_dm.lists["train_valid"]
    user = int(test_users[0])
    assert not set(result.predictions[0].tolist()) & set(seen.items[seen.indptr[user] : seen.indptr[user + 1]].tolist())


@pytest.mark.parametrize("network, epochs, lr, batch_size",
                         [("bpr", 25, 0.01, 256), ("lightgcn", 25, 0.01, 256), ("neumf", 8, 0.002, 256), ("multvae", 10, 0.002, 64)])
def test_networks_beat_most_popular(network, epochs, lr, batch_size):
    dm = sample_datamodule(network, batch_size)  # batches of pairs (multvae: of users)
    assert _ndcg(_fit(dm, network, epochs, lr), dm) > mostpop_ndcg(dm)


def test_training_batches_follow_the_network_input_type():
    pairs, users = sample_datamodule("neumf"), sample_datamodule("multvae", batch_size=32)
    sequences = RetailDataModule(sample=SAMPLE, split={"method": "leave_one_out"}, batch_size=32, max_seq_len=20, network=SASRec)
    sequences.setup("fit")
    assert set(next(iter(pairs.train_dataloader()))) == {"users", "items"}
    assert sum(len(b["users"]) for b in pairs.train_dataloader()) == len(pairs.train_users)
    assert sum(len(b["users"]) for b in users.train_dataloader()) == int((users.lists["train"].lengths() > 0).sum())
    assert set(next(iter(users.train_dataloader()))) == {"users"}
    batch = next(iter(sequences.train_dataloader()))
    assert set(batch) == {"history", "targets", "users"} and batch["history"].shape[1] == 20
    assert RecommenderModule(net("sasrec"), **sequences.model_kwargs()).net.max_seq_len == 20  # the data's history length
    with pytest.raises(ConfigError, match="network"):
        RetailDataModule(sample=SAMPLE).train_dataloader()
    with pytest.raises(ConfigError, match="not a retail network"):
        RetailDataModule(network=torch.nn.Linear)


def test_wrong_network_arguments_name_the_key():
    with pytest.raises(ConfigError, match=r"model.net: cannot build BPRMF .*hidden"):
        RecommenderModule(net("bpr", hidden=3), n_users=5, n_items=6, n_train=1)


def test_multvae_rows_shapes_and_training_on_user_batches():
    sample_dm = sample_datamodule("multvae", batch_size=32)
    module = RecommenderModule(net("multvae", hidden_sizes=[64], embedding_size=16), **sample_dm.model_kwargs(), ks=[10])
    module.prepare_fit(sample_dm.training_state())
    users = torch.tensor([0, 5, 7])
    rows = module.net.user_rows(users)
    dense = torch.zeros(sample_dm.n_users, sample_dm.n_items)
    dense[sample_dm.train_users, sample_dm.train_items] = 1
    assert rows.shape == (3, sample_dm.n_items) and torch.equal(rows, dense[users])
    assert module.net.score_all(users, torch.zeros(3, 1, dtype=torch.long)).shape == (3, sample_dm.n_items)
    assert {len(b["users"]) for b in sample_dm.train_dataloader()} <= {32, sample_dm.n_users % 32}
    trained = _fit(sample_dm, "multvae", 40, 0.01, hidden_sizes=[64], embedding_size=16, total_anneal_steps=100)
    assert trained.net.steps > 0 and _ndcg(trained, sample_dm) > mostpop_ndcg(sample_dm)


@pytest.mark.parametrize("network", ["sasrec", "sasrec_bce"])
def test_sasrec_learns_follow_up_items(network):
    dm = RetailDataModule(sample={"n_users": 200, "n_items": 120, "sequential_prob": 0.5}, split={"method": "leave_one_out"}, batch_size=32,
                          max_seq_len=20, network=NETWORKS[network])
    dm.setup("fit")
    module = _fit(dm, network, 6, 0.01, n_layers=1, dropout=0.1)
    assert _ndcg(module, dm) > mostpop_ndcg(dm)


def test_unknown_users_get_popularity_fallback(sample_dm):
    module = RecommenderModule(net("bpr"), **sample_dm.model_kwargs(), ks=[10])
    module.prepare_fit(sample_dm.training_state())
    scores = module(torch.tensor([-1, 0]), torch.full((2, 3), sample_dm.n_items), torch.tensor([[-1], [-1]]))
    assert torch.equal(torch.topk(scores[0], 5).indices, torch.topk(module.popularity, 5).indices)
    assert not torch.equal(scores[0], scores[1])


def test_ease_and_itemknn_closed_forms():
    matrix = interaction_matrix(torch.tensor([0, 0, 1, 1, 2]).numpy(), torch.tensor([0, 1, 0, 1, 2]).numpy(), 3, 3)
    ease = EASE(reg_weight=0.5).fit(matrix)
    assert torch.diagonal(ease.weights).abs().max() == 0
    assert ease.weights[0, 1] > 0 and ease.weights[0, 2] == pytest.approx(0.0, abs=1e-6)
    knn = ItemKNN(k=1).fit(matrix)
    assert knn.similarity[0, 1] == pytest.approx(1.0, abs=1e-4) and (knn.similarity > 0).sum(0).max() <= 1
    assert MostPop().fit(matrix).scores(matrix[[0]])[0].tolist() == [2.0, 2.0, 1.0]


@pytest.mark.parametrize("network", ["bpr", "neumf", "multvae", "sasrec"])
def test_onnx_export_matches_pytorch(tmp_path, network):
    import warnings

    import numpy as np
    import onnxruntime as ort

    module = RecommenderModule(net(network), n_users=10, n_items=20, n_train=3, ks=[5])
    module.prepare_fit({"users": torch.tensor([0, 1, 2]), "items": torch.tensor([1, 2, 3])})
    module.eval()
    inputs = (torch.tensor([0, -1]), torch.tensor([[20, 20, 4, 5], [20, 20, 20, 20]]), torch.tensor([[1, -1], [2, 3]]))
    names = ["users", "history", "exclude"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, tmp_path / "m.onnx", input_names=names, dynamo=False,
                          dynamic_axes={"users": {0: "b"}, "history": {0: "b", 1: "l"}, "exclude": {0: "b", 1: "e"}})
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    used = {i.name for i in session.get_inputs()}  # unused inputs are pruned (BPR ignores history)
    out = session.run(None, {n: v.numpy() for n, v in zip(names, inputs) if n in used})[0]
    np.testing.assert_allclose(out, module(*inputs).detach().numpy(), atol=1e-5)


def _dense(frames, users, n_items) -> torch.Tensor:
    """[len(users), n_items] 0/1 rows of the (user, item) pairs in ``frames``, built straight from the split tables."""
    out = torch.zeros(int(users.max()) + 1, n_items)
    for frame in frames:
        out[torch.tensor(frame["user"].to_numpy()), torch.tensor(frame["item"].to_numpy())] = 1
    return out[users]


def _excluded(batch, n_items) -> torch.Tensor:
    exclude = batch["exclude"]
    out = torch.zeros(len(exclude), n_items + 1).scatter_(1, torch.where(exclude < 0, n_items, exclude), 1.0)
    return out[:, :n_items]


def test_model_and_baselines_score_and_mask_the_same_known_history():
    dm = sample_datamodule("multvae", batch_size=32)
    module = RecommenderModule(net("multvae", hidden_sizes=[], embedding_size=16), **dm.model_kwargs(), ks=[10])
    module.prepare_fit(dm.training_state())
    module.eval()
    p = dm.prepared
    for stage, known in (("valid", [p.train]), ("test", [p.train, p.valid])):
        dataset = dm.eval_dataset(stage)
        batch = dataset[list(range(len(dataset)))]
        users = batch["users"]
        expected = _dense(known, users, dm.n_items)  # validation: train items; test: train + validation items
        baseline_rows = torch.as_tensor(seen_matrix(dm, stage)[users.numpy()].toarray())
        assert torch.equal(baseline_rows, expected)  # what EASE / ItemKNN score from
        assert torch.equal(_excluded(batch, dm.n_items), expected)  # what is masked, for the model and the baselines
        assert torch.equal(module.net.history_rows(batch["history"]), expected)  # what Mult-VAE encodes
        with torch.no_grad():
            direct = mask_scores(module.net.decode(module.net.encode(expected)[0]), batch["exclude"])
            assert torch.allclose(module(*module.batch_inputs(batch)), direct, atol=1e-5)
    assert expected.sum() > _dense([p.train], users, dm.n_items).sum()  # the validation items are in the test history
    with torch.no_grad():
        train_only = module.net.decode(module.net.encode(module.net.user_rows(users))[0])
        assert not torch.allclose(mask_scores(train_only, batch["exclude"]), direct, atol=1e-3)


def test_sequence_history_is_the_latest_known_items_in_time_order():
    dm = RetailDataModule(sample=SAMPLE, split={"method": "ratio", "order": "random"}, max_seq_len=6, seed=0, network=SASRec)
    dm.setup("fit")
    dataset = dm.eval_dataset("test")
    batch = dataset[list(range(len(dataset)))]
    known = pd.concat([dm.prepared.train, dm.prepared.valid]).sort_values("timestamp", kind="stable")
    for row, user in enumerate(batch["users"].tolist()[:20]):
        latest = known[known["user"] == user]["item"].tolist()[-6:]
        history = batch["history"][row]
        assert history[history != dm.n_items].tolist() == latest
    full = RetailDataModule(sample=SAMPLE, seed=0, max_seq_len=6, network=MultVAE)
    full.setup("fit")
    test = full.eval_dataset("test")
    width = test[list(range(len(test)))]["history"].shape[1]
    assert width == full.known_history("test").lengths()[test.users].max() > 6  # Mult-VAE reads every known item


def test_networks_declare_which_history_they_read():
    declared = {name: cls.history_input for name, cls in NETWORKS.items()}
    assert declared == {"bpr": "none", "lightgcn": "none", "neumf": "none", "multvae": "full", "sasrec": "recent", "sasrec_bce": "recent"}

    class Odd(BPRMF):
        history_input = "everything"

    with pytest.raises(ConfigError, match=r"Odd\.history_input='everything'; expected one of none, recent, full"):
        RetailDataModule(network=Odd)
