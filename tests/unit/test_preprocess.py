from __future__ import annotations

import shutil
from pathlib import Path

import dask
import pandas as pd
import pytest

from tasks.data.preprocess import build_features, plan_sources
from tasks.data.raw_checks import REASON, DataValidationError
from tests.conftest import NOW

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def _features(root: Path, table: str) -> pd.DataFrame:
    frame = pd.read_parquet(root / "features" / table)
    return frame.sort_values(list(frame.columns[:2])).reset_index(drop=True)


def test_counts_add_up_and_quarantine_holds_the_rejects(credit_spec, tiny_raw, tmp_path) -> None:
    plan = plan_sources(credit_spec, str(tiny_raw))
    assert plan.copartitioned == {
        "transactions.customer_id": True,
    }
    report = build_features(credit_spec, plan, str(tmp_path), NOW)
    tx = report.tables["transactions"]
    assert tx.rows_in == len(pd.read_parquet(tiny_raw / "transactions"))
    assert tx.rows_in == tx.rows_out + sum(tx.rejected.values())
    assert {r.split(": ")[1] for r in tx.rejected} >= {"duplicate_key", "not_null", "not_in_future"}
    quarantine = pd.read_parquet(tmp_path / "quarantine" / "transactions")
    assert quarantine[REASON].value_counts().to_dict() == tx.rejected
    labels = _features(tmp_path, "labels")
    assert labels.columns.tolist() == [  # keys, time, label, the application's request fields
        "customer_id",
        "event_timestamp",
        "defaulted_90d",
        "loan_amount",
        "term_months",
        "purpose",
        "missed_payments_12m",
    ]
    assert len(labels) == report.tables["applications"].rows_out
    assert report.features["transaction_windows"]["rows"].iloc[0] == len(
        _features(tmp_path, "transaction_windows")
    )


def test_input_not_partitioned_by_key_is_shuffled_to_the_same_result(
    credit_spec, tiny_raw, tmp_path
) -> None:
    """Files mixing customers take the shuffle / broadcast path; results must not change."""
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_raw, mixed)
    for table in ("transactions", "applications", "customers"):
        frame = pd.read_parquet(tiny_raw / table).sample(frac=1.0, random_state=0)
        shutil.rmtree(mixed / table)
        (mixed / table).mkdir()
        for i, part in enumerate([frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2 :]]):
            part.to_parquet(mixed / table / f"part-{i}.parquet", index=False)

    plan = plan_sources(credit_spec, str(mixed))
    assert plan.copartitioned == {
        "transactions.customer_id": False,
    }
    build_features(credit_spec, plan, str(tmp_path / "a"), NOW)
    aligned = plan_sources(credit_spec, str(tiny_raw))
    assert all(aligned.copartitioned.values())
    build_features(credit_spec, aligned, str(tmp_path / "b"), NOW)
    for table in credit_spec.feature_tables:
        pd.testing.assert_frame_equal(
            _features(tmp_path / "a", table), _features(tmp_path / "b", table)
        )


def test_duplicate_key_across_files_is_found(credit_spec, tiny_raw, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    customers = pd.read_parquet(raw / "customers" / "part-00000.parquet")
    extra = pd.read_parquet(raw / "customers" / "part-00001.parquet")
    pd.concat([extra, customers.iloc[:1]]).to_parquet(
        raw / "customers" / "part-00001.parquet", index=False
    )
    report = build_features(
        credit_spec, plan_sources(credit_spec, str(raw)), str(tmp_path / "out"), NOW
    )
    assert report.tables["customers"].rejected == {"customer_id: duplicate_key": 2}


def test_null_rate_over_the_limit_fails_the_table(credit_spec, tiny_raw, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    for path in (raw / "customers").glob("*.parquet"):
        frame = pd.read_parquet(path)
        frame.loc[frame.index[::5], "home_ownership"] = None  # 20% > max_null_rate 0.05
        frame.to_parquet(path, index=False)
    with pytest.raises(
        DataValidationError, match=r"column 'home_ownership': rule max_null_rate\(0.05\)"
    ):
        build_features(credit_spec, plan_sources(credit_spec, str(raw)), str(tmp_path / "out"), NOW)


def test_csv_source_with_mixed_utc_offsets(credit_spec, tiny_raw, tmp_path) -> None:
    raw = tmp_path / "csv"
    for table in credit_spec.tables.values():
        frame = pd.read_parquet(tiny_raw / table.path)
        ts = frame[table.timestamp]
        shifted = ts.dt.tz_convert("Asia/Kolkata").astype(str)
        frame[table.timestamp] = ts.astype(str).where(frame.index % 2 == 0, shifted)
        (raw / table.path).mkdir(parents=True)
        frame.to_csv(raw / table.path / "part-0.csv", index=False)
    spec = credit_spec.model_copy(
        update={"source": credit_spec.source.model_copy(update={"format": "csv"})}
    )
    build_features(spec, plan_sources(spec, str(raw)), str(tmp_path / "a"), NOW)
    build_features(credit_spec, plan_sources(credit_spec, str(tiny_raw)), str(tmp_path / "b"), NOW)
    a, b = (
        _features(tmp_path / "a", "customer_profile"),
        _features(tmp_path / "b", "customer_profile"),
    )
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_wrong_dtype_in_one_file_fails_naming_it(credit_spec, tiny_raw, tmp_path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    path = raw / "applications" / "part-00002.parquet"
    frame = pd.read_parquet(path)
    frame["loan_amount"] = "a lot"
    frame.to_parquet(path, index=False)
    with pytest.raises(
        DataValidationError,
        match=r"applications/part-00002.parquet: column 'loan_amount': rule dtype",
    ):
        build_features(credit_spec, plan_sources(credit_spec, str(raw)), str(tmp_path / "out"), NOW)


def test_any_fsspec_uri_works_for_input_and_output(credit_spec, tiny_raw) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in tiny_raw.rglob("*.parquet"):
        fs.pipe(f"/lake/{path.relative_to(tiny_raw)}", path.read_bytes())
    plan = plan_sources(credit_spec, "memory://lake")
    assert plan.files["customers"][0].startswith("memory://")
    report = build_features(credit_spec, plan, "memory://out", NOW)
    with fs.open("/out/features/labels/part-00000.parquet", "rb") as fh:
        assert len(pd.read_parquet(fh)) > 0
    assert report.tables["customers"].rows_out > 0


def test_in_process_dask_workers_get_no_memory_limit() -> None:
    """A limit on in-process workers is measured against the whole process (here, the test
    session past 1.6 GiB paused the fault suite's data_prep for good)."""
    from blocks import DaskCluster

    assert DaskCluster(memory_limit="2GiB").local_kwargs()["memory_limit"] == "2GiB"
    assert DaskCluster(memory_limit="2GiB", processes=False).local_kwargs()["memory_limit"] == 0
