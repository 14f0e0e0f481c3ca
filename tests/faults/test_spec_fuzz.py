"""Hostile and malformed dataset specs: `parse_spec` answers every input with a valid spec or
a SpecError naming where it came from and the field at fault, never another exception, and
imports code only from the dataset's own folder (features/<name>/)."""

from __future__ import annotations

import copy
import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

import features
from tasks.specs.dataset_spec import DatasetSpec, SpecError, parse_spec
from tasks.specs.datasets import DATASETS_ROOT
from tests.faults.fuzzing import BOUNDED

pytestmark = pytest.mark.faults

WHERE = "fuzz/dataset.yaml"
SPEC_TEXT = (DATASETS_ROOT / "credit_risk" / "dataset.yaml").read_text()
SPEC = yaml.safe_load(SPEC_TEXT)
FUZZ = settings(BOUNDED, max_examples=200)

FieldPath = tuple[str | int, ...]


def _paths(value: Any, at: FieldPath = ()) -> Iterator[FieldPath]:
    """Every field's path in a loaded document: dict keys and list indexes."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*at, key)
        yield from _paths(child, (*at, key))


PATHS = sorted(_paths(SPEC), key=lambda p: [str(k) for k in p])


def _get(doc: Any, path: FieldPath) -> Any:
    for key in path:
        doc = doc[key]
    return doc


DICT_PATHS = [p for p in [(), *PATHS] if isinstance(_get(SPEC, p), dict)]


def _dotted(path: FieldPath) -> str:
    return ".".join(str(k) for k in path)


def _parse(text: str) -> DatasetSpec | SpecError:
    """parse_spec's answer; any exception other than SpecError fails the test."""
    try:
        return parse_spec(text, WHERE)
    except SpecError as exc:
        assert str(exc).startswith(f"{WHERE}: "), exc
        return exc


def _names_field(error: SpecError, path: FieldPath, keys: tuple[str, ...] = ()) -> bool:
    """The message names the touched field: its path, its container, an ancestor of it at
    least two levels down (the object at fault), or the key's own name (a reference to it)."""
    body = str(error)[len(WHERE) + 2 :]
    dotted = [_dotted(path[:i]) for i in range(min(2, len(path)), len(path) + 1)]
    dotted.append(_dotted(path[:-1]))
    words = [k for k in (*path[-1:], *keys) if isinstance(k, str)]
    return any(d and d in body for d in dotted) or any(w in body for w in words)


# -- (a) arbitrary text ---------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSONISH = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
TOKENS = [
    "name", "credit_risk", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ", ", "'", '"', "? ",
    "&a ", "*a", "&b ", "*b", "<<: ", "!!binary ", "!!timestamp ", "!!int ", "!!float ",
    "!!set ", "!!omap ", "!!str ", "!!map ", "!!python/object/apply:os.system ", "!custom ",
    "2025-13-45", "2025-02-30 10:00:00", "2025-01-01", "~", ".nan", "-.inf", "0x1F", "0o17",
    "1_000", "1e999", "%YAML 1.1\n", "---\n", "...\n", "| ", "> ", "# c", "\t", "\x00", "\ufeff",
    "feature_tables", "transform", "features.credit_risk.transforms:customer_profile", "os:system",
]  # fmt: skip


@FUZZ
@given(
    st.text(max_size=300)
    | st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace"))
    | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    | st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
    | JSONISH.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
)
@example("a: 2025-13-45")  # PyYAML: ValueError from datetime, once escaped parse_spec
@example("0000-00-00")  # ValueError: year 0 (found by this test)
@example("a: !!int x")  # ValueError
@example("a: !!timestamp x")  # AttributeError
@example("[" * 5_000)  # RecursionError in PyYAML's composer
@example("&a [*a]")  # a list that holds itself
def test_any_text_is_a_spec_or_a_spec_error(text: str) -> None:
    _parse(text)


def test_yaml_alias_bombs_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(lines)  # 10**9 values from 9 lines
    with pytest.raises(SpecError, match=r"more than 100000 values"):
        parse_spec(bomb, WHERE)
    spec = copy.deepcopy(SPEC)
    args = spec["tables"]["customers"]["columns"]["age"]["checks"][0]["args"]
    args["max_value"] = "BOMB"
    text = "\n".join(lines) + "\n" + yaml.safe_dump(spec).replace("BOMB", "*a8")
    with pytest.raises(SpecError, match=r"more than 100000 values"):
        parse_spec(text, WHERE)
    omap = "\n".join(
        lines[:1]
        + [
            f"a{i}: &a{i} !!omap [{', '.join(f'k{j}: *a{i - 1}' for j in range(10))}]"
            for i in range(1, 9)
        ]
    )
    with pytest.raises(SpecError, match=r"more than 100000 values"):  # tuples inside
        parse_spec(omap, WHERE)


# -- (b) mutations of the real spec -----------------------------------------------------------

NEW_KEYS = st.from_regex(r"\Azz_[a-z_]{1,10}\Z")


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any, FieldPath, tuple[str, ...]]:
    """(kind, mutated document, touched path, new key names)."""
    doc = copy.deepcopy(SPEC)
    kind = draw(st.sampled_from(["delete", "retype", "rename", "add"]))
    if kind == "add":
        path = draw(st.sampled_from(DICT_PATHS))
        key = draw(NEW_KEYS)
        _get(doc, path)[key] = draw(JSONISH)
        return kind, doc, (*path, key), (key,)
    path = draw(st.sampled_from(PATHS))
    parent, key = _get(doc, path[:-1]), path[-1]
    if kind == "delete":
        del parent[key]
        return kind, doc, path, ()
    if kind == "retype":
        old = parent[key]
        new = draw(JSONISH.filter(lambda v: type(v) is not type(old)))
        parent[key] = new
        return kind, doc, path, ()
    if not isinstance(parent, dict):  # rename a list item: move it to the end
        parent.append(parent.pop(key))
        return kind, doc, path, ()
    new_key = draw(NEW_KEYS)
    parent[new_key] = parent.pop(key)
    return kind, doc, path, (new_key,)


@settings(FUZZ, max_examples=300)
@given(mutations())
def test_a_mutated_spec_fails_naming_the_field_it_touched(mutation) -> None:
    kind, doc, path, keys = mutation
    answer = _parse(yaml.safe_dump(doc, allow_unicode=True))
    if isinstance(answer, SpecError):
        assert _names_field(answer, path, keys), f"{kind} {_dotted(path)}: {answer}"


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # found by this module: a transform that breaks on its declared inputs (a KeyError or
        # TypeError out of parse_spec), a feature named as a request feature no more
        (("feature_tables", "transaction_windows", "inputs", 1), DELETE),
        (("request", "features"), DELETE),
        (("feature_tables", "customer_profile", "inputs"), ["transactions"]),
        (("feature_tables", "transaction_windows", "inputs"), ["transactions"]),
        # pandera's factories: re.error, and classmethods that are not checks at all
        (("tables", "customers", "columns", "region", "checks"), [{"check": "str_matches", "args": {"pattern": "("}}]),
        (("tables", "customers", "columns", "region", "checks"), [{"check": "register_backend", "args": {"type_": "x", "backend": "y"}}]),
        (("tables", "customers", "columns", "region", "checks"), [{"check": "from_builtin_check_name", "args": {}}]),
    ],
)  # fmt: skip
def test_regressions_found_by_fuzzing_name_the_field(path: FieldPath, value: Any) -> None:
    doc = copy.deepcopy(SPEC)
    if value is DELETE:
        del _get(doc, path[:-1])[path[-1]]
    else:
        _get(doc, path[:-1])[path[-1]] = value
    answer = _parse(yaml.safe_dump(doc))
    assert isinstance(answer, SpecError) and _names_field(answer, path), answer


# -- (c) code outside the dataset's folder ---------------------------------------------------

CODE_FIELDS = [
    ("feature_tables", "customer_profile", "transform"),
    ("feature_tables", "transaction_windows", "transform"),
    ("on_demand", "application_features", "transform"),
    ("generator",),
]
HOSTILE = [
    "os:system",
    "subprocess:run",
    "builtins:eval",
    "tasks.data.windows:trailing_windows",
    "tasks.specs.dataset_spec:parse_spec",
    "features.rides.transforms:driver_hourly",  # another dataset's module
    "features.rides.generator:generate",
    "features.credit_risk.transforms:trailing_windows",  # imported there from tasks
    "features.credit_risk.generator:GenerateOptions",
    "features.credit_risk.transforms:pd",
    "features.credit_risk.transforms:__builtins__",
    "features.credit_risk.transforms.os:system",
    "features:repo",
    "features.repo:x",
    "features.__init__:x",
    ".credit_risk.transforms:customer_profile",
    "features..credit_risk.transforms:customer_profile",
    "features.credit_risk..transforms:customer_profile",
    "features.credit_risk.:customer_profile",
    "..tasks:x",
    "features.credit_risk.transforms:customer_profile:x",
    "features/credit_risk/transforms:customer_profile",
    "features.credit_risk.__pycache__:x",
]
PART = st.from_regex(r"\A[A-Za-z_0-9]{0,8}\Z")
REFERENCES = st.sampled_from(HOSTILE) | st.builds(
    lambda head, parts, attr: f"{head}{'.'.join(parts)}:{attr}",
    st.sampled_from(["", ".", "..", "tasks.", "os.", "features.", "features.rides.", "features.credit_risk"]),
    st.lists(PART, max_size=3),
    PART,
)  # fmt: skip


@FUZZ
@given(st.sampled_from(CODE_FIELDS), REFERENCES)
def test_code_outside_the_dataset_folder_is_refused(field: FieldPath, reference: str) -> None:
    before = set(sys.modules)
    doc = copy.deepcopy(SPEC)
    _get(doc, field[:-1])[field[-1]] = reference
    answer = _parse(yaml.safe_dump(doc))
    allowed = reference.startswith("features.credit_risk.") and reference.count(":") == 1
    if not allowed:  # nothing of it was imported, and the refusal names the field
        assert isinstance(answer, SpecError), reference
        assert _dotted(field) in str(answer), answer
        module = reference.split(":")[0].split(".")
        named = {".".join(module[:i]) for i in range(1, len(module) + 1)}
        imported = {m for m in named & set(sys.modules) - before if m != "features.credit_risk"}
        assert not imported, f"{reference} imported {imported}"
    else:  # a name in the dataset's folder: fine if it exists and fits, a SpecError otherwise
        assert isinstance(answer, DatasetSpec) or _dotted(field) in str(answer), answer


# names inside the dataset's folder that are not its own code: imported there, or no object
INSIDE_BUT_NOT_ITS_CODE = [
    "features.credit_risk.transforms:trailing_windows",
    "features.credit_risk.generator:GenerateOptions",
    "features.credit_risk.transforms:pd",
    "features.credit_risk.transforms:__builtins__",
    "features.credit_risk.transforms.os:system",
    "features.credit_risk.__pycache__:x",
]


@pytest.mark.parametrize("reference", INSIDE_BUT_NOT_ITS_CODE)
def test_names_only_imported_into_the_dataset_folder_are_refused(reference: str) -> None:
    doc = copy.deepcopy(SPEC)
    doc["feature_tables"]["customer_profile"]["transform"] = reference
    answer = _parse(yaml.safe_dump(doc))
    assert isinstance(answer, SpecError), reference
    assert "feature_tables.customer_profile.transform" in str(answer), answer


@pytest.fixture
def extra_root(tmp_path: Path) -> Iterator[Path]:
    """A second folder of the `features` package, for dataset copies; removed after."""
    root = tmp_path / "features_ext"
    root.mkdir()
    features.__path__.append(str(root))
    try:
        yield root
    finally:
        features.__path__.remove(str(root))
        for name in [m for m in sys.modules if m.startswith("features.fuzz_")]:
            del sys.modules[name]
            if name.count(".") == 1 and hasattr(features, name.split(".")[1]):
                delattr(features, name.split(".")[1])
        importlib.invalidate_caches()


def _copy(root: Path, name: str) -> tuple[Path, str]:
    """A copy of credit_risk as dataset `name` under `root`: its folder and its spec text."""
    folder = root / name
    shutil.copytree(
        DATASETS_ROOT / "credit_risk",
        folder,
        ignore=shutil.ignore_patterns("*.yaml", "__pycache__"),
    )
    importlib.invalidate_caches()
    text = SPEC_TEXT.replace("name: credit_risk", f"name: {name}")
    return folder, text.replace("features.credit_risk.", f"features.{name}.")


def _outside(tmp_path: Path) -> Path:
    """A module outside every dataset folder that leaves a mark if it is ever imported."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    mark = tmp_path / "imported.mark"
    code = f"open({str(mark)!r}, 'w').close()\n\ndef customer_profile(*a):\n    return None\n"
    (outside / "__init__.py").write_text(code)
    (outside / "evil.py").write_text(code)
    return outside


def test_a_copy_of_the_dataset_loads_from_its_own_folder(extra_root: Path) -> None:
    _, text = _copy(extra_root, "fuzz_copy")
    spec = parse_spec(text, WHERE)
    assert spec.transform_fn("customer_profile").__module__ == "features.fuzz_copy.transforms"


def test_a_spec_under_another_name_loads_the_code_folder_it_names() -> None:
    text = SPEC_TEXT.replace("name: credit_risk", "name: credit_in_a_block")
    with pytest.raises(SpecError, match="outside dataset 'credit_in_a_block'"):
        parse_spec(text, WHERE)
    spec = parse_spec(text, WHERE, code="credit_risk")  # on-demand transforms included
    assert spec.on_demand and spec.name == "credit_in_a_block"


@pytest.mark.parametrize("trick", ["module", "package", "dataset_folder", "other_dataset"])
def test_symlinks_out_of_the_dataset_folder_are_refused_before_import(
    extra_root: Path, tmp_path: Path, trick: str
) -> None:
    outside = _outside(tmp_path)
    folder, text = _copy(extra_root, f"fuzz_{trick}")
    ref = f"features.fuzz_{trick}.transforms:customer_profile"
    if trick == "module":  # a module file that is a link to one outside
        (folder / "transforms.py").unlink()
        (folder / "transforms.py").symlink_to(outside / "evil.py")
    elif trick == "package":  # a subpackage that is a link to a folder outside
        (folder / "sub").symlink_to(outside, target_is_directory=True)
        text = text.replace(ref, f"features.fuzz_{trick}.sub.evil:customer_profile")
    elif trick == "dataset_folder":  # the dataset's folder itself a link to a copy elsewhere
        shutil.move(folder, tmp_path / "moved")
        folder.symlink_to(tmp_path / "moved", target_is_directory=True)
    else:  # a module file that is a link to another dataset's module
        (folder / "transforms.py").unlink()
        (folder / "transforms.py").symlink_to(DATASETS_ROOT / "rides" / "transforms.py")
    importlib.invalidate_caches()
    with pytest.raises(SpecError, match=r"feature_tables\.customer_profile\.transform.*outside"):
        parse_spec(text, WHERE)
    assert not (tmp_path / "imported.mark").exists(), "the outside module was imported"
