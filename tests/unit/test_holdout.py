from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.training.training_set import outcome_known
from tasks.validation.holdout import HoldoutError, read_labels

pytestmark = pytest.mark.unit


def test_rows_whose_label_is_not_known_yet_still_mark_the_datas_end(credit_spec, tmp_path):
    """The newest 30 days carry no label yet (as in real data): they are left out of the test
    set, but the data reaches to their end, so the 90-day windows that closed before it stay."""
    ts = pd.date_range("2025-01-01", periods=400, freq="D", tz="UTC")
    labels = pd.DataFrame(
        {"customer_id": np.arange(400), "event_timestamp": ts, "defaulted_90d": 0.0}
    )
    labels.loc[labels["event_timestamp"] > ts[-1] - pd.Timedelta(days=30), "defaulted_90d"] = None
    labels.to_parquet(tmp_path / "labels.parquet")
    frame = read_labels(str(tmp_path / "labels.parquet"), credit_spec)
    known, counts = outcome_known(frame, "event_timestamp", "defaulted_90d", 90)
    assert counts["left_out_unknown_label"] == 30
    assert counts["left_out_open_outcome"] == 90 - 30
    assert known["event_timestamp"].max() == ts[-1] - pd.Timedelta(days=90)
    labels.assign(defaulted_90d=None).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(HoldoutError, match="no row has a value in label column"):
        read_labels(str(tmp_path / "none.parquet"), credit_spec)
