"""Adding a model to a built-in domain takes one new file and one config, nothing else: a user's own network
for retail, in a folder of the user's (on the import path, its config on ``hydra.searchpath``), trained and
evaluated through the CLI's ``main`` in this process."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

NETWORK = '''
"""Biased matrix factorisation: BPR-MF plus a learnt popularity bias per item."""

import torch
import torch.nn.functional as F
from torch import nn

from sectorkit.domains.retail.models.base import RecommenderNetwork


class BiasedMF(RecommenderNetwork):
    input_type = "pairwise"
    loss_type = "bpr"

    def __init__(self, n_users: int, n_items: int, embedding_size: int = 16) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, embedding_size)
        self.items = nn.Embedding(n_items, embedding_size)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)

    def score_all(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.users(users) @ self.items.weight.T + self.bias.weight.T

    def loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        u = self.users(users)
        pos = (u * self.items(positives)).sum(-1) + self.bias(positives).squeeze(-1)
        neg = (u[:, None, :] * self.items(negatives)).sum(-1) + self.bias(negatives).squeeze(-1)
        return -F.logsigmoid(pos[:, None] - neg).mean()
'''

CONFIG = '''
defaults:
  - _schema_retail
  - _self_
_target_: sectorkit.domains.retail.module.RecommenderModule
net:
  _target_: biased_mf.BiasedMF
  embedding_size: 16
n_negatives: 1
ks: ${metrics.ks}
top_k: ${data.top_k}
'''


def test_a_new_network_file_and_config_add_a_model_to_retail(tmp_path: Path, cli_in_process, monkeypatch) -> None:
    code, conf = tmp_path / "code", tmp_path / "conf" / "model"
    code.mkdir()
    conf.mkdir(parents=True)
    (code / "biased_mf.py").write_text(textwrap.dedent(NETWORK))
    (conf / "biased_mf.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(code))  # PYTHONPATH=<code> for a sectorkit process
    common = ["domain=retail", "experiment=quick", "model=biased_mf", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
              "runtime.torch_threads=1", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    trained = cli_in_process(tmp_path, "train", *common, "trainer.max_epochs=3")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "retail" / "runs").glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["model_name"] == "biased_mf" and metrics["test"]["ndcg@10"] > metrics["baselines"]["mostpop"]["ndcg@10"] * 0.5
    checkpoint = metrics["checkpoint"]
    evaluated = cli_in_process(tmp_path, "evaluate", *common, f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"] == metrics["test"]
    unknown = cli_in_process(tmp_path, "train", "domain=retail", "model=biased_mf")  # without the user's config folder
    assert unknown.returncode == 2 and "unknown model 'biased_mf'" in unknown.stderr
