"""batch-scoring: the version's own predictions on Feast's point-in-time features, written as one
Parquet file that is replaced whole or not at all."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import fsspec
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from blocks import FeatureRepo, ModelRegistry
from deployments.predictor import lightgbm_predictor
from flows.batch_scoring import BatchScoringParams, batch_scoring
from flows.training import TrainingParams, training
from tasks.data.publish import features_uri
from tasks.feature_store.store import open_store, training_set
from tasks.registry.loading import load_model
from tasks.serving import batch
from tasks.serving.batch import (
    BatchScoringError,
    FeatureSetChanged,
    batch_score,
    read_scores_metadata,
    score_frame,
)
from tasks.specs.datasets import get_dataset
from tasks.training.onnx_export import INPUT, ONNX
from tests.unit.test_onnx_export import float32_trees_agree

pytestmark = pytest.mark.flows
NAME = "credit-batch"
EVENT_TIME = "scored_at"  # not the spec's name: the flow's timestamp_column maps it


@pytest.fixture(scope="module")
def champion(prepared: Path) -> int:
    version = training(
        TrainingParams(
            data_uri=str(prepared),
            model_name=NAME,
            feature_repo_block="prepared-feast",
            registry_block="tmp-registry",
        )
    ).version
    ModelRegistry.load("tmp-registry").registry().set_alias(NAME, "champion", version)
    return version


@pytest.fixture(scope="module")
def entities(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 labelled application rows without their label, as a CSV file with a differently
    named event-time column, in no particular order."""
    labels = pd.read_parquet(f"{features_uri(str(prepared))}/labels")
    rows = labels.drop(columns=["defaulted_90d"]).sample(600, random_state=1)
    path = tmp_path_factory.mktemp("entities") / "applications.csv"
    rows.rename(columns={"event_timestamp": EVENT_TIME}).to_csv(path, index=False)
    return path


def _params(entities: Path, output: Path, **extra) -> BatchScoringParams:
    return BatchScoringParams(
        model_name=NAME,
        entities_uri=str(entities),
        output_uri=str(output),
        timestamp_column=EVENT_TIME,
        dask_cluster_block="threads",
        feature_repo_block="prepared-feast",
        registry_block="tmp-registry",
        **extra,
    )


def _reference(entities: Path, version: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The point-in-time frame of the entity rows, read here without batch scoring's code,
    and the version's own predictions on it."""
    spec = get_dataset("credit_risk")
    rows = pd.read_csv(entities, parse_dates=[EVENT_TIME]).rename(
        columns={EVENT_TIME: spec.timestamp_field}
    )
    rows["purpose"] = rows["purpose"].astype("string")
    model = load_model(ModelRegistry.load("tmp-registry").registry(), NAME, version)
    store = open_store(FeatureRepo.load("prepared-feast").settings())
    frame = training_set(store, spec, rows, model.metadata["feature_service"])
    return frame, model.predict(frame)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_batch_scores_are_the_versions_own_on_point_in_time_features(
    champion: int, entities: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores" / "applications.parquet"
    result = batch_scoring(_params(entities, output, partitions=3))
    assert (result.rows, result.partitions, result.version) == (600, 3, champion)

    scores = pd.read_parquet(output)
    frame, expected = _reference(entities, champion)
    assert np.array_equal(scores["score"].to_numpy(), expected)  # exactly: same calibration
    assert list(scores.columns) == [
        "customer_id",
        EVENT_TIME,
        "score",
        "model",
        "model_version",
        "feature_fingerprint",
    ]
    assert (scores["customer_id"].to_numpy() == frame["customer_id"].to_numpy()).all()
    assert (scores[EVENT_TIME] == frame["event_timestamp"]).all()  # the input's row order

    registry = ModelRegistry.load("tmp-registry").registry()
    fingerprint = registry.get(NAME, champion).metadata["feature_fingerprint"]
    assert set(scores["model"]) == {NAME} and set(scores["model_version"]) == {champion}
    assert set(scores["feature_fingerprint"]) == {fingerprint}
    meta = read_scores_metadata(str(output))
    assert (meta["model"], meta["version"], meta["feature_fingerprint"]) == (
        NAME,
        champion,
        fingerprint,
    )
    assert meta["calibration"] == "platt" and len(meta["snapshots"]) == 1
    assert _leftovers(output.parent) == []

    # the same rows in memory, one partition: the parity check other paths (the server) use
    same = score_frame(
        load_model(registry, NAME, champion),
        pd.read_csv(entities),
        get_dataset("credit_risk"),
        FeatureRepo.load("prepared-feast").settings(),
        EVENT_TIME,
    )
    assert np.array_equal(same["score"].to_numpy(), expected)


def test_the_registered_version_has_an_onnx_model_matching_its_booster(
    champion: int, entities: Path
) -> None:
    registry = ModelRegistry.load("tmp-registry").registry()
    model = load_model(registry, NAME, champion)
    frame, _ = _reference(entities, champion)
    session = ort.InferenceSession(
        registry.read(NAME, champion, ONNX), providers=["CPUExecutionProvider"]
    )
    _, probabilities = session.run(None, {INPUT: frame[model.features].to_numpy("float32")})
    own = lightgbm_predictor(registry.read(NAME, champion, "model.txt").decode(), model.features)
    diff = np.abs(probabilities[:, 1] - own(frame))
    assert float32_trees_agree(diff), (np.quantile(diff, 0.99), diff.max())


def test_a_bad_entity_file_is_named_and_the_earlier_output_stays(
    champion: int, entities: Path, tmp_path: Path
) -> None:
    output = tmp_path / "scores.parquet"
    batch_scoring(_params(entities, output))
    before = output.read_bytes()

    rows = pd.read_csv(entities)
    missing = tmp_path / "no_loan_amount.parquet"
    rows.drop(columns=["loan_amount"]).to_parquet(missing, index=False)
    with pytest.raises(
        BatchScoringError,
        match=r"no_loan_amount.parquet: entity rows lack column\(s\) \['loan_amount'\]",
    ):
        batch_scoring(_params(missing, output))

    spec = get_dataset("credit_risk")
    model = load_model(ModelRegistry.load("tmp-registry").registry(), NAME, champion)
    settings = FeatureRepo.load("prepared-feast").settings()
    bad_time = tmp_path / "bad_time.csv"
    rows.assign(**{EVENT_TIME: rows[EVENT_TIME].where(rows.index != 450, "yesterday")}).to_csv(
        bad_time, index=False
    )
    with pytest.raises(
        BatchScoringError, match=r"bad_time.csv: column 'scored_at': 'yesterday' is not a datetime"
    ):
        batch_score(model, str(bad_time), str(output), spec, settings, EVENT_TIME, partitions=3)
    bad_key = tmp_path / "bad_key.csv"
    rows.assign(customer_id=rows["customer_id"].astype(str).where(rows.index != 7, "C-7")).to_csv(
        bad_key, index=False
    )
    with pytest.raises(BatchScoringError, match=r"column 'customer_id': 'C-7' is not a int64"):
        batch_score(model, str(bad_key), str(output), spec, settings, EVENT_TIME)
    with pytest.raises(BatchScoringError, match=r"nowhere.csv: no entity rows there"):
        batch_score(model, str(tmp_path / "nowhere.csv"), str(output), spec, settings)

    assert output.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_changed_feature_set_is_refused_naming_the_views(
    champion: int, entities: Path, tmp_path: Path
) -> None:
    model = load_model(ModelRegistry.load("tmp-registry").registry(), NAME, champion)
    views = dict(model.metadata["feature_views"])
    changed = sorted(views)[0]
    views[changed] = "0" * 16
    stale = dataclasses.replace(
        model,
        metadata={**model.metadata, "feature_fingerprint": "old:0", "feature_views": views},
    )
    output = tmp_path / "scores.parquet"
    with pytest.raises(FeatureSetChanged, match=rf"changed views: {changed}\)"):
        batch_score(
            stale,
            str(entities),
            str(output),
            get_dataset("credit_risk"),
            FeatureRepo.load("prepared-feast").settings(),
            EVENT_TIME,
        )
    assert not output.exists()


def test_an_interrupted_write_leaves_no_partial_output(
    champion: int, entities: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_dataset("credit_risk")
    model = load_model(ModelRegistry.load("tmp-registry").registry(), NAME, champion)
    settings = FeatureRepo.load("prepared-feast").settings()
    output = tmp_path / "scores.parquet"
    batch_score(model, str(entities), str(output), spec, settings, EVENT_TIME)
    before = output.read_bytes()

    computed = batch._computed
    seen: list[list[str]] = []

    def interrupted(parts):
        results = computed(parts)
        yield next(results)  # the first partition is written to the temporary file...
        seen.append(_leftovers(tmp_path))
        raise KeyboardInterrupt  # ...then Ctrl-C while the second one is scored

    monkeypatch.setattr(batch, "_computed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        batch_score(model, str(entities), str(output), spec, settings, EVENT_TIME, partitions=3)
    assert len(seen) == 1 and len(seen[0]) == 1 and ".scores.parquet.tmp-" in seen[0][0]
    assert output.read_bytes() == before
    assert _leftovers(tmp_path) == []

    fresh = tmp_path / "fresh.parquet"  # interrupted with no earlier output: nothing at all
    with pytest.raises(KeyboardInterrupt):
        batch_score(model, str(entities), str(fresh), spec, settings, EVENT_TIME, partitions=3)
    assert not fresh.exists() and _leftovers(tmp_path) == []


def test_entity_rows_and_scores_on_another_filesystem(
    champion: int, entities: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec URIs other than local paths (memory:// here): the output appears by a copy to
    its final name, and an interrupted write leaves neither it nor its temporary object."""
    memory = fsspec.filesystem("memory")
    memory.pipe("/batch/rows.csv", entities.read_bytes())
    spec = get_dataset("credit_risk")
    model = load_model(ModelRegistry.load("tmp-registry").registry(), NAME, champion)
    settings = FeatureRepo.load("prepared-feast").settings()
    result = batch_score(
        model,
        "memory://batch/rows.csv",
        "memory://batch/out/scores.parquet",
        spec,
        settings,
        EVENT_TIME,
    )
    scores = pd.read_parquet("memory://batch/out/scores.parquet")
    assert result.rows == len(scores) == 600
    assert np.array_equal(scores["score"].to_numpy(), _reference(entities, champion)[1])
    assert read_scores_metadata("memory://batch/out/scores.parquet")["version"] == champion

    computed = batch._computed

    def interrupted(parts):
        yield next(computed(parts))
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_computed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        batch_score(
            model,
            "memory://batch/rows.csv",
            "memory://batch/new/scores.parquet",
            spec,
            settings,
            EVENT_TIME,
            partitions=2,
        )
    assert memory.ls("/batch/new", detail=False) == []
    memory.rm("/batch", recursive=True)
