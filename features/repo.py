"""Feast definitions of every registered dataset, read by `feast plan` and `feast apply`.

They are built from each dataset spec; sources point at data_prep's output under
$MLOPS_DATA_ROOT (default: data/ beside this folder).
"""

import os
from pathlib import Path

from tasks.feature_store.definitions import feast_objects
from tasks.specs.datasets import list_datasets

_DATA_ROOT = os.environ.get("MLOPS_DATA_ROOT", str(Path(__file__).resolve().parents[1] / "data"))

for _spec in list_datasets():
    for _obj in feast_objects(_spec, f"{_DATA_ROOT}/{_spec.name}/features"):
        globals()[f"{type(_obj).__name__}_{_obj.name}"] = _obj
