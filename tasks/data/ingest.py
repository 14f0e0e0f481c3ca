"""Find and read raw input files from a local path or any fsspec URI."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import pandas as pd
import pyarrow as pa
from pydantic import SecretStr

from tasks.data.raw_checks import DataValidationError

Format = Literal["parquet", "csv"]


@dataclass(frozen=True)
class SourceAccess:
    """How to open the raw source (the DataSource block's plain form, without uri and format).

    `storage_options` go to fsspec as they are; the secret goes into the option `secret_field`
    names (s3fs: `secret`, with `key` in the options; abfs: `account_key`; gcs: `token`). It
    stays a SecretStr, masked in reprs and logs, until `fsspec_options()` opens a file system.
    """

    storage_options: dict[str, Any] = field(default_factory=dict)
    secret: SecretStr | None = None
    secret_field: str = "secret"

    def fsspec_options(self) -> dict[str, Any]:
        """The options with the secret in clear: call only where a file system is opened."""
        options = dict(self.storage_options)
        if self.secret is not None:
            options[self.secret_field] = self.secret.get_secret_value()
        return options


DEFAULT_ACCESS = SourceAccess()


class SourceAccessError(PermissionError):
    """The store refused the credentials for a URI (the message names it, never the secret)."""


@contextmanager
def _refusals_named(uri: str) -> Iterator[None]:
    """Turn a store's refusal into SourceAccessError naming `uri`.

    fsspec stores translate a 403 into PermissionError; botocore's NoCredentialsError (no key
    found at all) is not an OSError, hence the match on its name.
    """
    try:
        yield
    except SourceAccessError:
        raise
    except Exception as exc:
        if not (
            isinstance(exc, PermissionError) or type(exc).__name__.endswith("CredentialsError")
        ):
            raise
        raise SourceAccessError(
            f"{uri}: credentials refused by the store ({type(exc).__name__}: {exc}); check the "
            "DataSource block's storage_options, secret and secret_field"
        ) from exc


def join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def list_files(uri: str, fmt: Format, access: SourceAccess = DEFAULT_ACCESS) -> list[str]:
    """Every `fmt` file at `uri` (a file, or a folder searched recursively), sorted."""
    with _refusals_named(uri):
        fs, path = fsspec.core.url_to_fs(uri, **access.fsspec_options())
        if not fs.exists(path):
            raise DataValidationError(f"{uri}: path does not exist")
        found = [path] if fs.isfile(path) else fs.find(path)
    files = sorted(p for p in found if p.endswith(f".{fmt}"))
    if not files:
        raise DataValidationError(f"{uri}: no .{fmt} files found")
    return [fs.unstrip_protocol(f) if "://" in uri else f for f in files]


def read_file(
    uri: str,
    fmt: Format,
    columns: Sequence[str] | None = None,
    access: SourceAccess = DEFAULT_ACCESS,
) -> pd.DataFrame:
    """Read one file; an unreadable or empty file raises an error naming it."""
    try:
        with _refusals_named(uri), fsspec.open(uri, "rb", **access.fsspec_options()) as fh:
            if fmt == "parquet":
                frame = pd.read_parquet(fh, columns=list(columns) if columns else None)
            else:
                frame = pd.read_csv(fh, usecols=list(columns) if columns else None)
    except SourceAccessError:
        raise
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
