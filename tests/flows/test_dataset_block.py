from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from blocks import DatasetSpecBlock, resolve_dataset
from flows.data_prep import DataPrepParams, data_prep
from flows.generate_data import GenerateDataParams, generate_data
from tasks.data.publish import features_uri
from tasks.specs.dataset_spec import SpecError
from tasks.specs.datasets import DATASETS_ROOT

pytestmark = pytest.mark.flows


def test_flows_run_on_a_spec_kept_in_a_block(tmp_path: Path) -> None:
    raw = yaml.safe_load((DATASETS_ROOT / "rides" / "dataset.yaml").read_text())
    raw["name"] = "rides_in_prefect"
    # its code stays in the repository: the block names the folder it may come from
    DatasetSpecBlock(spec_yaml=yaml.safe_dump(raw)).save("rides-elsewhere", overwrite=True)
    with pytest.raises(SpecError, match=r"feature_tables\.\w+\.transform: .*outside dataset"):
        resolve_dataset("rides-elsewhere")
    DatasetSpecBlock(spec_yaml=yaml.safe_dump(raw), code="rides").save(
        "rides-in-prefect", overwrite=True
    )

    rows = generate_data(
        GenerateDataParams(
            dataset="rides-in-prefect", rows=1_000, seed=2, out_uri=str(tmp_path / "raw")
        )
    )
    assert rows["orders"] == 1_000
    result = data_prep(
        DataPrepParams(
            dataset="rides-in-prefect",
            source_uri=str(tmp_path / "raw"),
            output_uri=str(tmp_path / "out"),
            dask_cluster_block="threads",
            feature_repo_block="tmp-feast",
        )
    )
    assert result.dataset == "rides_in_prefect"
    labels = pd.read_parquet(Path(features_uri(str(tmp_path / "out"))) / "labels")
    assert {"driver_id", "customer_id", "order_is_success"} <= set(labels.columns)


def test_a_bad_spec_in_a_block_names_the_block_and_field() -> None:
    raw = yaml.safe_load((DATASETS_ROOT / "rides" / "dataset.yaml").read_text())
    raw["label"]["column"] = "tip"
    DatasetSpecBlock(spec_yaml=yaml.safe_dump(raw)).save("broken-rides", overwrite=True)
    with pytest.raises(
        SpecError, match=r"block 'broken-rides': invalid dataset spec: .*label.column 'tip'"
    ):
        resolve_dataset("broken-rides")
    with pytest.raises(SpecError, match=r"unknown dataset 'nowhere'"):
        resolve_dataset("nowhere")
