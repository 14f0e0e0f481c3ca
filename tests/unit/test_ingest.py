from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.data.ingest import list_files, read_file
from tasks.data.raw_checks import DataValidationError

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
