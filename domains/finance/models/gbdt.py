"""Gradient-boosted trees as a network: the ``lightgbm`` baseline, fitted with its own code, shippable.

The in-run LightGBM baseline written as a :class:`~sectorkit.domains.finance.models.base.FraudNetwork`, so it
checkpoints, evaluates, predicts, serves and exports like every finance model (and is a ``model=auto``
candidate). It is fitted once, before training, with the baseline's own function
(``baselines.fit_lightgbm_model``: the same estimator settings, native categorical splits on every level, trees
added until validation AP stops improving, ``baselines.params.lightgbm`` options) on the arrays the data module
hands over. The booster's trees (up to its best iteration) are then folded into tensors, one row per node of every
tree: the split feature, the threshold, the two children (a leaf points to itself), where a missing value goes,
whether the split is categorical and, for categorical splits, the set of levels sent left as a bitset of 32-bit
words; plus each leaf's value. ``forward`` walks every tree at once, a fixed number of steps (the deepest tree's
depth) of gathers (the trees sorted deepest first; those that have reached their leaves drop out of the walk), and
sums the leaves it reaches: the booster's raw score, i.e. the logit. No Python loop over rows or trees, so it runs
on a GPU and traces into one ONNX graph. No gradient steps (the run takes one epoch, which chooses the alert
threshold on validation); lightgbm is not needed at inference.

The inputs. The baseline is fitted on the data module's ``arrays(keep_missing=True)``: numeric features after the
model's own transform (signed log1p, standardised with the training statistics) with missing values as NaN, and
the categorical codes of the module's vocabulary. Every finance network receives exactly those values, except that
a missing value arrives as 0 (the training mean). So the thresholds need no change of scale (the affine map of the
standardisation is already applied on both sides; each is stored as the largest float32 not above it, so the
network's float32 comparison ``x <= t`` agrees with the booster's double one for every float32 input). Missing
values follow LightGBM's own rules: a split that learnt a direction for missing values (missing type NaN, or Zero)
sends a 0 that way, as the booster sends NaN (and exact zeros) there; in a split without one (missing type None,
the column had no missing training values) LightGBM reads NaN as 0, as the network does. The one case where the
two differ: a present value that standardises to exactly 0 in a column with missing training values is read as
missing (the ``linear`` network makes the same choice). Categorical levels unseen in training (code 0, or a
level the trees never split on) go right, as in LightGBM. On the same split the network's probabilities are the
booster's ``predict_proba`` (``tests/domains/finance/test_gbdt_network.py`` checks them to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sectorkit.domains.finance.models.base import FraudNetwork

WORD_BITS = 32  # the categorical bitsets' words (held in int64, so no sign bit is in the way)
CPU_ROWS = 256  # on a CPU, rows walked at a time: the (rows, trees) node tables stay in cache (about 2x faster than 4,096)


class GradientBoostedTrees(FraudNetwork):
    """``logit = sum over trees of the value of the leaf each row reaches``; buffers sized by the fit."""

    memory_bank = True  # fitted by the booster before training: no optimizer, no gradient steps

    def __init__(self, n_numeric: int, cardinalities: Sequence[int], params: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.params, self.seed = dict(params or {}), int(seed)
        self.n_numeric, self.cardinalities = int(n_numeric), [int(c) for c in cardinalities]
        empty_long, empty_bool = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.bool)
        self.register_buffer("roots", torch.zeros(1, dtype=torch.long))  # (trees,) each tree's root node, deepest tree first
        self.register_buffer("tree_depth", torch.zeros(1, dtype=torch.long))  # (trees,) each tree's depth, descending
        self.register_buffer("feature", empty_long.clone())  # (nodes,) column of [numeric | categorical]
        self.register_buffer("threshold", torch.zeros(1))  # numeric splits: x <= threshold goes left ...
        self.register_buffer("zero_left", empty_bool.clone())  # ... and x == 0 (missing) goes left when this is set
        self.register_buffer("left", empty_long.clone())  # children (a leaf: itself)
        self.register_buffer("right", empty_long.clone())
        self.register_buffer("categorical", empty_bool.clone())  # categorical split: the level's bit set goes left
        self.register_buffer("word_start", empty_long.clone())  # its bitset: words[word_start : word_start + n_words]
        self.register_buffer("n_words", empty_long.clone())
        self.register_buffer("words", empty_long.clone())
        self.register_buffer("value", torch.zeros(1))  # leaf values (0 on split nodes)
        self.register_buffer("powers", torch.tensor([2**b for b in range(WORD_BITS)], dtype=torch.long))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.active: list[int] = []  # per step, how many trees (the deepest first) are still walking: from tree_depth
        self.register_load_state_dict_post_hook(lambda module, _: module.count_active())
        self.trees: int | None = None  # the booster's best iteration (for the log)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        if numeric.device.type == "cpu" and numeric.shape[0] > CPU_ROWS and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return torch.cat([self.walk(n, c) for n, c in zip(numeric.split(CPU_ROWS), categorical.split(CPU_ROWS))])
        return self.walk(numeric, categorical)

    def walk(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Every tree's walk from its root to a leaf, for all rows at once; the sum of the leaf values."""
        z = torch.cat([numeric, categorical.to(numeric.dtype)], dim=1)
        node = self.roots.unsqueeze(0).expand(z.shape[0], -1)  # (batch, trees still walking)
        total = torch.zeros(z.shape[0], dtype=self.value.dtype, device=z.device)
        with_categorical = self.words.numel() > 1
        for walking in self.active:  # trees sorted deepest first: the ones that reached their leaves leave the walk
            if walking < node.shape[1]:
                total = total + _at(self.value, node[:, walking:]).sum(1)
                node = node[:, :walking]
            x = torch.gather(z, 1, _at(self.feature, node))
            zero = x == 0  # (boolean algebra, not where: ONNX Runtime has no Where on booleans)
            left = (zero & _at(self.zero_left, node)) | (~zero & (x <= _at(self.threshold, node)))
            if with_categorical:
                code = x.clamp(0, 2**40).to(torch.long)  # only read on categorical splits, where x is a code
                n_words = _at(self.n_words, node)
                at = torch.div(code, WORD_BITS, rounding_mode="floor")
                word = _at(self.words, _at(self.word_start, node) + torch.minimum(at, (n_words - 1).clamp_min(0)))
                bit = torch.remainder(torch.div(word, _at(self.powers, torch.remainder(code, WORD_BITS)), rounding_mode="floor"), 2) == 1
                split = _at(self.categorical, node)
                left = (split & (at < n_words) & bit) | (~split & left)
            node = torch.where(left, _at(self.left, node), _at(self.right, node))
        return total + _at(self.value, node).sum(1)

    def count_active(self) -> None:
        """``active`` from ``tree_depth``: at step s, the trees deeper than s."""
        depth = self.tree_depth.cpu().numpy()
        self.active = [int((depth > step).sum()) for step in range(int(depth.max(initial=0)))]

    def fit(self, arrays: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Fit from the data module's ``arrays(split, keep_missing=True)`` (train, and valid for early stopping), once:
        a loaded checkpoint keeps its fitted trees."""
        if bool(self.fitted):
            return
        from sectorkit.domains.finance.baselines import fit_lightgbm_model

        model = fit_lightgbm_model(arrays("train", keep_missing=True), arrays("valid", keep_missing=True), self.seed, self.params)
        best = int(getattr(model, "best_iteration_", 0) or 0)
        self.load_booster(model.booster_.dump_model(num_iteration=best if best > 0 else None))
        self.trees = best or None

    def load_booster(self, dump: dict[str, Any]) -> None:
        """Fold a binary LightGBM booster's ``dump_model()`` into the buffers."""
        objective = str(dump.get("objective", "binary"))
        if not objective.startswith(("binary", "cross_entropy")) or int(dump.get("num_tree_per_iteration", 1)) != 1:
            raise ValueError(f"gbdt: expected a binary booster, got objective {objective!r}")
        sigmoid = next((float(p.split(":")[1]) for p in objective.split() if p.startswith("sigmoid:")), 1.0)
        nodes: dict[str, list[Any]] = {k: [] for k in ("feature", "threshold", "zero_left", "left", "right", "categorical", "word_start",
                                                        "n_words", "value")}
        words: list[int] = [0]  # word 0: a placeholder, so every lookup has a word to read
        trees: list[tuple[int, int]] = []  # (root, depth)

        def add(tree: dict[str, Any], level: int) -> tuple[int, int]:
            index = len(nodes["feature"])
            for values in nodes.values():
                values.append(0)
            nodes["left"][index] = nodes["right"][index] = index
            nodes["threshold"][index] = 0.0
            if "split_index" not in tree:  # a leaf
                nodes["value"][index] = sigmoid * float(tree["leaf_value"])
                return index, level
            nodes["feature"][index] = int(tree["split_feature"])
            if tree["decision_type"] == "==":  # categorical: the levels listed go left
                levels = [int(v) for v in str(tree["threshold"]).split("||") if v != ""]
                bitset = np.zeros(max(levels, default=0) // WORD_BITS + 1, dtype=np.int64)
                for code in levels:
                    bitset[code // WORD_BITS] |= 1 << (code % WORD_BITS)
                nodes["categorical"][index] = True
                nodes["word_start"][index], nodes["n_words"][index] = len(words), len(bitset)
                words.extend(bitset.tolist())
            elif tree["decision_type"] == "<=":
                threshold = float(tree["threshold"])
                nodes["threshold"][index] = _float32_at_most(threshold)
                # a missing value (0 here): the learnt default direction (missing type NaN or Zero), else compared as 0
                learnt = str(tree.get("missing_type", "None")) in ("NaN", "Zero")
                nodes["zero_left"][index] = bool(tree.get("default_left", False)) if learnt else 0.0 <= threshold
            else:
                raise ValueError(f"gbdt: unknown decision type {tree['decision_type']!r}")
            nodes["left"][index], left_depth = add(tree["left_child"], level + 1)
            nodes["right"][index], right_depth = add(tree["right_child"], level + 1)
            return index, max(left_depth, right_depth)

        for tree in dump["tree_info"]:
            trees.append(add(tree["tree_structure"], 0))
        if not trees:  # no tree: a constant logit of 0
            trees.append(add({"leaf_value": 0.0}, 0))
        trees.sort(key=lambda t: -t[1])  # deepest first (stable: the booster's order within a depth)
        device = self.value.device
        long, boolean = torch.long, torch.bool
        self.roots = torch.tensor([root for root, _ in trees], dtype=long, device=device)
        self.tree_depth = torch.tensor([depth for _, depth in trees], dtype=long, device=device)
        for name, dtype in (("feature", long), ("left", long), ("right", long), ("word_start", long), ("n_words", long),
                            ("zero_left", boolean), ("categorical", boolean)):
            setattr(self, name, torch.tensor(nodes[name], dtype=dtype, device=device))
        self.threshold = torch.tensor(np.asarray(nodes["threshold"], np.float32), device=device)
        self.value = torch.tensor(np.asarray(nodes["value"], np.float64), dtype=torch.float32, device=device)
        self.words = torch.tensor(words, dtype=long, device=device)
        self.fitted.fill_(True)
        self.count_active()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """The buffers' sizes come from the fit: take the checkpoint's sizes before loading it."""
        for name, buffer in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buffer is not None and isinstance(saved, torch.Tensor) and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=buffer.dtype, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _at(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a (batch, k) ``index`` into a 1-d ``table``: as ``torch.gather`` on the table broadcast
    over the batch (several times faster than indexing on CPU), and as a plain index (ONNX ``Gather``) in an export."""
    if torch.onnx.is_in_onnx_export():
        return table[index]
    return torch.gather(table.unsqueeze(0).expand(index.shape[0], -1), 1, index)


def _float32_at_most(value: float) -> float:
    """The largest float32 not above ``value``: for a float32 ``x``, ``x <= it`` exactly when ``x <= value``."""
    with np.errstate(over="ignore"):  # beyond float32's range: +-inf, then the largest finite float32 below
        rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)
