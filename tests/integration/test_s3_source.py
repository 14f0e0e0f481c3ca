"""The DataSource block's storage options and secret reach every read of the raw source, on a
real S3 API (moto's server on 127.0.0.1, checking credentials against IAM)."""

from __future__ import annotations

import re
from pathlib import Path

import dask
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from blocks import DataSource
from tasks.data.ingest import SourceAccessError
from tasks.data.preprocess import build_features, plan_sources
from tasks.data.publish import LABELS
from tasks.data.raw_checks import DataValidationError
from tests.conftest import NOW
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


def _block(server: S3Server, uri: str, key: str, secret: str | None) -> DataSource:
    options = {"endpoint_url": server.endpoint, "key": key}
    return DataSource(uri=uri, storage_options=options, secret=secret)


def _table(root: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(root / "features" / name)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_block_options_reach_every_read_on_dask_workers(
    credit_spec, tiny_raw: Path, s3_server: S3Server, s3_raw: str, tmp_path: Path, no_ambient_aws
) -> None:
    owner = s3_server.owner
    access = _block(s3_server, s3_raw, owner.key, owner.secret).access()
    with dask.config.set(scheduler="sync"):
        local_plan = plan_sources(credit_spec, str(tiny_raw))
        local = build_features(credit_spec, local_plan, str(tmp_path / "local"), NOW)
    # worker processes: the options and the secret travel with the tasks (key scans, reads)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        plan = plan_sources(credit_spec, s3_raw, access)
        remote = build_features(credit_spec, plan, str(tmp_path / "s3"), NOW, access)

    assert plan.files["customers"][0].startswith(f"{s3_raw}/customers/part-")
    assert {t: len(f) for t, f in plan.files.items()} == {
        t: len(f) for t, f in local_plan.files.items()
    }
    assert plan.copartitioned == local_plan.copartitioned
    for name, dups in plan.duplicate_keys.items():
        pd.testing.assert_frame_equal(dups, local_plan.duplicate_keys[name])
    assert remote.tables == local.tables and remote.rows_rejected > 0
    for name in (*credit_spec.feature_tables, LABELS):
        pd.testing.assert_frame_equal(
            _table(tmp_path / "s3", name), _table(tmp_path / "local", name)
        )
    assert owner.secret not in repr(access) and owner.secret not in repr(plan)


@pytest.mark.parametrize("who", ["wrong secret", "no S3 permission", "unknown key", "no secret"])
def test_refused_credentials_fail_naming_the_uri(
    who: str, credit_spec, s3_server: S3Server, s3_raw: str, no_ambient_aws
) -> None:
    owner, outsider = s3_server.owner, s3_server.outsider
    key, secret = {
        "wrong secret": (owner.key, "not-the-secret"),
        "no S3 permission": (outsider.key, outsider.secret),
        "unknown key": ("AKIAUNKNOWN000000000", owner.secret),
        "no secret": (None, None),  # no credentials anywhere: botocore's own error
    }[who]
    block = (
        _block(s3_server, s3_raw, key, secret)
        if key
        else DataSource(uri=s3_raw, storage_options={"endpoint_url": s3_server.endpoint})
    )
    with pytest.raises(SourceAccessError) as refused:
        plan_sources(credit_spec, s3_raw, block.access())
    message = str(refused.value)
    assert re.match(rf"{re.escape(s3_raw)}/customers: credentials refused by the store", message)
    assert "storage_options, secret and secret_field" in message
    assert owner.secret not in message and outsider.secret not in message


def test_missing_bucket_names_the_uri(credit_spec, s3_server: S3Server, no_ambient_aws) -> None:
    owner = s3_server.owner
    access = _block(s3_server, "s3://no-such-bucket/raw", owner.key, owner.secret).access()
    with pytest.raises(
        DataValidationError, match=r"^s3://no-such-bucket/raw/customers: path does not exist"
    ):
        plan_sources(credit_spec, "s3://no-such-bucket/raw", access)


def test_validated_reads_use_the_access_they_are_given(
    credit_spec, s3_server: S3Server, s3_raw: str, tmp_path: Path, no_ambient_aws
) -> None:
    """build_features reads the raw files again, in Dask tasks: with the credentials passed to
    it, not those the plan was made with."""
    owner, outsider = s3_server.owner, s3_server.outsider
    with dask.config.set(scheduler="sync"):
        plan = plan_sources(
            credit_spec, s3_raw, _block(s3_server, s3_raw, owner.key, owner.secret).access()
        )
        denied = _block(s3_server, s3_raw, outsider.key, outsider.secret).access()
        with pytest.raises(
            SourceAccessError,
            match=rf"^{re.escape(s3_raw)}/\w+/part-\d+\.parquet: credentials refused by the store",
        ):
            build_features(credit_spec, plan, str(tmp_path / "out"), NOW, denied)
    assert not list((tmp_path / "out").rglob("*.parquet"))
