"""The module's chunked validation/test ranking equals the dense path, and ranking sharded over ranks (simulated in one
process, and two real gloo processes under Lightning DDP) gives exactly the one-process metrics, every user once."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from sectorkit.core.errors import DataError
from sectorkit.core.sharding import ShardBatchSampler, evaluation_rank
from sectorkit.domains.retail.baselines import evaluate_baselines
from sectorkit.domains.retail.data import RetailDataModule
from sectorkit.domains.retail.metrics import RankingMetrics, dense_targets
from sectorkit.domains.retail.models.ease import EASE
from sectorkit.domains.retail.models.lightgcn import LightGCN
from sectorkit.domains.retail.module import RecommenderModule
from sectorkit.domains.retail.ranking import ItemSets, factor_scorer, full_ranking

# small enough to be quick, with an odd number of evaluated users (checked below)
SAMPLE = {"n_users": 151, "n_items": 90, "mean_length": 15, "popularity_exponent": 0.5, "taste_strength": 6.0}
KS = [5, 10, 20]
NETS = {
    "lightgcn": {"_target_": "sectorkit.domains.retail.models.lightgcn.LightGCN", "embedding_size": 16},
    "ease": {"_target_": "sectorkit.domains.retail.models.ease.EASE", "reg_weight": 50.0},
}


def datamodule(network: type = LightGCN, eval_batch_size: int = 16) -> RetailDataModule:
    dm = RetailDataModule(sample=SAMPLE, batch_size=256, eval_batch_size=eval_batch_size, seed=0, network=network)
    dm.setup("fit")
    return dm


def build_module(dm: RetailDataModule, name: str = "lightgcn", **kwargs) -> RecommenderModule:
    torch.manual_seed(0)
    module = RecommenderModule(NETS[name], **dm.model_kwargs(), ks=KS, **kwargs)
    module.prepare_fit(dm.training_state())
    return module.eval()


def on(device: str, batches):
    return ({k: v.to(device) for k, v in batch.items()} for batch in batches)


def dense_path_metrics(module: RecommenderModule, dm: RetailDataModule, stage: str, device: str = "cpu") -> dict[str, float]:
    """The evaluation as it was: forward's whole masked [batch, catalogue] scores, torch.topk, dense targets."""
    metric = RankingMetrics(KS, dm.n_items).to(device)
    with torch.no_grad():
        for batch in on(device, dm.eval_loader(stage)):
            top = torch.topk(module(*module.batch_inputs(batch)), max(KS), dim=1).indices
            metric.update(top, dense_targets(batch["targets"], dm.n_items), module.popularity)
    return {k: float(v) for k, v in metric.compute().items()}


def module_metrics(module: RecommenderModule, batches, device: str = "cpu") -> RankingMetrics:
    """The module's own validation/test update over ``batches``; the metric with its (unreduced) states."""
    metrics = module.build_metrics().to(device)
    with torch.no_grad():
        for batch in on(device, batches):
            module.update_metrics(metrics, batch)
    return metrics["ranking"]


def as_floats(metric: RankingMetrics) -> dict[str, float]:
    return {k: float(v) for k, v in metric.compute().items()}


def assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-6), name


@pytest.fixture(scope="module")
def lightgcn_dm() -> RetailDataModule:
    return datamodule(LightGCN)


@pytest.mark.parametrize("name,eval_chunk", [("lightgcn", 1), ("lightgcn", 7), ("lightgcn", 1024), ("ease", 5)])
def test_chunked_module_evaluation_equals_the_dense_path(lightgcn_dm, name, eval_chunk):
    dm = lightgcn_dm if name == "lightgcn" else datamodule(EASE)
    module = build_module(dm, name, eval_chunk=eval_chunk)
    rows_scored, score_all = [], module.net.score_all
    for stage in ("valid", "test"):
        dense = dense_path_metrics(module, dm, stage)
        module.net.score_all = lambda users, history: rows_scored.append(len(users)) or score_all(users, history)
        chunked = as_floats(module_metrics(module, dm.eval_loader(stage)))
        del module.net.score_all
        assert_same(chunked, dense)
        assert chunked["ndcg@10"] > 0
    assert max(rows_scored) == min(eval_chunk, dm.eval_batch_size)  # never more than a chunk of users x the catalogue


def test_the_popularity_fallback_and_known_items_in_the_chunked_path(lightgcn_dm):
    dm, module = lightgcn_dm, build_module(lightgcn_dm, eval_chunk=3)
    batch = next(iter(dm.eval_loader("test")))
    batch["users"][::2] = -1  # unknown users: log-popularity scores, as forward gives them
    reference = RankingMetrics(KS, dm.n_items)
    with torch.no_grad():
        reference.update(torch.topk(module(*module.batch_inputs(batch)), max(KS), dim=1).indices, dense_targets(batch["targets"], dm.n_items), module.popularity)
    assert_same(as_floats(module_metrics(module, [batch])), as_floats(reference))


@pytest.mark.requires_gpu
def test_chunked_module_evaluation_on_cuda_equals_the_dense_path(lightgcn_dm):
    module = build_module(lightgcn_dm, eval_chunk=5).to("cuda")
    chunked = as_floats(module_metrics(module, lightgcn_dm.eval_loader("test"), "cuda"))
    assert_same(chunked, dense_path_metrics(module, lightgcn_dm, "test", "cuda"))


@pytest.mark.parametrize("n,world", [(1, 1), (37, 2), (37, 3), (5, 4), (3, 4)])
def test_shard_batch_sampler_blocks_are_disjoint_complete_and_unpadded(n, world):
    samplers = [ShardBatchSampler(n, 4, rank, world) for rank in range(world)]
    assert all(isinstance(s, DistributedSampler) for s in samplers)  # so Lightning keeps it instead of injecting its own
    indices = [i for s in samplers for batch in s for i in batch]
    assert indices == list(range(n))  # every index once, blocks in rank order
    assert all(len(list(s)) == len(s) and all(len(b) <= 4 for b in s) for s in samplers)
    sizes = [len(s.block) for s in samplers]
    assert max(sizes) - min(sizes) <= 1
    padded = sum(len(list(DistributedSampler(range(n), world, r, shuffle=False))) for r in range(world))
    assert padded == -(-n // world) * world  # what DistributedSampler would have counted (n + padding)


def test_evaluation_rank_shards_only_inside_a_multi_process_evaluation():
    def trainer(world_size, **stage):
        flags = {"validating": False, "testing": False, "sanity_checking": False, **stage}
        return SimpleNamespace(world_size=world_size, global_rank=1, **flags)

    assert evaluation_rank(None) == (0, 1)
    assert evaluation_rank(trainer(1, testing=True)) == (0, 1)
    assert evaluation_rank(trainer(2)) == (0, 1)  # e.g. the test predictions written on rank 0 after testing
    for stage in ("validating", "testing", "sanity_checking"):
        assert evaluation_rank(trainer(2, **{stage: True})) == (1, 2)


def test_the_data_module_gives_a_testing_rank_its_block_and_refuses_empty_ranks(lightgcn_dm):
    dm, n = lightgcn_dm, len(lightgcn_dm.eval_dataset("test"))
    try:
        dm.trainer = SimpleNamespace(world_size=2, global_rank=1, validating=False, testing=True, sanity_checking=False)
        users = [u for batch in dm.test_dataloader() for u in batch["users"].tolist()]
        assert users == dm.eval_dataset("test").users[n - n // 2:].tolist()  # rank 1's block: the last half
        dm.trainer = SimpleNamespace(world_size=n + 1, global_rank=0, validating=False, testing=True, sanity_checking=False)
        with pytest.raises(DataError, match=f"{n} users to evaluate on the test split for {n + 1} processes"):
            dm.test_dataloader()
    finally:
        dm.trainer = None
    assert len([u for batch in dm.test_dataloader() for u in batch["users"].tolist()]) == n  # outside a trainer: every user


@pytest.mark.parametrize("world", [2, 3])
def test_simulated_ranks_reduce_to_the_one_process_metrics(lightgcn_dm, world):
    dm, module = lightgcn_dm, build_module(lightgcn_dm)
    dataset = dm.eval_dataset("test")
    n_users = len(dataset)
    assert n_users % 2 == 1 and n_users > dm.eval_batch_size * world  # odd: DistributedSampler would pad
    single = module_metrics(module, dm.eval_loader("test"))
    ranks = [module_metrics(module, (dataset[b] for b in ShardBatchSampler(n_users, dm.eval_batch_size, r, world))) for r in range(world)]
    assert [int(m.users) for m in ranks] != [0] * world and sum(int(m.users) for m in ranks) == n_users == int(single.users)
    reduced = ranks[0]
    for metric in ranks[1:]:  # what compute() does across processes: each state reduced by its dist_reduce_fx (sum)
        reduced.merge_state(metric)
    assert_same(as_floats(reduced), as_floats(single))
    # full_ranking over the blocks, reduced the same way, gives them too
    users = torch.as_tensor(dataset.users)
    known, targets = ItemSets.from_lists(dm.known_history("test"), dm.n_items), ItemSets.from_lists(dm.lists["test"], dm.n_items)
    with torch.no_grad():
        whole, _ = full_ranking(factor_scorer(*module.net.propagate()), users, known, targets, KS, dm.n_items, module.popularity)
    assert_same(whole, as_floats(single))


# --- two real processes -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordUsers(pl.Callback):
    """The users of each evaluation batch of this rank, and how many users this rank's metric counted (read before
    the module computes, which sums the counts over the ranks)."""

    def __init__(self) -> None:
        self.users: dict[str, list[int]] = {"valid": [], "test": []}
        self.counted: dict[str, int] = {}

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.users["valid"] += batch["users"].tolist()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.users["test"] += batch["users"].tolist()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # callbacks run before the module's hook
        self.counted["valid"] = int(pl_module.val_metrics["ranking"].users)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.counted["test"] = int(pl_module.test_metrics["ranking"].users)


def _ddp_worker(rank: int, world: int, port: int, weights: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world), "NODE_RANK": "0"})
    torch.set_num_threads(1)
    dm = datamodule()
    module = build_module(dm)
    module.load_state_dict(torch.load(weights, weights_only=True))
    record = RecordUsers()
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy="ddp", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[record])
    valid = trainer.validate(module, datamodule=dm, verbose=False)[0]
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    if not dist.is_initialized():  # pragma: no cover - Lightning keeps its process group
        dist.init_process_group("gloo", rank=rank, world_size=world)
    dataset = dm.eval_dataset("test")
    known, targets = ItemSets.from_lists(dm.known_history("test"), dm.n_items), ItemSets.from_lists(dm.lists["test"], dm.n_items)
    with torch.no_grad():
        ranked, top = full_ranking(factor_scorer(*module.net.propagate()), torch.as_tensor(dataset.users), known, targets, KS, dm.n_items,
                                   module.popularity, user_chunk=7, keep_topk=True, distributed=True)
    result = {"valid": valid, "test": test, "full_ranking": ranked, "users": record.users, "counted": record.counted, "full_ranking_rows": len(top)}
    dist.barrier()
    if rank == 0:  # alone while the group exists, as the pipeline's baselines after a DDP run (rank 1 has left)
        result["mostpop"] = evaluate_baselines(dm, KS, ["mostpop"])["mostpop"].metrics
    Path(f"{out}.{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow  # two interpreters importing torch and Lightning: about 30 s on 2 shared cores
def test_two_gloo_processes_evaluate_exactly_like_one(tmp_path):
    dm = datamodule()
    module = build_module(dm)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    expected = {stage: {f"{'val' if stage == 'valid' else 'test'}/{k}": v for k, v in dense_path_metrics(module, dm, stage).items()}
                for stage in ("valid", "test")}
    users = {stage: dm.eval_dataset(stage).users.tolist() for stage in ("valid", "test")}
    assert len(users["test"]) % 2 == 1 and len(users["valid"]) > 2 * dm.eval_batch_size
    out = str(tmp_path / "rank")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "weights.pt"), out), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(2)]
    for stage in ("valid", "test"):
        shares = [r["users"][stage] for r in ranks]
        assert all(shares) and shares[0] + shares[1] == users[stage]  # disjoint, complete, in order: no padded duplicate
        assert [r["counted"][stage] for r in ranks] == [len(s) for s in shares]  # each rank's metric counted its own users
        for r in ranks:  # both ranks hold the reduced metrics, equal to one process's
            assert_same({k: r[stage][k] for k in expected[stage]}, expected[stage])
    test_metrics = {k.removeprefix("test/"): v for k, v in expected["test"].items()}
    for r in ranks:
        assert_same(r["full_ranking"], test_metrics)
    assert sum(r["full_ranking_rows"] for r in ranks) == len(users["test"])
    assert_same(ranks[0]["mostpop"], evaluate_baselines(dm, KS, ["mostpop"])["mostpop"].metrics)
