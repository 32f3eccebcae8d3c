"""Built-in sample: a vectorised transaction simulator after the design of Le Borgne et al.,
*Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook* (chapter 3.2).

Customers have a location, a mean amount and a daily transaction rate; terminals have a location;
a customer pays at terminals within ``radius``. Three fraud scenarios are planted:
(1) every amount above ``amount_threshold``; (2) ``n_compromised_terminals`` terminals a day, all their
transactions fraudulent for the next ``terminal_days`` days; (3) ``n_compromised_customers`` cards a
day, a third of their transactions over the next ``customer_days`` days fraudulent with amounts x5.
Everything is whole-array numpy (no per-transaction Python), deterministic for a given ``seed``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from sectorkit.core.progress import phase

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SimulatorConfig:
    """Simulator sizes and fraud-scenario settings; the defaults are the handbook's."""

    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0
    grid_size: float = 100.0  # side of the square map; scale it with sqrt(size) to keep the density
    amount_threshold: float = 220.0
    n_compromised_terminals: int = 2
    terminal_days: int = 28
    n_compromised_customers: int = 3
    customer_days: int = 14
    customer_fraud_share: float = 1 / 3
    customer_amount_factor: float = 5.0
    seed: int = 0

    def key(self) -> str:
        """A short stable hash of the settings, used as the cache file name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def customer_profiles(cfg: SimulatorConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Customer location on the grid, mean/std amount and mean number of transactions a day."""
    n = cfg.n_customers
    mean_amount = rng.uniform(5, 100, n)
    return pd.DataFrame(
        {
            "CUSTOMER_ID": np.arange(n),
            "x_customer": rng.uniform(0, cfg.grid_size, n),
            "y_customer": rng.uniform(0, cfg.grid_size, n),
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_nb_tx_per_day": rng.uniform(0, 4, n),
        }
    )


def terminal_profiles(cfg: SimulatorConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Terminal locations on the same grid."""
    n = cfg.n_terminals
    return pd.DataFrame({"TERMINAL_ID": np.arange(n), "x_terminal": rng.uniform(0, cfg.grid_size, n), "y_terminal": rng.uniform(0, cfg.grid_size, n)})


def reachable_terminals(customers: pd.DataFrame, terminals: pd.DataFrame, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the terminals within ``radius`` of each customer: (indptr, terminal indices)."""
    c_xy = customers[["x_customer", "y_customer"]].to_numpy()
    t_xy = terminals[["x_terminal", "y_terminal"]].to_numpy()
    pairs = cKDTree(c_xy).sparse_distance_matrix(cKDTree(t_xy), radius, output_type="ndarray")
    order = np.lexsort((pairs["j"], pairs["i"]))
    rows, cols = pairs["i"][order], pairs["j"][order]
    indptr = np.zeros(len(customers) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(customers)), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def draw_amounts_and_terminals(rng: np.random.Generator, cust: np.ndarray, seconds: np.ndarray, mean: np.ndarray, std: np.ndarray,
                               indptr: np.ndarray, terminal_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per transaction of customer ``cust``: a normal amount (negative draws redrawn uniformly in [0, 2 mean]), a
    terminal drawn among the customer's reachable ones (CSR ``indptr``/``terminal_idx``), and which transactions to
    keep (time of day inside the day, a customer with a reachable terminal)."""
    n = len(cust)
    amount = rng.normal(mean, std)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    degree = np.diff(indptr)[cust]
    pick = np.floor(rng.random(n) * np.maximum(degree, 1)).astype(np.int64)
    terminal = terminal_idx[np.minimum(indptr[cust] + pick, len(terminal_idx) - 1)] if len(terminal_idx) else np.zeros(n, np.int64)
    keep = (seconds > 0) & (seconds < SECONDS_PER_DAY) & (degree > 0)
    return amount, terminal, keep


def _transactions(cfg: SimulatorConfig, customers: pd.DataFrame, indptr: np.ndarray, terminal_idx: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Poisson number of transactions per customer-day, normal time of day, normal amounts."""
    rate = customers["mean_nb_tx_per_day"].to_numpy()
    counts = rng.poisson(np.broadcast_to(rate[:, None], (cfg.n_customers, cfg.n_days)))
    cust = np.repeat(np.repeat(np.arange(cfg.n_customers), cfg.n_days), counts.ravel())
    day = np.repeat(np.tile(np.arange(cfg.n_days), cfg.n_customers), counts.ravel())
    n = len(cust)
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n)
    mean, std = customers["mean_amount"].to_numpy()[cust], customers["std_amount"].to_numpy()[cust]
    amount, terminal, keep = draw_amounts_and_terminals(rng, cust, seconds, mean, std, indptr, terminal_idx)
    tx_seconds = (seconds.astype(np.int64) + day * SECONDS_PER_DAY)[keep]
    frame = pd.DataFrame(
        {
            "TX_TIME_SECONDS": tx_seconds,
            "TX_TIME_DAYS": day[keep],
            "CUSTOMER_ID": cust[keep],
            "TERMINAL_ID": terminal[keep],
            "TX_AMOUNT": np.round(amount[keep], 2),
        }
    )
    frame = frame.sort_values(["TX_TIME_SECONDS", "CUSTOMER_ID"], kind="stable", ignore_index=True)
    frame.insert(0, "TRANSACTION_ID", np.arange(len(frame)))
    frame.insert(1, "TX_DATETIME", pd.Timestamp(cfg.start_date) + pd.to_timedelta(frame["TX_TIME_SECONDS"], unit="s"))
    return frame


def _window_members(key_sorted: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For events with key ranges [lo, hi), the (event index, sorted position) pairs of their members."""
    start = np.searchsorted(key_sorted, lo, side="left")
    stop = np.searchsorted(key_sorted, hi, side="left")
    lengths = stop - start
    event = np.repeat(np.arange(len(lo)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return event, np.repeat(start, lengths) + offsets


def add_frauds(tx: pd.DataFrame, cfg: SimulatorConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Label the three fraud scenarios (later scenarios overwrite the scenario id, as in the handbook)."""
    amount = tx["TX_AMOUNT"].to_numpy().copy()
    fraud = np.zeros(len(tx), dtype=np.int8)
    scenario = np.zeros(len(tx), dtype=np.int8)
    days = tx["TX_TIME_DAYS"].to_numpy()

    s1 = amount > cfg.amount_threshold
    fraud[s1], scenario[s1] = 1, 1

    # Scenario 2: terminal t compromised on day d -> frauds on days [d, d + terminal_days).
    n_t = min(cfg.n_compromised_terminals, cfg.n_terminals)
    comp_t = np.argpartition(rng.random((cfg.n_days, cfg.n_terminals)), n_t - 1, axis=1)[:, :n_t] if n_t else np.zeros((cfg.n_days, 0), int)
    active = np.zeros((cfg.n_terminals, cfg.n_days + cfg.terminal_days + 1), dtype=np.int32)
    start_days = np.repeat(np.arange(cfg.n_days), n_t)
    np.add.at(active, (comp_t.ravel(), start_days), 1)
    np.add.at(active, (comp_t.ravel(), start_days + cfg.terminal_days), -1)
    active = np.cumsum(active, axis=1) > 0
    s2 = active[tx["TERMINAL_ID"].to_numpy(), days]
    fraud[s2], scenario[s2] = 1, 2

    # Scenario 3: customer c compromised on day d -> a share of its transactions in [d, d + customer_days)
    # (drawn without replacement among all of that day's compromised transactions) x amount_factor.
    n_c = min(cfg.n_compromised_customers, cfg.n_customers)
    comp_c = np.argpartition(rng.random((cfg.n_days, cfg.n_customers)), n_c - 1, axis=1)[:, :n_c] if n_c else np.zeros((cfg.n_days, 0), int)
    event_day = np.repeat(np.arange(cfg.n_days), n_c)
    event_cust = comp_c.ravel().astype(np.int64)
    span = cfg.n_days + cfg.customer_days + 1
    key = tx["CUSTOMER_ID"].to_numpy().astype(np.int64) * span + days
    order = np.argsort(key, kind="stable")
    event, pos = _window_members(key[order], event_cust * span + event_day, event_cust * span + event_day + cfg.customer_days)
    group_day = event_day[event]
    shuffle = np.lexsort((rng.random(len(pos)), group_day))
    group_sorted = group_day[shuffle]
    group_size = np.bincount(group_day, minlength=cfg.n_days)
    first = np.searchsorted(group_sorted, group_sorted, side="left")
    rank = np.arange(len(group_sorted)) - first
    chosen = order[pos[shuffle][rank < np.floor(group_size[group_sorted] * cfg.customer_fraud_share)]]
    times = np.bincount(chosen, minlength=len(tx))
    amount = np.round(amount * cfg.customer_amount_factor ** times, 2)
    s3 = times > 0
    fraud[s3], scenario[s3] = 1, 3

    tx = tx.assign(TX_AMOUNT=amount, TX_FRAUD=fraud, TX_FRAUD_SCENARIO=scenario)
    return tx


def simulate(cfg: SimulatorConfig | None = None) -> pd.DataFrame:
    """Generate a labelled transaction table (columns named as in the handbook)."""
    cfg = cfg or SimulatorConfig()
    rng = np.random.default_rng(cfg.seed)
    customers = customer_profiles(cfg, rng)
    terminals = terminal_profiles(cfg, rng)
    indptr, terminal_idx = reachable_terminals(customers, terminals, cfg.radius)
    tx = _transactions(cfg, customers, indptr, terminal_idx, rng)
    return add_frauds(tx, cfg, rng)


def load_sample(cfg: SimulatorConfig | None = None, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The simulated table, read from ``cache_dir/finance_sim_<hash>.parquet`` when already generated."""
    cfg = cfg or SimulatorConfig()
    label = f"simulating transactions ({cfg.n_customers} customers, {cfg.n_days} days)"
    if cache_dir is None:
        with phase(label):
            return simulate(cfg)
    path = Path(cache_dir).expanduser() / f"finance_sim_{cfg.key()}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    with phase(label):
        frame = simulate(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return frame


def summary(frame: pd.DataFrame) -> dict[str, float]:
    """Headline statistics to compare with the handbook (size, fraud rate, scenario shares)."""
    n_fraud = int(frame["TX_FRAUD"].sum())
    shares = frame.loc[frame["TX_FRAUD"] == 1, "TX_FRAUD_SCENARIO"].value_counts(normalize=True)
    return {
        "n_transactions": len(frame),
        "n_frauds": n_fraud,
        "fraud_rate": n_fraud / max(len(frame), 1),
        **{f"scenario_{k}_share": float(shares.get(k, 0.0)) for k in (1, 2, 3)},
    }
