from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from flows import FLOWS
from flows.cli import main, parse_params
from flows.data_prep import DataPrepParams
from flows.generate_data import GenerateDataParams

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_and_registry_declare_the_same_flows() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployed = {d["name"]: d["entrypoint"] for d in config["deployments"]}
    assert deployed == {name: entry.entrypoint for name, entry in FLOWS.items()}
    pools = {d["work_pool"]["name"] for d in config["deployments"]}
    assert pools == {"mlops-local"}


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_every_entrypoint_loads_as_the_registered_flow(name: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    loaded = load_flow_from_entrypoint(FLOWS[name].entrypoint)
    assert loaded.name == FLOWS[name].flow.name == name
    # one typed parameter model per flow: that is what the Prefect UI renders as a form
    assert list(loaded.parameters.properties) == ["params"]


def test_param_models_are_strict() -> None:
    with pytest.raises(SystemExit, match="rows: Input should be greater than or equal to 1000"):
        parse_params(["rows=5"], GenerateDataParams)
    with pytest.raises(SystemExit, match="colour: Extra inputs are not permitted"):
        parse_params(["colour=red"], DataPrepParams)
    with pytest.raises(SystemExit, match="expects key=value"):
        parse_params(["rows"], GenerateDataParams)
    params = parse_params(
        ["rows=2000", "covariate_drift=[amount]", "drift_start=2026-01-01"], GenerateDataParams
    )
    assert params.rows == 2000 and params.covariate_drift == ("amount",)


def test_cli_lists_flows_with_their_parameters(capsys) -> None:
    main(["flows"])
    out = capsys.readouterr().out
    for name, entry in FLOWS.items():
        assert name in out and entry.summary in out
    assert "dask_cluster_block" in out and "drift_start" in out
    main(["datasets"])
    assert "credit_risk" in capsys.readouterr().out
