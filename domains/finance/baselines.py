"""Non-deep baselines fitted on the run's training window and scored on its test window: logistic
regression (the handbook's baseline) and scikit-learn's HistGradientBoosting trees."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sectorkit.core.errors import ConfigError

BASELINES = ("logistic_regression", "hist_gradient_boosting")


def make_baseline(name: str, n_numeric: int, n_categorical: int, seed: int = 0, params: dict[str, Any] | None = None) -> Any:
    """An unfitted scikit-learn estimator taking ``[numeric | categorical codes]`` columns."""
    params = dict(params or {})
    numeric = list(range(n_numeric))
    categorical = list(range(n_numeric, n_numeric + n_categorical))
    if name == "logistic_regression":
        columns = ColumnTransformer([("num", StandardScaler(), numeric)] + ([("cat", OneHotEncoder(handle_unknown="ignore"), categorical)] if categorical else []))
        return make_pipeline(columns, LogisticRegression(max_iter=params.pop("max_iter", 1000), random_state=seed, **params))
    if name == "hist_gradient_boosting":
        mask = np.array([False] * n_numeric + [True] * n_categorical) if n_categorical else None
        return HistGradientBoostingClassifier(categorical_features=mask, random_state=seed, **params)
    raise ConfigError(f"baselines.names: unknown baseline {name!r}; expected some of {list(BASELINES)}")


def fit_predict_baselines(
    x_num_train: np.ndarray, x_cat_train: np.ndarray, y_train: np.ndarray,
    x_num_test: np.ndarray, x_cat_test: np.ndarray,
    names: list[str] | tuple[str, ...] = BASELINES, seed: int = 0, params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Fraud probabilities of each baseline on the test rows."""
    train = np.concatenate([x_num_train, x_cat_train.astype(np.float64)], axis=1)
    test = np.concatenate([x_num_test, x_cat_test.astype(np.float64)], axis=1)
    scores: dict[str, np.ndarray] = {}
    for name in names:
        model = make_baseline(name, x_num_train.shape[1], x_cat_train.shape[1], seed, (params or {}).get(name))
        model.fit(train, y_train)
        scores[name] = model.predict_proba(test)[:, 1]
    return scores
