"""Where a sweep keeps its files, and which MLflow store goes with it: one rule for sweep.run and
sweep.aggregate."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_STORAGE", "StorageError", "SweepStorage", "resolve_storage"]

DEFAULT_STORAGE = "sweeps"


class StorageError(RuntimeError):
    """The storage or its tracking store cannot be used; the message is one line."""


class SweepStorage:
    """The storage of a sweep: a local folder or a URI that pyarrow understands (``s3://bucket/path``)."""

    def __init__(self, location: str) -> None:
        self.local = None if "://" in location else Path(location).expanduser().resolve()
        self.location = location if self.local is None else str(self.local)

    def path(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}"

    def read_text(self, name: str) -> str | None:
        """The text of file ``name``, None when it does not exist."""
        import pyarrow.fs

        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(self.path(name))
            if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
                return None
            with filesystem.open_input_stream(path) as stream:
                return stream.read().decode()
        except (OSError, ValueError) as error:  # pyarrow's errors for unknown schemes, credentials, network
            raise StorageError(f"cannot read the storage {self.location}: {error}") from None

    def write_text(self, name: str, text: str) -> None:
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(self.path(name))
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())

    def tracking_uri(self, explicit: str | None) -> str:
        """``explicit``, else ``$MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<storage>/mlflow.db``."""
        uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
        if uri is not None:
            return uri
        if self.local is None:
            raise StorageError(f"with a remote --storage ({self.location}), pass --tracking-uri (an MLflow server)")
        return f"sqlite:///{self.local / 'mlflow.db'}"


def resolve_storage(explicit: str | None) -> SweepStorage:
    """``--storage``, else ``$SWEEP_STORAGE``, else ``./sweeps``."""
    return SweepStorage(explicit or os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE)
