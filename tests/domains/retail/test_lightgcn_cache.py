"""LightGCN propagates once per evaluation pass (eval mode, gradients off) and afresh whenever training may have
changed its weights; the cached path gives the same scores, metrics and gradients as propagating every call."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from sectorkit.domains.retail.data import RetailDataModule
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.module import RecommenderModule

SAMPLE = {"n_users": 150, "n_items": 90, "mean_length": 15, "popularity_exponent": 0.5, "taste_strength": 6.0}
NET = {"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 8}


@pytest.fixture(scope="module")
def dm() -> RetailDataModule:
    dm = RetailDataModule(sample=SAMPLE, batch_size=128, eval_batch_size=32, seed=0, network=LightGCN)
    dm.setup("fit")
    return dm


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Counts the graph propagations actually computed."""
    counted, real = [], LightGCN._propagate

    def counting(self):
        counted.append(1)
        return real(self)

    monkeypatch.setattr(LightGCN, "_propagate", counting)
    return counted


def _module(dm: RetailDataModule) -> RecommenderModule:
    torch.manual_seed(0)
    module = RecommenderModule(NET, **dm.model_kwargs(), ks=[5, 10])
    module.prepare_fit(dm.training_state())
    return module


def _evaluate(module: RecommenderModule, loader) -> tuple[dict[str, float], torch.Tensor]:
    """One evaluation pass through the module's own loop (update_metrics), plus forward's scores of every batch."""
    metrics = module.build_metrics()
    module.eval()
    scores = []
    with torch.inference_mode():
        for batch in loader:
            module.update_metrics(metrics, batch)
            scores.append(module(*module.batch_inputs(batch)))
    return {k: float(v) for k, v in metrics.compute().items()}, torch.cat(scores)


def test_cached_evaluation_equals_propagating_every_batch_and_runs_once_per_pass(dm, calls, monkeypatch):
    module = _module(dm)
    loader = dm.test_dataloader()
    n_batches = len(loader)
    assert n_batches >= 3
    _, cached_scores = _evaluate(module, loader)
    assert len(calls) == 1  # one propagation for the whole pass, not one per batch
    _evaluate(module, loader)
    assert len(calls) == 2  # eval() starts the next pass afresh

    # a training step changes the weights: the next pass propagates them again, and training itself never caches
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    users, items = dm.training_state()["users"], dm.training_state()["items"]
    module.training_loss({"users": users[:128], "items": items[:128]}).backward()
    optimizer.step()
    module.training_loss({"users": users[:128], "items": items[:128]})
    assert len(calls) == 4
    trained_metrics, trained_scores = _evaluate(module, loader)
    assert len(calls) == 5 and not torch.equal(trained_scores, cached_scores)

    # the reference: every call propagates (no cache)
    monkeypatch.setattr(LightGCN, "propagate", LightGCN._propagate)
    reference_metrics, reference_scores = _evaluate(module, loader)
    assert len(calls) == 5 + 2 * n_batches  # update_metrics and forward each propagated per batch
    assert trained_metrics == reference_metrics and torch.equal(trained_scores, reference_scores)


def test_cache_follows_in_place_changes_new_graphs_and_gradients_are_unaffected(dm, calls):
    module = _module(dm)
    module.eval()
    with torch.no_grad():
        first = module.net.propagate()
        assert module.net.propagate()[0] is first[0] and len(calls) == 1
        module.net.user_embedding.weight.mul_(2.0)  # in place, as load_state_dict and optimizers write
        module.net.item_embedding.weight.mul_(2.0)  # (propagation is linear: the outputs double)
        assert torch.allclose(module.net.propagate()[0], 2 * first[0], atol=1e-6) and len(calls) == 2
        module.net.load_state_dict({k: v.clone() for k, v in module.net.state_dict().items()})
        module.net.propagate()
        assert len(calls) == 3
        state = dm.training_state()
        module.net.set_graph(state["users"][: len(state["users"]) // 2], state["items"][: len(state["items"]) // 2])
        halved = module.net.propagate()
        assert len(calls) == 4 and not torch.equal(halved[0], first[0] * 2)

    # with gradients on (even in eval mode) nothing is cached and the gradients are those of a fresh module
    module = _module(dm)
    users, items = dm.training_state()["users"][:64], dm.training_state()["items"][:64]
    negatives = torch.randint(dm.n_items, (64, 1), generator=torch.Generator().manual_seed(1))
    module.eval()
    with torch.no_grad():
        module.net.propagate()  # fills the cache
    module.net.loss(users, items, negatives).backward()
    reference = _module(dm)
    reference.net.loss(users, items, negatives).backward()
    for got, expected in zip(module.net.parameters(), reference.net.parameters()):
        assert got.grad is not None and torch.equal(got.grad, expected.grad)


def test_lightning_validation_propagates_once_per_pass(dm, calls):
    module = _module(dm)
    limit = 3
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=limit,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=dm)
    assert len(dm.val_dataloader()) >= 3
    assert len(calls) == 2 * (limit + 1)  # per epoch: one per training step, one for the whole validation pass
