"""Data-quality guards: the reject rate, non-finite numbers, the run against the last one."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

from tasks.data.preprocess import build_features, plan_sources
from tasks.data.quality import (
    DataRejectedError,
    Limit,
    QualityPolicy,
    check_rows,
    compare,
    enforce,
    quality_checks,
    summarize,
)
from tasks.data.raw_checks import REASON, build_schema, validate_partition
from tests.unit.test_validate import TABLE, frame

pytestmark = pytest.mark.unit
NOW = pd.Timestamp("2026-11-29", tz="UTC")


def _rewrite(raw: Path, table: str, change) -> None:
    for part in sorted((raw / table).iterdir()):
        change(pd.read_parquet(part)).to_parquet(part, index=False)


def _build(spec, raw: Path, out: Path):
    with dask.config.set(scheduler="sync"):
        return build_features(spec, plan_sources(spec, str(raw)), str(out), NOW)


@pytest.fixture
def raw(tiny_raw: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(tiny_raw, copy)
    return copy


def test_infinite_amounts_are_quarantined_row_by_row() -> None:
    result = validate_partition(
        frame(amount=[np.inf, -np.inf, 2.0, np.nan]), TABLE, build_schema(TABLE, NOW), "f"
    )
    reasons = result.quarantine[REASON].tolist()
    assert reasons[0] == "amount: finite" and reasons[2] == "amount: not_null"
    assert reasons[1] in ("amount: finite", "amount: ge(min_value=0)")  # -inf breaks both
    assert result.clean["amount"].tolist() == [2.0]


def test_allow_inf_lets_a_column_hold_infinities() -> None:
    table = TABLE.model_copy(deep=True)
    table.columns["amount"].__dict__["allow_inf"] = True
    table.columns["amount"].__dict__["checks"] = []
    schema = build_schema(table, NOW)
    result = validate_partition(frame(amount=[np.inf, 1.0, 2.0, 3.0]), table, schema, "f")
    assert result.quarantine.empty and np.isinf(result.clean["amount"].iloc[0])


def test_inf_and_minus_inf_in_a_summed_column_never_reach_the_features(
    credit_spec, raw, tmp_path
) -> None:
    def poison(tx: pd.DataFrame) -> pd.DataFrame:
        tx = tx.copy()
        tx.loc[tx.index[:3], "amount"] = np.inf
        tx.loc[tx.index[3:5], "amount"] = -np.inf
        return tx

    _rewrite(raw, "transactions", poison)
    report = _build(credit_spec, raw, tmp_path / "out")
    assert report.tables["transactions"].rejected["amount: finite"] >= 10  # 3 per file of 5
    windows = pd.read_parquet(tmp_path / "out" / "features" / "transaction_windows")
    sums = windows[["amount_sum_7d", "amount_sum_30d", "amount_sum_90d", "amount_mean_30d"]]
    assert np.isfinite(sums.fillna(0).to_numpy()).all()


def test_an_all_null_key_column_on_one_table_fails_naming_table_rate_and_reasons(
    credit_spec, raw, tmp_path
) -> None:
    _rewrite(raw, "customers", lambda c: c.assign(signup_ts=pd.NaT))
    report = _build(credit_spec, raw, tmp_path / "out")
    checks = quality_checks(credit_spec, report, str(tmp_path / "out"), None, QualityPolicy())
    with pytest.raises(DataRejectedError) as caught:
        enforce(checks)
    message = str(caught.value)
    assert "table 'customers': reject_rate: 100.0% of 125 rows rejected" in message
    assert "(max_reject_rate 5.0%); top reasons: signup_ts: not_null: 125" in message
    assert "nothing published" in message
    # the quarantine holds every rejected row, for the user to see
    quarantined = pd.read_parquet(tmp_path / "out" / "quarantine" / "customers")
    assert len(quarantined) == 125


def _ratio_by_zero(customers: pd.DataFrame) -> pd.DataFrame:
    """A transform with a division by zero: customers with no employment years."""
    years = customers["employment_years"].astype("float64").fillna(0.0)
    return pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype("int64"),
            "event_timestamp": customers["signup_ts"],
            "income_per_year_employed": customers["annual_income"].astype("float64") / years,
        }
    )


def _with_division(spec, policy: str):
    copy = spec.model_copy(deep=True)
    profile = copy.feature_tables["customer_profile"]
    profile.__dict__["transform"] = "tests.unit.test_quality:_ratio_by_zero"
    profile.__dict__["categorical"] = []
    profile.__dict__["non_finite"] = policy
    return copy


def test_a_division_by_zero_in_a_transform_fails_or_is_written_as_null(
    credit_spec, raw, tmp_path
) -> None:
    _rewrite(raw, "customers", lambda c: c.assign(employment_years=c["employment_years"] * 0))
    failing = _with_division(credit_spec, "fail")
    report = _build(failing, raw, tmp_path / "a")
    # tiny files: 4 defective rows in each, far over the 5% reject rate; not this test's point
    checks = quality_checks(failing, report, str(tmp_path / "a"), None, QualityPolicy(), False, 1.0)
    with pytest.raises(
        DataRejectedError,
        match=r"table 'customer_profile' feature "
        r"'income_per_year_employed': non_finite: 125 infinite value\(s\)",
    ):
        enforce(checks)

    nulls = _with_division(credit_spec, "null")
    report = _build(nulls, raw, tmp_path / "b")
    checks = quality_checks(nulls, report, str(tmp_path / "b"), None, QualityPolicy(), False, 1.0)
    enforce(checks)  # a warning, not a failure
    (warning,) = [c for c in checks if c.check == "non_finite"]
    assert warning.action == "warn" and "written as missing" in warning.detail
    written = pd.read_parquet(tmp_path / "b" / "features" / "customer_profile")
    assert written["income_per_year_employed"].isna().all()


@pytest.fixture(scope="module")
def reference(credit_spec, tiny_raw, tmp_path_factory) -> dict:
    """The summary of a clean run: the next run's reference."""
    with dask.config.set(scheduler="sync"):
        report = build_features(
            credit_spec,
            plan_sources(credit_spec, str(tiny_raw)),
            str(tmp_path_factory.mktemp("ref")),
            NOW,
        )
    return summarize(report)


def test_the_first_run_passes_and_says_so(reference) -> None:
    (check,) = compare(None, reference, QualityPolicy())
    assert check.passed and "first run" in check.detail
    assert check_rows([check])[0]["result"] == "pass"


def test_the_same_data_again_passes_every_check(reference) -> None:
    checks = compare(reference, reference, QualityPolicy())
    assert checks and all(c.passed for c in checks)
    assert {c.check for c in checks} >= {"row_count", "null_rate", "mean", "range"}
    keys = frozenset({"customer_id", "event_timestamp"})  # new ids and times are expected
    checks = compare(reference, reference, QualityPolicy(), identifiers=keys)
    assert not {c.feature for c in checks} & keys


def test_halving_the_rows_fails_against_the_previous_snapshot(
    credit_spec, reference, raw, tmp_path
) -> None:
    for table in ("customers", "transactions", "applications"):
        files = sorted((raw / table).iterdir())
        for part in files[: len(files) // 2 + 1]:
            part.unlink()  # 2 of 5 files left: 60% fewer rows
    current = summarize(_build(credit_spec, raw, tmp_path / "out"))
    checks = compare(reference, current, QualityPolicy())
    rows = check_rows(checks)
    assert rows[0]["result"] == "FAIL" and rows[0]["check"] == "row_count"  # failures first
    with pytest.raises(DataRejectedError, match=r"table 'customer_profile': row_count: 125 -> 50"):
        enforce(checks)
    lenient = QualityPolicy(row_count_drop=Limit(limit=0.7, action="fail"))
    enforce(compare(reference, current, lenient))


def test_a_new_category_warns_by_default_and_fails_when_the_policy_says(
    credit_spec, reference, raw, tmp_path
) -> None:
    _rewrite(
        raw,
        "customers",
        lambda c: c.assign(home_ownership=c["home_ownership"].where(c.index % 5 != 0, "council")),
    )  # not one of the generator's: encoded -1
    current = summarize(_build(credit_spec, raw, tmp_path / "out"))
    checks = compare(reference, current, QualityPolicy())
    (new,) = [c for c in checks if c.check == "new_categories" and not c.passed]
    assert (new.table, new.feature, new.action) == (
        "customer_profile",
        "home_ownership_code",
        "warn",
    )
    assert "['-1']" in new.detail
    enforce(checks)  # a warning only
    with pytest.raises(DataRejectedError, match=r"home_ownership_code': new_categories"):
        enforce(compare(reference, current, QualityPolicy(new_categories="fail")))


def test_an_empty_table_never_replaces_a_full_one_unless_allowed(reference) -> None:
    empty = {**reference, "customer_profile": {**reference["customer_profile"], "rows": 0}}
    with pytest.raises(DataRejectedError, match=r"'customer_profile': empty_table: 0 rows"):
        enforce(
            compare(reference, empty, QualityPolicy(row_count_drop=Limit(limit=1, action="off")))
        )
    off = QualityPolicy(row_count_drop=Limit(limit=1, action="off"))
    enforce(compare(reference, empty, off, allow_empty=True))
