"""Non-deep baselines fitted on the run's training window and scored on its test window: logistic
regression (the handbook's baseline, set up for wide tables), scikit-learn's HistGradientBoosting trees and
LightGBM (native categorical splits on every level, trees added until validation AP stops improving).

Both take ``[numeric | categorical codes]``: numeric features after the model's transform (signed log1p,
standardised with the training statistics), categorical codes of the data module's vocabularies. High-cardinality
categoricals are frequency-capped for the first two (the most frequent training levels keep their own code, the
rest share one "other" code), so a 1,500-level column neither breaks HistGradientBoosting (at most 255 categories)
nor blows up the logistic regression's one-hot encoding; LightGBM takes every level as it is.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
from sectorkit.core.errors import ConfigError
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

BASELINES = ("logistic_regression", "hist_gradient_boosting", "lightgbm")
# options of each baseline read here (``baselines.params.<name>``); the other keys go to the scikit-learn estimator
LOGISTIC_DEFAULTS: dict[str, Any] = {"C_grid": [0.01, 0.1, 1.0], "max_levels": 32, "max_iter": 1000}
HIST_GRADIENT_BOOSTING_DEFAULTS: dict[str, Any] = {"max_levels": 255}
# up to n_estimators trees at learning_rate 0.05, stopped 100 rounds after the best validation AP
LIGHTGBM_DEFAULTS: dict[str, Any] = {"early_stopping_rounds": 100}
LIGHTGBM_ESTIMATOR: dict[str, Any] = {"n_estimators": 2000, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20,
                                      "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "metric": "average_precision",
                                      "verbosity": -1}
log = logging.getLogger(__name__)


def baseline_names(names: Any) -> list[str]:
    """``baselines.names``: null (absent) = every baseline, ``[]`` = none, else the listed ones (checked)."""
    if names is None:
        return list(BASELINES)
    names = [names] if isinstance(names, str) else [str(n) for n in names]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"baselines.names: unknown baseline(s) {unknown}; expected some of {list(BASELINES)}, [] for none or null for all")
    return names


def cap_levels(train: np.ndarray, others: list[np.ndarray], max_levels: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per column, the ``max_levels - 1`` most frequent training codes renumbered 1.. by frequency and every other
    code (rarer, or unseen in training) mapped to 0, so each column has at most ``max_levels`` values."""
    if train.shape[1] == 0:
        return train, others
    keep = max(int(max_levels) - 1, 1)
    out_train, out_others = np.zeros_like(train), [np.zeros_like(o) for o in others]
    for j in range(train.shape[1]):
        codes, counts = np.unique(train[:, j], return_counts=True)
        frequent = codes[np.lexsort((codes, -counts))][:keep]  # by count, ties by code
        for src, dst in ((train, out_train), *zip(others, out_others)):
            dst[:, j] = _remap(src[:, j], frequent)
    return out_train, out_others


def _remap(column: np.ndarray, frequent: np.ndarray) -> np.ndarray:
    """Codes in ``frequent`` -> their rank + 1, others -> 0 (vectorised)."""
    order = np.argsort(frequent)
    position = np.searchsorted(frequent[order], column)
    position = np.minimum(position, len(frequent) - 1)
    hit = frequent[order][position] == column
    return np.where(hit, order[position] + 1, 0)


def split_options(params: dict[str, Any] | None, defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(this module's options with their defaults, the estimator's own keyword arguments)."""
    params = dict(params or {})
    options = {k: params.pop(k, v) for k, v in defaults.items()}
    return options, params


def logistic_parts(n_numeric: int, n_categorical: int, seed: int = 0, params: dict[str, Any] | None = None) -> tuple[ColumnTransformer, LogisticRegression]:
    """The logistic regression's unfitted preprocessing of ``[numeric | capped categorical codes]`` and the model."""
    options, kwargs = split_options(params, LOGISTIC_DEFAULTS)
    kwargs.pop("C", None)  # set per fit by fit_logistic_regression
    numeric = list(range(n_numeric))
    # missing values: the training mean plus one 0/1 indicator per column with missing values; then standardised
    steps = [("num", make_pipeline(SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True), StandardScaler()), numeric)]
    if n_categorical:  # codes capped to the most frequent levels plus "other" (cap_levels): one column each
        steps.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(range(n_numeric, n_numeric + n_categorical))))
    return ColumnTransformer(steps), LogisticRegression(max_iter=int(options["max_iter"]), random_state=seed, warm_start=True, **kwargs)


def make_hist_gradient_boosting(n_numeric: int, n_categorical: int, seed: int = 0, params: dict[str, Any] | None = None) -> HistGradientBoostingClassifier:
    """HistGradientBoosting on ``[numeric | capped categorical codes]``, the codes declared categorical."""
    _, kwargs = split_options(params, HIST_GRADIENT_BOOSTING_DEFAULTS)
    mask = np.array([False] * n_numeric + [True] * n_categorical) if n_categorical else None
    return HistGradientBoostingClassifier(categorical_features=mask, random_state=seed, **kwargs)


def fit_logistic_regression(train: tuple, valid: tuple | None, test: np.ndarray, seed: int, params: dict[str, Any] | None) -> np.ndarray:
    """Fraud probabilities of the logistic regression on ``test``; its inverse regularisation C chosen from
    ``C_grid`` by average precision on ``valid`` (a fixed ``C`` in the params skips the search; without validation
    rows holding both classes, C = 1)."""
    prepare, best = fit_logistic_model(train, valid, seed, params)
    return best.predict_proba(prepare.transform(test))[:, 1]


def fit_logistic_model(train: tuple, valid: tuple | None, seed: int, params: dict[str, Any] | None) -> tuple[ColumnTransformer, LogisticRegression]:
    """The fitted preprocessing and logistic regression of :func:`fit_logistic_regression` (C chosen on ``valid``);
    also what the ``linear`` network is fitted with."""
    x, c, y = train
    options, kwargs = split_options(params, LOGISTIC_DEFAULTS)
    grid = [float(kwargs["C"])] if "C" in kwargs else sorted(float(v) for v in options["C_grid"])
    if not grid:
        raise ConfigError("baselines.params.logistic_regression.C_grid: expected at least one value")
    prepare, model = logistic_parts(x.shape[1], c.shape[1], seed, params)
    xt = prepare.fit_transform(np.concatenate([x, c], axis=1), y)
    usable = valid is not None and len(valid[2]) and valid[2].min() != valid[2].max()
    if len(grid) > 1 and not usable:
        log.warning("logistic_regression: no validation rows with both classes to choose C from %s; C = 1", grid)
        grid = [1.0]
    xv = prepare.transform(np.concatenate(valid[:2], axis=1)) if usable and len(grid) > 1 else None
    best, best_ap = None, -np.inf
    for value in grid:  # ascending C, each fit starting from the previous solution
        model.set_params(C=value)
        model.fit(xt, y)
        ap = average_precision_score(valid[2], model.predict_proba(xv)[:, 1]) if xv is not None else 0.0
        if ap > best_ap:
            best, best_ap = copy.deepcopy(model), ap
    if xv is not None:
        log.debug("logistic_regression: C=%g chosen on the validation split (AP %.4f) from %s", best.C, best_ap, grid)
    return prepare, best


def fit_lightgbm(train: tuple, valid: tuple | None, test: tuple, seed: int, params: dict[str, Any] | None) -> np.ndarray:
    """Fraud probabilities of LightGBM on ``test`` (numeric, codes), fitted by :func:`fit_lightgbm_model`."""
    return fit_lightgbm_model(train, valid, seed, params).predict_proba(np.concatenate(test, axis=1))[:, 1]


def fit_lightgbm_model(train: tuple, valid: tuple | None, seed: int, params: dict[str, Any] | None) -> Any:
    """The fitted ``LGBMClassifier`` of the ``lightgbm`` baseline on ``[numeric | codes]``: categorical codes split
    natively, trees added until validation AP has not improved for ``early_stopping_rounds`` (all ``n_estimators``
    without validation rows holding both classes; ``best_iteration_`` is what it predicts with). Threads: the run's
    torch thread count. Also what the ``gbdt`` network is fitted with."""
    import lightgbm
    import torch

    options, kwargs = split_options(params, LIGHTGBM_DEFAULTS)
    model = lightgbm.LGBMClassifier(**{**LIGHTGBM_ESTIMATOR, "random_state": seed, "n_jobs": torch.get_num_threads(), **kwargs})
    x, c, y = train
    fit: dict[str, Any] = {"categorical_feature": list(range(x.shape[1], x.shape[1] + c.shape[1])) or "auto"}
    if valid is not None and len(valid[2]) and valid[2].min() != valid[2].max():
        fit |= {"eval_X": np.concatenate(valid[:2], axis=1), "eval_y": valid[2]}
        fit["callbacks"] = [lightgbm.early_stopping(int(options["early_stopping_rounds"]), verbose=False)]
    return model.fit(np.concatenate([x, c], axis=1), y, **fit)


def fit_predict_baselines(
    x_num_train: np.ndarray, x_cat_train: np.ndarray, y_train: np.ndarray,
    x_num_test: np.ndarray, x_cat_test: np.ndarray,
    names: list[str] | tuple[str, ...] = BASELINES, seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
    valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Fraud probabilities of each baseline on the test rows. Numeric inputs may hold NaN (missing): the logistic
    regression imputes them with indicators, HistGradientBoosting gets 0 (the training mean), as the model does,
    LightGBM learns a direction for them. ``valid`` (numeric, codes, labels) is where the logistic regression
    chooses C and LightGBM stops adding trees."""
    params = params or {}
    scores: dict[str, np.ndarray] = {}
    for name in baseline_names(list(names)):
        own = params.get(name)
        if name == "logistic_regression":
            max_levels = int(split_options(own, LOGISTIC_DEFAULTS)[0]["max_levels"])
            others = [x_cat_test] + ([valid[1]] if valid is not None else [])
            c_train, capped = cap_levels(x_cat_train, others, max_levels)
            valid_capped = (valid[0], capped[1], valid[2]) if valid is not None else None
            test = np.concatenate([x_num_test, capped[0]], axis=1)
            scores[name] = fit_logistic_regression((x_num_train, c_train, y_train), valid_capped, test, seed, own)
        elif name == "lightgbm":
            scores[name] = fit_lightgbm((x_num_train, x_cat_train, y_train), valid, (x_num_test, x_cat_test), seed, own)
        else:
            options, kwargs = split_options(own, HIST_GRADIENT_BOOSTING_DEFAULTS)
            max_levels = min(int(options["max_levels"]), int(kwargs.get("max_bins", 255)))
            c_train, (c_test,) = cap_levels(x_cat_train, [x_cat_test], max_levels)
            model = make_hist_gradient_boosting(x_num_train.shape[1], x_cat_train.shape[1], seed, own)
            model.fit(np.concatenate([np.nan_to_num(x_num_train), c_train], axis=1), y_train)
            scores[name] = model.predict_proba(np.concatenate([np.nan_to_num(x_num_test), c_test], axis=1))[:, 1]
    return scores


def datamodule_baselines(datamodule: Any, names: list[str] | tuple[str, ...] = BASELINES, seed: int = 0,
                         params: dict[str, dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Each baseline's test scores for a set-up :class:`~sectorkit.domains.finance.data.FraudDataModule`: fitted on
    its training split, C of the logistic regression chosen on its validation split."""
    if not names:
        return {}
    x, c, y = datamodule.arrays("train", keep_missing=True)
    valid = datamodule.arrays("valid", keep_missing=True)
    xt, ct, _ = datamodule.arrays("test", keep_missing=True)
    return fit_predict_baselines(x, c, y, xt, ct, names=names, seed=seed, params=params, valid=valid)
