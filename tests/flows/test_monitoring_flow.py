"""The monitoring flow on real served traffic: a champion behind nginx, traffic from the
generator's undrifted, covariate-drifted and concept-drifted modes, late labels through the
feedback endpoint, results read back through a real Prometheus."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from blocks import (
    DataSource,
    FeatureRepo,
    ModelRegistry,
    MonitoringPolicy,
    RolloutPolicy,
    ServingTarget,
)
from flows.data_prep import DataPrepParams, data_prep
from flows.deployment import DeploymentParams, deployment
from flows.generate_data import GenerateDataParams, generate_data
from flows.monitoring import EPISODES, WATERMARK, MonitoringParams, monitoring
from flows.training import TrainingParams, training
from tasks.monitoring.detectors import detector_file_names
from tasks.monitoring.policy import MonitoringPolicy as Policy
from tasks.monitoring.prometheus import TARGETS_FILE, LocalPrometheus
from tasks.monitoring.versions import version_detectors
from tasks.registry.store import RegistryError
from tasks.serving.local_target import LocalTarget, free_port, http_json
from tasks.serving.replay import label_rows, replay
from tasks.serving.rollout import RolloutPolicy as Rollout
from tasks.specs.datasets import get_dataset

pytestmark = pytest.mark.flows
NAME = "credit-watch"
FIELDS = ["customer_id", "loan_amount", "term_months", "purpose", "missed_payments_12m"]
END = date.today() - timedelta(days=1)
DRIFT_START = END - timedelta(days=400)
ROWS = 200_000
ROOT = Path(__file__).resolve().parents[2]
BATCH = 50  # rows per request


def _generate(out: Path, **drift) -> Path:
    """The module's data up to yesterday (served features are then as fresh as the trained
    ones); the same customers and events again with a drift mode on."""
    generate_data(
        GenerateDataParams(
            rows=ROWS,
            seed=7,
            start=END - timedelta(days=900),
            end=END,
            out_uri=str(out),
            chunk_rows=50_000,
            **({"drift_start": DRIFT_START, **drift} if drift else {}),
        )
    )
    return out


@pytest.fixture(scope="module")
def watched(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """NAME v1 trained on data up to yesterday and served as champion, with a Prometheus and
    a pushgateway on loopback; all stopped after."""
    state = tmp_path_factory.mktemp("watch")
    FeatureRepo(
        repo_path=str(ROOT / "features"),
        registry_path=str(state / "feast" / "registry.db"),
        sqlite_path=str(state / "feast" / "online.db"),
    ).save("watch-feast", overwrite=True)
    raw = _generate(state / "raw")
    data_prep(
        DataPrepParams(
            source_uri=str(raw),
            output_uri=str(state / "out"),
            dask_cluster_block="threads",
            feature_repo_block="watch-feast",
        )
    )
    training(
        TrainingParams(
            data_uri=str(state / "out"),
            model_name=NAME,
            feature_repo_block="watch-feast",
            registry_block="tmp-registry",
        )
    )
    ServingTarget(
        state_dir=str(state / "serving"),
        port=free_port(),
        online_store=FeatureRepo.load("watch-feast").sqlite_path,
        drain_s=0.2,
    ).save("watch-serving", overwrite=True)
    RolloutPolicy(policy=Rollout(window_requests=20, min_requests=10)).save(
        "watch-rollout", overwrite=True
    )
    target = LocalTarget(ServingTarget.load("watch-serving").local_settings(), NAME)
    # the deployment flow keeps the targets file in the serving state folder up to date
    targets = state / "serving" / TARGETS_FILE
    prometheus = LocalPrometheus(state / "prometheus", targets_file=targets)
    try:
        prometheus.start()
        _policy(prometheus.pushgateway_url)
        ModelRegistry.load("tmp-registry").registry().set_alias(NAME, "challenger", 1)
        deployed = deployment(
            DeploymentParams(
                model_name=NAME,
                target_block="watch-serving",
                policy_block="watch-rollout",
                registry_block="tmp-registry",
            )
        )
        assert deployed.decision == "promoted"
        assert '"role": "main"' in targets.read_text()
        yield {"target": target, "prometheus": prometheus, "state": state, "raw": raw}
    finally:
        target.stop_all()
        prometheus.stop()


def _policy(pushgateway: str = "", **fields) -> None:
    policy = Policy(
        **{
            "window_rows": 300,
            "min_rows": 100,
            "settle_s": 0,
            "labelled_rows": 500,
            "min_labelled": 200,
            "auc_floor": 0.65,
            **fields,
        }
    )
    MonitoringPolicy(policy=policy, pushgateway_url=pushgateway).save(
        "watch-policy", overwrite=True
    )


def _monitor():
    (result,) = monitoring(
        MonitoringParams(
            model_name=NAME,
            target_block="watch-serving",
            policy_block="watch-policy",
            registry_block="tmp-registry",
        )
    ).models
    return result


def _applications(raw: Path, start: int, n: int, after_drift: bool = False) -> pd.DataFrame:
    """Rows `start` to `start + n` of one shuffle of the applications (disjoint slices: a
    window of repeated rows would look like a change); only those after the drift start."""
    since = pd.Timestamp(DRIFT_START, tz="UTC") if after_drift else None
    shuffled = label_rows(raw, get_dataset("credit_risk"), since)
    assert len(shuffled) >= start + n
    return shuffled.iloc[start : start + n]


def _send(url: str, apps: pd.DataFrame, labels: bool = False) -> int:
    """Entity requests of BATCH rows; with `labels`, each answer's labels via the feedback
    endpoint. Returns the rows answered."""
    return replay(url, apps, FIELDS, label="defaulted_90d" if labels else None, batch=BATCH).rows


def test_versions_carry_their_detectors_and_old_ones_get_them_on_first_use(watched) -> None:
    registry = ModelRegistry.load("tmp-registry").registry()
    v1 = registry.get(NAME, 1)
    assert set(detector_file_names()) <= set(v1.files)
    folder = Path(registry.version_path(NAME, 1))
    assert not [p for p in folder.rglob("*") if p.suffix in (".dill", ".pkl", ".pickle")]
    # a version registered before detectors existed: the same files without them
    files = {f: registry.read(NAME, 1, f) for f in v1.files if f not in detector_file_names()}
    old = registry.register(NAME, files, v1.metadata).version
    fitted = version_detectors(registry, NAME, old)
    assert fitted.origin.startswith("fitted on first use")
    assert registry.records(NAME, old, "detectors")
    assert version_detectors(registry, NAME, old).origin == fitted.origin  # the record, reused
    assert fitted.features == version_detectors(registry, NAME, 1).features


def test_undrifted_traffic_is_quiet_and_drifted_traffic_emits_drift(watched, tmp_path) -> None:
    url, state = watched["target"].url, watched["state"]
    empty = _monitor()
    assert (empty.state, empty.records, empty.events) == ("no traffic", 0, [])

    _send(url, _applications(watched["raw"], 0, 250))
    short = _monitor()  # 250 rows < one window of 300, and >= min_rows 100: checked as a tail
    assert short.windows == 1 and short.events == []
    _send(url, _applications(watched["raw"], 250, 50))
    tail = _monitor()
    assert (tail.state, tail.windows, tail.insufficient[0]["rows"]) == (
        "insufficient data",
        0,
        50,
    )
    _send(url, _applications(watched["raw"], 300, 600))
    quiet = _monitor()
    assert quiet.state == "checked" and quiet.windows == 2 and quiet.events == []

    drifted = _generate(
        tmp_path / "drifted", covariate_drift=("loan_amount", "missed_payments_12m")
    )
    _send(url, _applications(drifted, 0, 600, after_drift=True))
    loud = _monitor()
    assert loud.state == "drift" and loud.drifted_windows >= 1
    (event,) = loud.events
    assert event["event"] == "mlops.model.drift-detected" and event["id"]
    record = json.loads(
        ModelRegistry.load("tmp-registry")
        .registry()
        .read_record(NAME, 1, "monitoring", event["record"].rsplit(".", 1)[-1], "monitoring.json")
    )
    flagged = {f for w in record["windows"] for f in w["drifted_features"]}
    assert flagged & {"loan_amount", "loan_to_income", "missed_payments_12m"}
    episodes = json.loads((state / "serving" / NAME / "monitoring" / EPISODES).read_text())
    assert [e["event"] for e in episodes] == ["mlops.model.drift-detected"]
    assert (state / "serving" / NAME / "monitoring" / WATERMARK).is_file()

    prometheus = watched["prometheus"]
    (drift,) = prometheus.wait_for(f'mlops_drift_detected{{model="{NAME}"}} == 1', timeout_s=20)
    assert drift["metric"]["version"] == "1" and drift["metric"]["role"] == "main"
    served = prometheus.wait_for(f'sum(mlops_predictions_total{{model="{NAME}"}}) > 1000', 20)
    assert float(served[0]["value"][1]) >= 1_000


def test_concept_drift_is_caught_by_live_accuracy_not_by_the_detectors(watched, tmp_path):
    _policy(watched["prometheus"].pushgateway_url, min_rows=10)
    _monitor()  # what earlier tests left waiting is checked now, as a short window
    _policy(watched["prometheus"].pushgateway_url)
    concept = _generate(tmp_path / "concept", concept_drift=True)
    rows = _send(
        watched["target"].url, _applications(concept, 600, 600, after_drift=True), labels=True
    )
    assert rows == 600
    result = _monitor()
    assert (result.windows, result.drifted_windows) == (2, 0), result  # features did not move
    (accuracy,) = [a for a in result.accuracy if a["version"] == 1]
    assert accuracy["labelled"] == 500 and accuracy["auc"] < 0.65, accuracy
    assert [e["event"] for e in result.events] == ["mlops.model.performance-degraded"]
    (auc,) = watched["prometheus"].wait_for(f'mlops_live_auc{{model="{NAME}"}} < 0.65', 20)
    assert float(auc["value"][1]) < 0.65


def test_labels_for_unknown_requests_are_counted_and_unknown_models_refused(watched) -> None:
    http_json(
        f"{watched['target'].url}/api/v1.0/feedback",
        {"request": {"meta": {"puid": "never-served"}}, "truth": {"data": {"ndarray": [[1]]}}},
    )
    assert _monitor().unmatched_labels >= 1
    with pytest.raises(RegistryError, match="unknown model 'no-such-model'"):
        monitoring(MonitoringParams(model_name="no-such-model", registry_block="tmp-registry"))


def test_the_artifact_embeds_the_plots(watched) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    markdown = [a for a in artifacts if a.key == f"monitoring-{NAME}" and "drift" in str(a.data)]
    assert any("data:image/png;base64," in str(a.data) for a in markdown)
    assert shutil.which("promtool")


def test_retraining_fails_fast_on_unknown_models_and_waits_for_enough_new_labels(watched):
    from flows.retraining import RetrainingParams, retraining

    with pytest.raises(RegistryError, match="unknown model 'ghost'"):
        retraining(RetrainingParams(resource_id="mlops.model.ghost", registry_block="tmp-registry"))
    few = RetrainingParams(
        resource_id="mlops.dataset.credit_risk",
        event_name="mlops.dataset.updated",
        payload={"new_labelled_rows": 10},
        min_new_labelled_rows=1_000,
        registry_block="tmp-registry",
    )
    assert retraining(few) == []
    # a drift, but no source file newer than the snapshot the champion was trained on: the same
    # recipe on the same data would give the same model back, so nothing is retrained
    DataSource(uri=str(watched["raw"])).save("watch-source", overwrite=True)
    before = len(ModelRegistry.load("tmp-registry").registry().versions(NAME))
    same = RetrainingParams(
        model_name=NAME,
        event_name="mlops.model.drift-detected",
        registry_block="tmp-registry",
        data_source_block="watch-source",
    )
    assert retraining(same) == []
    assert len(ModelRegistry.load("tmp-registry").registry().versions(NAME)) == before
