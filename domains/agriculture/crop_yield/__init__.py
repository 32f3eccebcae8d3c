"""Seasonal crop-yield forecasting (``data.problem=yield``; the package is not called ``yield``, a Python
keyword): one yield per region and year from growing-season weather, trend and tabular covariates."""
