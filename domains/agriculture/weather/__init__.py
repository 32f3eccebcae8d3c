"""Daily weather forecasting (``data.problem=weather``): quantile forecasts of days 1..H from lookback windows
of several stations pooled, against classical per-station baselines."""
