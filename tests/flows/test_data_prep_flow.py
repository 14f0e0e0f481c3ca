from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.data_prep import DataPrepParams, data_prep
from flows.generate_data import GenerateDataParams, generate_data
from tasks.data.publish import current_snapshot, features_uri
from tasks.data.quality import DataRejectedError
from tasks.data.raw_checks import DataValidationError

pytestmark = pytest.mark.flows


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flows") / "raw"
    rows = generate_data(
        GenerateDataParams(rows=6_000, seed=3, out_uri=str(root), chunk_rows=2_000, dirty_rate=0.01)
    )
    assert rows["transactions"] > 6_000  # dirty rows add repeats
    return root


async def _artifacts(key: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def _latest(key: str):
    """The newest artifact of `key` (the session's other data_prep runs write the same keys)."""
    import asyncio

    return max(asyncio.run(_artifacts(key)), key=lambda a: a.created)


def test_data_prep_builds_features_and_reports_them(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = data_prep(
        DataPrepParams(
            source_uri=str(raw),
            output_uri=str(out),
            dask_cluster_block="threads",
            feature_repo_block="tmp-feast",
            max_reject_rate=0.3,  # tiny files: at least 4 defective rows in each
        )
    )
    assert result.rows_rejected > 0
    assert set(result.rows_out) == {"customer_profile", "transaction_windows", "labels"}
    assert current_snapshot(str(out)) == result.snapshot
    features = Path(features_uri(str(out)))
    assert features.parent == out / "snapshots" / result.snapshot
    assert len(pd.read_parquet(features / "labels")) == result.rows_out["labels"]
    (quarantine_run,) = (out / "quarantine").iterdir()
    rejected = pd.concat(pd.read_parquet(p) for p in quarantine_run.iterdir())
    assert len(rejected) == result.rows_rejected
    assert [p.name for p in (out / "snapshots").iterdir()] == [result.snapshot]

    table = _latest("data-prep-credit-risk")
    assert table.type == "table" and "rows_rejected" in str(table.data)
    markdown = _latest("data-prep-credit-risk-features")
    assert "transaction_windows" in markdown.data and "amount_sum_30d" in markdown.data
    skew = _latest("feature-skew-credit-risk")
    assert "credit_risk_default_v1" in str(skew.data) and "mismatch_rate" in str(skew.data)

    # data_prep ended by materializing: the online store answers for a customer
    from blocks import FeatureRepo
    from tasks.feature_store.store import online_features, open_store, training_set
    from tasks.specs.datasets import get_dataset

    spec = get_dataset("credit_risk")
    store = open_store(FeatureRepo.load("tmp-feast").settings())
    online = online_features(store, spec, "credit_risk_default_v1", [{"customer_id": 1}])
    assert online["annual_income"].notna().all()
    # ... and the offline store gives a point-in-time training set for the labels
    labels = pd.read_parquet(features / "labels")
    train = training_set(store, spec, labels, "credit_risk_default_v1")
    assert len(train) == len(labels) and train["loan_to_income"].notna().all()


def test_failed_run_leaves_previous_tables_intact(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data_prep(
        DataPrepParams(
            source_uri=str(raw),
            output_uri=str(out),
            dask_cluster_block="threads",
            feature_repo_block="tmp-feast",
            max_reject_rate=0.3,  # tiny files: at least 4 defective rows in each
        )
    )
    before = _tree(out)

    broken = tmp_path / "broken"
    shutil.copytree(raw, broken)
    part = broken / "customers" / "part-00001.parquet"
    pd.read_parquet(part).drop(columns="region").to_parquet(part, index=False)
    with pytest.raises(
        DataValidationError,
        match=r"customers/part-00001.parquet: column 'region': rule required_column",
    ):
        data_prep(
            DataPrepParams(
                source_uri=str(broken),
                output_uri=str(out),
                dask_cluster_block="threads",
                max_reject_rate=0.3,
            )
        )
    assert _tree(out) == before  # the published snapshot, the pointer: all as they were


def test_missing_source_fails_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"nowhere/customers: path does not exist"):
        data_prep(
            DataPrepParams(
                source_uri=str(tmp_path / "nowhere"),
                output_uri=str(tmp_path / "o"),
                dask_cluster_block="threads",
            )
        )


def test_a_run_that_rejects_a_whole_table_publishes_nothing(raw: Path, tmp_path: Path) -> None:
    """Every customer with a null signup time: the run fails naming the table, the rate and
    the reasons, the quarantine is kept, nothing is published, and the checks are an
    artifact with the failure first."""
    out = tmp_path / "out"
    params = {
        "output_uri": str(out),
        "dask_cluster_block": "threads",
        "feature_repo_block": "tmp-feast",
        "max_reject_rate": 0.3,
    }
    first = data_prep(DataPrepParams(source_uri=str(raw), **params))
    assert first.quality_warnings == []  # the first run: nothing to compare, passes
    published = _tree(out / "snapshots")
    broken = tmp_path / "broken"
    shutil.copytree(raw, broken)
    for part in (broken / "customers").iterdir():
        pd.read_parquet(part).assign(signup_ts=pd.NaT).to_parquet(part, index=False)
    with pytest.raises(
        DataRejectedError,
        match=r"table 'customers': reject_rate: 100.0% of 150 rows rejected \(max_reject_rate "
        r"30.0%\); top reasons: signup_ts: not_null: 150",
    ):
        data_prep(DataPrepParams(source_uri=str(broken), **params))
    assert current_snapshot(str(out)) == first.snapshot
    assert _tree(out / "snapshots") == published  # nothing replaced, nothing left behind
    runs = sorted((out / "quarantine").iterdir())
    assert len(runs) == 2 and len(pd.read_parquet(runs[-1] / "customers")) == 150

    import asyncio

    checks = max(asyncio.run(_artifacts("data-prep-credit-risk-checks")), key=lambda a: a.created)
    rows = checks.data if isinstance(checks.data, list) else __import__("json").loads(checks.data)
    failing = [r["check"] for r in rows if r["result"] == "FAIL"]
    assert [r["result"] for r in rows[:3]] == ["FAIL"] * 3  # failures first
    assert sorted(failing) == ["empty_table", "reject_rate", "row_count"]
    assert "3 failing, nothing published" in (checks.description or "")


def test_the_cli_names_the_error_and_its_kind_without_a_traceback(tmp_path: Path, capfd) -> None:
    from flows.cli import EXIT_BAD_PARAMETERS, EXIT_DATA_REJECTED, main

    with pytest.raises(SystemExit) as bad:
        main(["run", "data-prep", "--param", "colour=red"])
    assert bad.value.code == EXIT_BAD_PARAMETERS
    with pytest.raises(SystemExit) as rejected:
        main(
            [
                "run",
                "data-prep",
                "--no-server",
                "--param",
                f"source_uri={tmp_path / 'nowhere'}",
                "--param",
                f"output_uri={tmp_path / 'out'}",
                "--param",
                "dask_cluster_block=threads",
            ]
        )
    assert rejected.value.code == EXIT_DATA_REJECTED
    shown = capfd.readouterr()
    assert "mlops: error: invalid parameters for DataPrepParams: colour" in shown.err
    assert "mlops: error: DataValidationError: " in shown.err
    assert "nowhere/customers: path does not exist" in shown.err
    assert "Traceback" not in shown.err + shown.out
