from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import dask
import fsspec
import pandas as pd
import pytest
from fsspec.implementations.local import LocalFileSystem
from pydantic import SecretStr

from blocks import DataSource
from tasks.data.ingest import SourceAccess, SourceAccessError, list_files, read_file
from tasks.data.preprocess import build_features, plan_sources
from tasks.data.raw_checks import DataValidationError
from tests.conftest import NOW

pytestmark = pytest.mark.unit


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"nowhere: path does not exist"):
        list_files(str(tmp_path / "nowhere"), "parquet")


def test_folder_without_files_of_the_format(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataValidationError, match=r"no .parquet files found"):
        list_files(str(tmp_path), "parquet")


def test_lists_recursively_sorted_and_single_file(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.csv", "1.csv"):
        (tmp_path / name).write_text("x\n1\n")
    assert [Path(f).name for f in list_files(str(tmp_path), "csv")] == ["1.csv", "2.csv"]
    assert list_files(str(tmp_path / "1.csv"), "csv") == [str(tmp_path / "1.csv")]


def test_empty_and_unparseable_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match=r"empty.csv: file is empty"):
        read_file(str(empty), "csv")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    with pytest.raises(DataValidationError, match=r"header.csv: file is empty \(no rows\)"):
        read_file(str(header_only), "csv")
    garbage = tmp_path / "bad.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError, match=r"bad.parquet: cannot parse as parquet"):
        read_file(str(garbage), "parquet")


def test_reads_csv_and_parquet_columns(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    df.to_parquet(tmp_path / "t.parquet")
    df.to_csv(tmp_path / "t.csv", index=False)
    assert read_file(str(tmp_path / "t.parquet"), "parquet", columns=["a"]).columns.tolist() == [
        "a"
    ]
    pd.testing.assert_frame_equal(read_file(str(tmp_path / "t.csv"), "csv"), df)
    with pytest.raises(DataValidationError, match=r"t.csv: rule required_column"):
        read_file(str(tmp_path / "t.csv"), "csv", columns=["zz"])


class _Guarded(LocalFileSystem):
    """Local files behind a credential: opening the file system without it is refused."""

    protocol = "guarded"
    opened: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any) -> None:
        if options.get("token") != "s3cr3t" or options.get("region") != "eu":
            raise PermissionError("Forbidden")
        type(self).opened.append(options)
        super().__init__()


fsspec.register_implementation("guarded", _Guarded, clobber=True)


def test_the_secret_goes_into_the_option_secret_field_names() -> None:
    access = SourceAccess({"key": "id"}, SecretStr("pw"))
    assert access.fsspec_options() == {"key": "id", "secret": "pw"}
    assert "pw" not in repr(access)
    assert SourceAccess().fsspec_options() == {}
    gcs = SourceAccess({"project": "p"}, SecretStr("{...}"), secret_field="token")
    assert gcs.fsspec_options() == {"project": "p", "token": "{...}"}


def test_every_data_source_field_reaches_the_code() -> None:
    block = DataSource(
        uri="abfs://container/raw",
        format="csv",
        storage_options={"account_name": "acct", "anon": False},
        secret="k3y",
        secret_field="account_key",
    )
    # uri and format are the flow's (source_uri, the spec's format); the rest opens the store
    assert set(DataSource.model_fields) == {"uri", "format", *vars(block.access())}
    assert block.access().fsspec_options() == {
        "account_name": "acct",
        "anon": False,
        "account_key": "k3y",
    }
    assert "k3y" not in repr(block.access())


def test_options_and_secret_reach_every_read(credit_spec, tiny_raw: Path, tmp_path: Path) -> None:
    """Listing, key scans and validated reads (Dask tasks) all open the store with them."""
    access = SourceAccess(
        {"region": "eu", "skip_instance_cache": True}, SecretStr("s3cr3t"), secret_field="token"
    )
    uri = f"guarded://{tiny_raw}"
    _Guarded.opened.clear()
    with dask.config.set(scheduler="sync"):
        plan = plan_sources(credit_spec, uri, access)
        report = build_features(credit_spec, plan, str(tmp_path), NOW, access)
    files = sum(len(f) for f in plan.files.values())
    assert plan.files["customers"][0].startswith("guarded://")
    assert report.tables["customers"].rows_out > 0
    # one listing per table, one key scan and one validated read per file
    assert len(_Guarded.opened) == len(plan.files) + 2 * files
    # the secret under the default option name instead of the store's: refused
    with pytest.raises(SourceAccessError, match=r"^guarded://.*/customers: credentials refused"):
        plan_sources(credit_spec, uri, SourceAccess({"region": "eu"}, SecretStr("s3cr3t")))
    with pytest.raises(
        SourceAccessError, match=r"customers/part-00000.parquet: credentials refused"
    ):
        read_file(plan.files["customers"][0], "parquet")
