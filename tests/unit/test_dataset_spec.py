from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.specs.dataset_spec import SpecError, load_spec
from tasks.specs.datasets import DATASETS_ROOT, get_dataset, list_datasets

pytestmark = pytest.mark.unit
SPEC = DATASETS_ROOT / "credit_risk" / "dataset.yaml"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(SPEC.read_text())
    mutate(raw)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_registry_lists_the_demo_dataset() -> None:
    names = [s.name for s in list_datasets()]
    assert "credit_risk" in names
    spec = get_dataset("credit_risk")
    assert spec.join_keys() == ["customer_id"]
    assert spec.service_keys("credit_risk_default_v1") == ["customer_id"]
    assert spec.transform_fn("transaction_windows").__name__ == "transaction_windows"


def test_unknown_dataset_names_the_registered_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown dataset 'nope'.*credit_risk"):
        get_dataset("nope")


def test_label_missing_from_schema_fails_at_load(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda r: r["label"].update(column="no_such_label"))
    with pytest.raises(SpecError, match=r"dataset.yaml.*label.column 'no_such_label'"):
        load_spec(path)


def test_transform_module_that_does_not_import_fails_at_load(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:
        raw["feature_tables"]["customer_profile"]["transform"] = "features.missing_mod:fn"

    with pytest.raises(SpecError, match=r"feature_tables.customer_profile.transform.*missing_mod"):
        load_spec(_write(tmp_path, mutate))


def test_unknown_input_table_and_extra_field_fail(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:
        raw["feature_tables"]["customer_profile"]["inputs"] = ["clients"]

    with pytest.raises(SpecError, match="unknown table 'clients'"):
        load_spec(_write(tmp_path, mutate))
    with pytest.raises(SpecError, match=r"tables\.customers\.colour"):
        load_spec(_write(tmp_path, lambda r: r["tables"]["customers"].update(colour="red")))


def test_unknown_check_fails_at_load(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:
        raw["tables"]["customers"]["columns"]["age"]["checks"] = [{"check": "is_prime"}]

    with pytest.raises(SpecError, match=r"tables.customers.columns.age.*is_prime"):
        load_spec(_write(tmp_path, mutate))


def test_partition_key_must_be_a_column(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:
        raw["feature_tables"]["transaction_windows"]["partition_by"] = "account"

    with pytest.raises(SpecError, match="partition_by: 'account'"):
        load_spec(_write(tmp_path, mutate))


def test_validation_and_drift_features_must_exist(tmp_path: Path) -> None:
    def segment(raw: dict) -> None:
        raw["validation"]["segments"]["region"]["feature"] = "region_name"

    with pytest.raises(SpecError, match=r"validation.segments.region.feature: 'region_name'"):
        load_spec(_write(tmp_path, segment))

    def drift(raw: dict) -> None:
        raw["monitoring"]["drift_features"].append("shoe_size")

    with pytest.raises(SpecError, match=r"monitoring.drift_features: 'shoe_size'"):
        load_spec(_write(tmp_path, drift))

    def bins(raw: dict) -> None:
        raw["validation"]["segments"]["income_band"]["bins"] = [0, 50_000, 20_000]

    with pytest.raises(SpecError, match=r"validation.segments.income_band.*must increase"):
        load_spec(_write(tmp_path, bins))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["request"]["fields"].update(income_band="string"),
            r"request.fields: \['income_band'\] are not columns of table 'applications'",
        ),
        (
            lambda r: r["request"].update(features=["loan_amount", "shoe_size"]),
            r"request.features: \['shoe_size'\] are not request fields",
        ),
        (
            lambda r: r["on_demand"]["application_features"].update(inputs=["nope"]),
            r"on_demand.application_features.inputs: unknown feature tables \['nope'\]",
        ),
        (
            lambda r: r["on_demand"]["application_features"]["outputs"].pop("payment_to_income"),
            r"on_demand.application_features.transform returns .*payment_to_income.*, "
            r"its outputs declare",
        ),
        (
            lambda r: r["label"].update(horizon_days=-1),
            r"label.horizon_days: Input should be greater than or equal to 0",
        ),
    ],
)
def test_request_fields_and_on_demand_views_are_checked_at_load(
    tmp_path: Path, mutate, message
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, mutate))


def test_the_spec_knows_request_and_on_demand_features() -> None:
    spec = get_dataset("credit_risk")
    service = "credit_risk_default_v1"
    assert spec.label.horizon_days == 90
    assert spec.service_tables(service) == ["customer_profile", "transaction_windows"]
    assert spec.service_on_demand(service) == ["application_features"]
    assert spec.service_request_fields(service) == [
        "loan_amount",
        "term_months",
        "purpose",
        "missed_payments_12m",
    ]
