from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.credit_risk.generator import generate_demo
from features.rides.generator import generate
from flows.cli import main
from tasks.data.ingest import read_file
from tasks.data.raw_checks import build_schema, validate_partition
from tasks.specs.dataset_spec import GenerateOptions, TableSpec
from tasks.specs.datasets import get_dataset

pytestmark = pytest.mark.unit
NOW = pd.Timestamp("2026-11-29", tz="UTC")


def _table_roundtrip(spec_path: Path, sample: Path, fmt: str = "parquet") -> TableSpec:
    """The inferred table loads as a TableSpec and its own sample passes validation."""
    raw = yaml.safe_load(spec_path.read_text())
    ((_, entry),) = raw["tables"].items()
    table = TableSpec.model_validate(entry)
    result = validate_partition(
        read_file(str(sample), fmt), table, build_schema(table, NOW), str(sample)
    )
    assert result.rejected == {} and len(result.clean) == result.rows_in
    return table


def test_init_on_the_credit_risk_sample(tmp_path: Path, capsys) -> None:
    generate_demo(str(tmp_path / "raw"), GenerateOptions(rows=5_000, seed=2))
    sample = next((tmp_path / "raw" / "applications").glob("*.parquet"))
    out = tmp_path / "credit" / "dataset.yaml"
    main(["datasets", "init", "credit_copy", "--from", str(sample), "--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    table = _table_roundtrip(out, sample)
    demo = get_dataset("credit_risk").tables["applications"]
    assert {c: s.dtype for c, s in table.columns.items()} == {
        c: s.dtype for c, s in demo.columns.items()
    }
    assert table.timestamp == "application_ts" and table.primary_key == ["application_id"]
    raw = yaml.safe_load(out.read_text())
    assert raw["label"]["column"] == "defaulted_90d"  # the only 0/1 column
    assert raw["entities"] == {"application": {"join_keys": ["application_id"]}}
    with pytest.raises(SystemExit) as exists:
        main(["datasets", "init", "credit_copy", "--from", str(sample), "--out", str(out)])
    assert exists.value.code == 2 and "exists; not overwriting" in capsys.readouterr().err


def test_init_on_the_rides_sample_with_mixed_offsets(tmp_path: Path) -> None:
    generate(
        str(tmp_path / "raw"),
        GenerateOptions(rows=1_000, seed=1, start=date(2026, 5, 1), end=date(2026, 6, 1)),
    )
    frame = pd.read_parquet(tmp_path / "raw" / "orders")
    (tmp_path / "csv" / "orders").mkdir(parents=True)
    sample = tmp_path / "csv" / "orders" / "orders.csv"
    frame.to_csv(sample, index=False)
    out = tmp_path / "rides" / "dataset.yaml"
    main(["datasets", "init", "rides_copy", "--from", str(sample), "--out", str(out)])
    table = _table_roundtrip(out, sample, "csv")
    assert table.columns["event_timestamp"].dtype == "datetime"  # text with offsets, parsed
    assert table.columns["order_is_success"].checks[0].args == {"min_value": 0.0, "max_value": 1.0}
    raw = yaml.safe_load(out.read_text())
    assert raw["source"] == {"uri": str(tmp_path / "csv"), "format": "csv"}
