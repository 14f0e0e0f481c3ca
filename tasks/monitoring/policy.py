"""What monitoring checks and when it raises an event (the MonitoringPolicy block holds one)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MonitoringPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_rows: int = Field(
        default=1_000, ge=20, le=1_000_000, description="Rows per drift-check window."
    )
    min_rows: int = Field(
        default=200,
        ge=10,
        description="A trailing window this large is checked too; smaller ones wait for more "
        "traffic ('insufficient data').",
    )
    p_value: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="False-alarm rate per window, split evenly between the feature detector "
        "(Benjamini-Hochberg over the features) and the score detector.",
    )
    settle_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3600.0,
        description="Records younger than this are left for the next run (a server may still "
        "be writing that second).",
    )
    labelled_rows: int = Field(
        default=1_000, ge=20, description="Live accuracy over the last N labelled predictions."
    )
    min_labelled: int = Field(
        default=200, ge=10, description="Fewer labelled predictions: no accuracy verdict."
    )
    auc_floor: float = Field(
        default=0.70, ge=0.0, le=1.0, description="Live AUC below it: performance-degraded."
    )
    label_lookback_days: float = Field(
        default=120.0,
        gt=0.0,
        description="Labels are joined to predictions this recent: longer than the label's "
        "horizon (credit risk: 90 days), or late outcomes never join.",
    )
    reemit_after_s: float = Field(
        default=3_600.0,
        ge=0.0,
        description="An episode no retraining has answered is emitted again after this long.",
    )

    @model_validator(mode="after")
    def _min_within_window(self) -> MonitoringPolicy:
        if self.min_rows > self.window_rows:
            raise ValueError(
                f"min_rows ({self.min_rows}) must not exceed window_rows ({self.window_rows})"
            )
        if self.min_labelled > self.labelled_rows:
            raise ValueError(
                f"min_labelled ({self.min_labelled}) must not exceed labelled_rows "
                f"({self.labelled_rows})"
            )
        return self
