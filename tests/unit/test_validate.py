from __future__ import annotations

import pandas as pd
import pytest

from tasks.data.raw_checks import REASON, DataValidationError, build_schema, validate_partition
from tasks.specs.dataset_spec import TableSpec

pytestmark = pytest.mark.unit
NOW = pd.Timestamp("2026-11-29", tz="UTC")

TABLE = TableSpec.model_validate(
    {
        "path": "orders",
        "primary_key": ["order_id"],
        "timestamp": "ts",
        "columns": {
            "order_id": {"dtype": "int64"},
            "ts": {"dtype": "datetime", "checks": [{"check": "not_in_future"}]},
            "amount": {"dtype": "float64", "checks": [{"check": "ge", "args": {"min_value": 0}}]},
            "status": {
                "dtype": "string",
                "checks": [{"check": "isin", "args": {"allowed_values": ["ok", "late"]}}],
            },
            "score": {
                "dtype": "float64",
                "nullable": True,
                "checks": [{"check": "le", "args": {"max_value": 1}, "level": "table"}],
            },
        },
    }
)


def frame(**overrides: list) -> pd.DataFrame:
    data = {
        "order_id": [1, 2, 3, 4],
        "ts": ["2025-01-01T10:00:00+02:00", "2025-01-02T00:00:00Z", "2025-01-03", "2025-01-04"],
        "amount": [1.0, 2.5, 0.0, 9.0],
        "status": ["ok", "late", "ok", "ok"],
        "score": [0.1, None, 0.9, 0.5],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def run(df: pd.DataFrame, dups: pd.DataFrame | None = None):
    return validate_partition(df, TABLE, build_schema(TABLE, NOW), "orders/part-0.csv", dups)


def test_clean_frame_passes_and_is_coerced() -> None:
    result = run(frame())
    assert len(result.clean) == 4 and result.quarantine.empty
    assert str(result.clean["ts"].dtype) == "datetime64[ns, UTC]"
    # mixed UTC offsets are normalised to UTC
    assert result.clean["ts"].iloc[0] == pd.Timestamp("2025-01-01T08:00:00Z")
    assert result.nulls["score"] == 1


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("amount", [1.0, -2.0, 0.0, 9.0], "amount: ge(min_value=0)"),
        ("amount", [1.0, None, 0.0, 9.0], "amount: not_null"),
        ("status", ["ok", "lost", "ok", "ok"], "status: isin(allowed_values=['ok', 'late'])"),
        ("ts", ["2025-01-01", "2099-01-01", "2025-01-03", "2025-01-04"], "ts: not_in_future"),
    ],
)
def test_row_level_rule_quarantines_the_row_with_its_reason(column, values, reason) -> None:
    result = run(frame(**{column: values}))
    assert len(result.clean) == 3
    assert list(result.quarantine[REASON]) == [reason]
    assert result.quarantine["order_id"].tolist() == ["2"]
    assert result.quarantine["_source_file"].iloc[0] == "orders/part-0.csv"
    assert result.rejected == {reason: 1}


def test_duplicate_keys_are_quarantined_all_copies() -> None:
    result = run(frame(order_id=[1, 2, 2, 4]), dups=pd.DataFrame({"order_id": [2]}))
    assert result.clean["order_id"].tolist() == [1, 4]
    assert result.rejected == {"order_id: duplicate_key": 2}


def test_missing_column_fails_naming_file_column_and_rule() -> None:
    with pytest.raises(
        DataValidationError, match=r"orders/part-0.csv: column 'status': rule required_column"
    ):
        run(frame().drop(columns="status"))


def test_wrong_dtype_fails_naming_column_and_values() -> None:
    with pytest.raises(
        DataValidationError, match=r"column 'amount': rule dtype: expected float64, found 'abc'"
    ):
        run(frame(amount=[1.0, "abc", 2.0, 3.0]))


def test_table_level_check_fails_the_run() -> None:
    with pytest.raises(
        DataValidationError, match=r"column 'score': rule le\(max_value=1\) \(table-level\)"
    ):
        run(frame(score=[0.1, 7.0, 0.2, None]))


def test_unparseable_timestamp_fails_as_dtype() -> None:
    with pytest.raises(DataValidationError, match=r"column 'ts': rule dtype"):
        run(frame(ts=["2025-01-01", "yesterday", "2025-01-03", "2025-01-04"]))


def test_inputs_are_not_mutated() -> None:
    df = frame(amount=[1.0, -2.0, 0.0, 9.0])
    before = df.copy()
    run(df)
    pd.testing.assert_frame_equal(df, before)
