from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.feature_store.store import FeatureStoreError, run_feast_cli
from tests.servers import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of features/ (its registry and online store land in the copy's ../data)."""
    dst = tmp_path / "project" / "features"
    shutil.copytree(ROOT / "features", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_feast_plan_and_apply_on_the_repository(repo: Path, tiny_features: Path) -> None:
    data_root = str(tiny_features.parent.parent)  # <root>/<dataset>/features
    (tiny_features.parent.parent / "credit_risk").mkdir(exist_ok=True)
    plan = run_feast_cli(str(repo), "plan", data_root)
    assert "Created feature view credit_risk__transaction_windows" in plan
    assert "Created feature service credit_risk_default_v1" in plan
    apply = run_feast_cli(str(repo), "apply", data_root)
    assert "credit_risk__customer_profile" in apply
    assert (repo.parent / "data" / "feast" / "registry.db").exists()


def test_a_repository_that_fails_feast_plan_is_named(repo: Path) -> None:
    with (repo / "repo.py").open("a") as fh:
        fh.write(
            "\nfrom feast import FeatureView, FileSource\n"
            "broken = FeatureView(name='broken', entities=[], source=FileSource(path='x.parquet'))\n"
            "broken2 = FeatureView(name='broken', entities=[], source=FileSource(path='y.parquet'))\n"
        )
    with pytest.raises(FeatureStoreError, match=rf"{repo}: feast plan failed: .*broken"):
        run_feast_cli(str(repo), "plan")
