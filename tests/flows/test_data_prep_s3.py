"""data_prep with a saved DataSource block on a real S3 API (moto's server, credentials
checked): every block field reaches the reads; a refused secret leaves the outputs untouched."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from blocks import DataSource
from flows.cli import main
from flows.data_prep import DataPrepParams, data_prep
from tasks.data.ingest import SourceAccessError
from tasks.data.publish import LABELS, features_uri
from tests.s3_server import S3Server

pytestmark = [pytest.mark.flows, pytest.mark.integration]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _table(root: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(root / name)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_data_prep_reads_s3_through_a_saved_block(
    credit_spec,
    s3_server: S3Server,
    s3_raw: str,
    tiny_features: Path,
    tmp_path: Path,
    no_ambient_aws,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # every field of the block is set here; one added later must be shown to reach the reads
    assert set(DataSource.model_fields) == {
        "uri",
        "format",
        "storage_options",
        "secret",
        "secret_field",
    }
    owner = s3_server.owner
    DataSource(
        uri=s3_raw,
        format="parquet",
        # s3fs's aliases for key and secret: the secret goes where secret_field says
        storage_options={"endpoint_url": s3_server.endpoint, "username": owner.key},
        secret=owner.secret,
        secret_field="password",
    ).save("s3-lake", overwrite=True)
    out = tmp_path / "out"
    result = data_prep(
        DataPrepParams(
            data_source_block="s3-lake",
            output_uri=str(out),
            dask_cluster_block="threads",
            materialize=False,
            max_reject_rate=0.3,  # small files: at least 4 defective rows in each
        )
    )
    assert result.rows_rejected > 0
    for name in (*credit_spec.feature_tables, LABELS):
        expected = _table(tiny_features, name)  # the same raw files read from local disk
        pd.testing.assert_frame_equal(_table(Path(features_uri(str(out))), name), expected)

    # a wrong secret: refused before anything is staged or published
    before = _tree(out)
    DataSource(
        uri=s3_raw,
        storage_options={"endpoint_url": s3_server.endpoint, "key": owner.key},
        secret="not-the-secret",
    ).save("s3-lake-wrong", overwrite=True)
    with pytest.raises(
        SourceAccessError,
        match=rf"^{re.escape(s3_raw)}/customers: credentials refused by the store",
    ):
        data_prep(
            DataPrepParams(
                data_source_block="s3-lake-wrong",
                output_uri=str(out),
                dask_cluster_block="threads",
                materialize=False,
            )
        )
    assert _tree(out) == before  # nothing staged or published
    shown = capsys.readouterr()
    assert owner.secret not in shown.out + shown.err + caplog.text

    # `mlops datasets init --from s3://... --data-source BLOCK` reads with the block's options
    spec_path = tmp_path / "shop" / "dataset.yaml"
    sample = f"{s3_raw}/applications/part-00000.parquet"
    main(
        [
            "datasets",
            "init",
            "shop",
            "--from",
            sample,
            "--data-source",
            "s3-lake",
            "--out",
            str(spec_path),
        ]
    )
    raw = yaml.safe_load(spec_path.read_text())
    assert raw["source"] == {"uri": s3_raw, "format": "parquet"}
    assert set(raw["tables"]["applications"]["columns"]) == set(
        credit_spec.tables["applications"].columns
    )
