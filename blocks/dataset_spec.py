"""A dataset spec kept in Prefect (editable in the UI) instead of a file in the repository."""

from __future__ import annotations

from typing import cast

from prefect.blocks.core import Block
from pydantic import Field

from tasks.specs.dataset_spec import DatasetSpec, SpecError, parse_spec
from tasks.specs.datasets import get_dataset, spec_paths


class DatasetSpecBlock(Block):
    """The YAML of a dataset spec (the format of features/<name>/dataset.yaml)."""

    _block_type_name = "MLOps Dataset Spec"
    _description = "A dataset spec as YAML; flows take its block name as `dataset`."

    spec_yaml: str = Field(description="The spec, as `mlops datasets init` writes it.")
    code: str | None = Field(
        default=None,
        description="The dataset folder under features/ whose modules the spec's transforms "
        "and generator may name; default: the spec's own name.",
    )

    def spec(self) -> DatasetSpec:
        return parse_spec(self.spec_yaml, f"block '{self._block_document_name}'", self.code)


def resolve_dataset(name: str) -> DatasetSpec:
    """A dataset from the repository's registry, else from a saved DatasetSpecBlock."""
    if name in spec_paths():
        return get_dataset(name)
    try:
        block = cast(DatasetSpecBlock, DatasetSpecBlock.load(name))
    except ValueError as exc:
        known = sorted(spec_paths())
        raise SpecError(
            f"unknown dataset '{name}': not in features/ ({known}) nor a saved dataset block"
        ) from exc
    return block.spec()
