"""Synthetic consumer credit-risk data: customers, card transactions and loan applications.

A latent risk trait per customer drives what can be observed (missed payments, declines, risky
merchants, spending against income) and the label, so the label is learnable from the features,
interactions included. Deterministic by seed: chunk i always draws from `default_rng([seed, i])`.
Data is written chunk by chunk (one Parquet file per table per chunk, customers of a chunk kept
together), so any size is generated in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import fsspec
import numpy as np
import pandas as pd

from features.credit_risk.vocabulary import HOME, MERCHANTS, PURPOSES, REGIONS, RISKY_MERCHANTS
from tasks.progress import progress
from tasks.specs.dataset_spec import GenerateOptions

TXN_PER_CUSTOMER = 40
APPS_PER_CUSTOMER = 0.8
DRIFTABLE = ("annual_income", "amount", "loan_amount", "missed_payments_12m", "is_online")
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Drift:
    """From `start` on: chosen columns shift (covariate drift); `concept` changes the label rule."""

    start: date
    covariate: tuple[str, ...] = ()
    concept: bool = False
    strength: float = 1.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.covariate if c not in DRIFTABLE]
        if unknown:
            raise ValueError(
                f"covariate drift: unknown column(s) {unknown}; choose from {DRIFTABLE}"
            )


@dataclass(frozen=True)
class GeneratorConfig:
    rows: int = 100_000  # card transactions; customers = rows / 40, applications ~ 0.8 per customer
    seed: int = 0
    start: date = date(2025, 1, 1)
    end: date = date(2026, 6, 30)
    chunk_rows: int = 1_000_000
    dirty_rate: float = (
        0.0  # share of rows given a realistic defect (negative amount, future date...)
    )
    drift: Drift | None = None


def generate(out_uri: str, config: GeneratorConfig) -> dict[str, int]:
    """Write customers/, transactions/, applications/ under `out_uri`; returns rows per table."""
    if config.rows < 1_000:
        raise ValueError(f"rows must be at least 1000, got {config.rows}")
    if config.end <= config.start:
        raise ValueError("end must be after start")
    customers = max(25, config.rows // TXN_PER_CUSTOMER)
    chunk_customers = max(25, config.chunk_rows // TXN_PER_CUSTOMER)
    n_chunks = -(-customers // chunk_customers)
    fs, root = fsspec.core.url_to_fs(out_uri)
    totals = {"customers": 0, "transactions": 0, "applications": 0}
    txn_done = 0
    with progress(f"credit_risk: generating {config.rows:,} transactions", n_chunks) as bar:
        for i in range(n_chunks):
            first = i * chunk_customers
            count = min(chunk_customers, customers - first)
            txn_target = round(config.rows * (first + count) / customers) - txn_done
            tables = _chunk(config, i, first, count, txn_target, txn_offset=txn_done)
            txn_done += txn_target
            for name, frame in tables.items():
                fs.makedirs(f"{root}/{name}", exist_ok=True)
                with fs.open(f"{root}/{name}/part-{i:05d}.parquet", "wb") as fh:
                    frame.to_parquet(fh, index=False)
                totals[name] += len(frame)
            bar.advance()
    return totals


def _chunk(
    config: GeneratorConfig, index: int, first: int, count: int, n_txn: int, txn_offset: int
) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng([config.seed, index])
    start_ns = pd.Timestamp(config.start, tz="UTC").value
    end_ns = pd.Timestamp(config.end, tz="UTC").value
    drift = config.drift
    drift_ns = pd.Timestamp(drift.start, tz="UTC").value if drift else None
    k = drift.strength if drift else 0.0

    def drifted(column: str, ts: np.ndarray) -> np.ndarray:
        if drift is None or column not in drift.covariate:
            return np.zeros(len(ts), dtype=bool)
        return ts >= drift_ns

    # customers and their latent traits
    ids = np.arange(first + 1, first + count + 1, dtype="int64")
    risk = rng.normal(0.0, 1.0, count)
    region = rng.choice(len(REGIONS), count, p=[0.25, 0.2, 0.2, 0.2, 0.15])
    region_income = np.array([1.0, 0.85, 1.05, 1.15, 0.95])[region]
    income = np.exp(rng.normal(np.log(55_000), 0.45, count) - 0.12 * risk) * region_income
    age = np.clip(rng.normal(42, 13, count), 18, 85).astype("int64")
    employment = np.minimum(age - 18, rng.exponential(7.0, count) * np.exp(-0.2 * risk)).round(1)
    signup = rng.integers(start_ns - 3 * 365 * DAY_NS, end_ns - 120 * DAY_NS, count)
    income = np.where(drifted("annual_income", signup), income * (1 - 0.35 * k), income)
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_ts": pd.to_datetime(signup, utc=True),
            "region": np.array(REGIONS, dtype=object)[region],
            "home_ownership": np.array(HOME, dtype=object)[
                rng.choice(3, count, p=[0.4, 0.25, 0.35])
            ],
            "annual_income": income.round(2),
            "age": age,
            "employment_years": employment,
        }
    )

    # card transactions, customers of this chunk only
    activity = rng.gamma(2.0, 1.0, count)
    # a customer's transactions spread over the days it is a customer, at a rate set by its
    # activity alone: a customer's trailing counts and sums mean the same at any time
    active_days = (end_ns - np.maximum(signup, start_ns)) / DAY_NS
    weight = activity * active_days
    owner = rng.choice(count, n_txn, p=weight / weight.sum())
    owner.sort()
    t0 = np.maximum(signup, start_ns)[owner]
    ts = t0 + (rng.random(n_txn) * (end_ns - t0)).astype("int64")
    spend = income[owner] / 52_000 * 45 * np.exp(0.25 * risk[owner])
    amount = np.exp(rng.normal(np.log(spend), 0.8))
    amount = np.where(drifted("amount", ts), amount * (1 + 0.8 * k), amount)
    risky_p = np.clip(0.04 + 0.05 * np.maximum(risk[owner], 0), 0, 0.6)
    safe = len(MERCHANTS) - len(RISKY_MERCHANTS)
    merchant = np.where(
        rng.random(n_txn) < risky_p,
        safe + rng.choice(len(RISKY_MERCHANTS), n_txn),
        rng.choice(safe, n_txn),
    )
    online_p = np.where(drifted("is_online", ts), 0.8, 0.35)
    decline_p = 1 / (1 + np.exp(-(-3.6 + 0.7 * risk[owner])))
    transactions = pd.DataFrame(
        {
            "txn_id": np.arange(txn_offset + 1, txn_offset + n_txn + 1, dtype="int64"),
            "customer_id": ids[owner],
            "event_ts": pd.to_datetime(ts, utc=True),
            "amount": amount.round(2),
            "merchant_category": np.array(MERCHANTS, dtype=object)[merchant],
            "is_online": rng.random(n_txn) < online_p,
            "declined": rng.random(n_txn) < decline_p,
        }
    )

    # loan applications and the label
    n_apps = rng.poisson(APPS_PER_CUSTOMER, count)
    applicant = np.repeat(np.arange(count), n_apps)
    n = len(applicant)
    # an application sees whole trailing windows (90 days, the longest), as served traffic does
    app_start = np.maximum(signup[applicant], start_ns) + 90 * DAY_NS
    app_ts = app_start + (rng.random(n) * np.maximum(end_ns - app_start, DAY_NS)).astype("int64")
    loan = np.exp(rng.normal(np.log(income[applicant] * 0.25), 0.6))
    loan = np.where(drifted("loan_amount", app_ts), loan * (1 + 0.6 * k), loan)
    missed = rng.poisson(np.exp(-0.8 + 0.8 * risk[applicant]))
    if drifted("missed_payments_12m", app_ts).any():  # own stream: drift leaves other draws alone
        extra = np.random.default_rng([config.seed, index, 1]).poisson(1.5 * k, n)
        missed = np.where(drifted("missed_payments_12m", app_ts), missed + extra, missed)
    term = rng.choice([12, 24, 36, 60], n)
    young = (age[applicant] < 28).astype(float)
    lti = loan / income[applicant]
    logit = (
        -3.4
        + 0.9 * risk[applicant]
        + 0.35 * np.minimum(missed, 6)
        + 1.6 * lti
        + 1.4 * young * (lti > 0.35)
        - 0.03 * employment[applicant]
        + np.array([0.0, 0.25, -0.1, -0.2, 0.1])[region[applicant]]
    )
    if drift is not None and drift.concept:
        after = app_ts >= drift_ns
        concept = -3.4 - 0.9 * risk[applicant] + 2.5 * (term == 60) + 0.8 * (missed == 0)
        logit = np.where(after, (1 - k) * logit + k * concept, logit)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    applications = pd.DataFrame(
        {
            "application_id": ids[applicant] * 100 + _rank_within(applicant),
            "customer_id": ids[applicant],
            "application_ts": pd.to_datetime(app_ts, utc=True),
            "loan_amount": loan.round(2),
            "term_months": term.astype("int64"),
            "purpose": np.array(PURPOSES, dtype=object)[rng.choice(len(PURPOSES), n)],
            "missed_payments_12m": missed.astype("int64"),
            "defaulted_90d": label,
        }
    )
    if config.dirty_rate > 0:
        transactions = _dirty(transactions, rng, config.dirty_rate, "amount", "event_ts")
        applications = _dirty(applications, rng, config.dirty_rate, "loan_amount", "application_ts")
    return {"customers": customers, "transactions": transactions, "applications": applications}


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... within each run of equal (sorted) group values."""
    if len(groups) == 0:
        return groups.astype("int64")
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _dirty(
    frame: pd.DataFrame, rng: np.random.Generator, rate: float, value: str, ts: str
) -> pd.DataFrame:
    """Inject real feeds' defects: negative values, future dates, missing values, repeated rows."""
    frame = frame.copy()
    n = len(frame)
    picks = rng.choice(n, size=min(n, max(4, int(n * rate))), replace=False)
    kinds = np.arange(len(picks)) % 4
    frame[value] = frame[value].astype("float64")
    frame.loc[frame.index[picks[kinds == 0]], value] *= -1
    frame.loc[frame.index[picks[kinds == 1]], ts] = pd.Timestamp("2099-01-01", tz="UTC")
    frame.loc[frame.index[picks[kinds == 2]], value] = np.nan
    repeats = frame.iloc[picks[kinds == 3]]
    return pd.concat([frame, repeats], ignore_index=True)


def generate_demo(out_uri: str, options: GenerateOptions) -> dict[str, int]:
    """The dataset spec's generator entry point."""
    drift = None
    if options.drift_start is not None:
        drift = Drift(options.drift_start, options.covariate_drift, options.concept_drift)
    config = GeneratorConfig(
        rows=options.rows,
        seed=options.seed,
        start=options.start,
        end=options.end,
        chunk_rows=options.chunk_rows,
        dirty_rate=options.dirty_rate,
        drift=drift,
    )
    return generate(out_uri, config)
