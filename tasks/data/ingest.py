"""Find and read raw input files from a local path or any fsspec URI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import fsspec
import pandas as pd
import pyarrow as pa

from tasks.data.raw_checks import DataValidationError

Format = Literal["parquet", "csv"]


def join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def list_files(uri: str, fmt: Format) -> list[str]:
    """Every `fmt` file at `uri` (a file, or a folder searched recursively), sorted."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise DataValidationError(f"{uri}: path does not exist")
    found = [path] if fs.isfile(path) else fs.find(path)
    files = sorted(p for p in found if p.endswith(f".{fmt}"))
    if not files:
        raise DataValidationError(f"{uri}: no .{fmt} files found")
    return [fs.unstrip_protocol(f) if "://" in uri else f for f in files]


def read_file(uri: str, fmt: Format, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read one file; an unreadable or empty file raises an error naming it."""
    try:
        with fsspec.open(uri, "rb") as fh:
            if fmt == "parquet":
                frame = pd.read_parquet(fh, columns=list(columns) if columns else None)
            else:
                frame = pd.read_csv(fh, usecols=list(columns) if columns else None)
    except FileNotFoundError as exc:
        raise DataValidationError(f"{uri}: file does not exist") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{uri}: file is empty") from exc
    except ValueError as exc:
        if columns and ("usecols" in str(exc).lower() or "No match for FieldRef" in str(exc)):
            raise DataValidationError(
                f"{uri}: rule required_column: missing one of {list(columns)} ({exc})"
            ) from exc
        raise DataValidationError(f"{uri}: cannot parse as {fmt}: {exc}") from exc
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{uri}: cannot parse as {fmt}: {exc}") from exc
    if frame.empty:
        raise DataValidationError(f"{uri}: file is empty (no rows)")
    return frame
