"""Where a sweep keeps its files, and which MLflow store goes with it: one rule for sweep.run,
sweep.evaluate and sweep.aggregate."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from pathlib import Path

__all__ = [
    "ARTIFACT_FOLDER",
    "DEFAULT_STORAGE",
    "STORAGE_PLACEHOLDER",
    "StorageError",
    "SweepStorage",
    "folder_problem",
    "resolve_storage",
    "take_credentials",
    "without_credentials",
]

DEFAULT_STORAGE = "sweeps"
ARTIFACT_FOLDER = "mlartifacts"  # the runs' artifacts, beside the sweeps (and mlflow.db) in their storage
STORAGE_PLACEHOLDER = "{storage}"  # the storage's own path, in what the sweep's record holds


class StorageError(RuntimeError):
    """The storage or its tracking store cannot be used; the message is one line."""


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in local folder ``folder`` (created with its parents if absent), or None.

    Nothing is left behind: the nearest existing ancestor of ``folder`` must be a directory in which this
    process may create one (tried with an empty directory, removed at once, since permission bits do not
    tell for root or for /proc and the like), and ``folder`` itself, if it exists, a directory.
    """
    try:
        if folder.exists() and not folder.is_dir():
            return f"{folder} is not a directory"
        existing = folder
        while not existing.exists():
            existing = existing.parent
    except OSError as error:  # a folder on the way that this process may not look into
        return f"cannot look into {folder} ({error.strerror or error})"
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweep-check-", dir=existing))
    except OSError as error:
        return f"cannot create a folder in {existing} ({error.strerror or error})"
    return None


def _record_name(sweep: str) -> str:
    return f"{sweep}.sweep.json"


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

    def folders(self, name: str) -> list[str]:
        """The names of the folders in folder ``name``, sorted; none when it does not exist."""
        import pyarrow.fs

        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(self.path(name))
            if filesystem.get_file_info(path).type != pyarrow.fs.FileType.Directory:
                return []
            entries = filesystem.get_file_info(pyarrow.fs.FileSelector(path))
        except (OSError, ValueError) as error:
            raise StorageError(f"cannot read the storage {self.location}: {error}") from None
        return sorted(entry.base_name for entry in entries if entry.type == pyarrow.fs.FileType.Directory)

    def delete(self, name: str) -> None:
        """Remove file ``name``, if it exists."""
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(self.path(name))
        if filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            filesystem.delete_file(path)

    def has_record(self, sweep: str) -> bool:
        """Whether sweep ``sweep`` was started here (its record exists, readable or not)."""
        return self.read_text(_record_name(sweep)) is not None

    def read_record(self, sweep: str) -> dict | None:
        """The record of started sweep ``sweep`` (``<sweep>.sweep.json``, written by :meth:`write_record`),
        None when it was never started; StorageError (one line) when the file is not such a record."""
        text = self.read_text(_record_name(sweep))
        if text is None:
            return None
        try:
            record = json.loads(text)
        except ValueError as error:
            raise StorageError(f"{self.path(_record_name(sweep))} is damaged: {error}") from None
        for key, kind in (("tracking_uri", str), ("trial_keys", list)):
            if not isinstance(record, dict) or key not in record:
                raise StorageError(f"{self.path(_record_name(sweep))} is damaged: it has no {key}")
            if not isinstance(record[key], kind):
                raise StorageError(f"{self.path(_record_name(sweep))} is damaged: its {key} is no {kind.__name__}")
        return record

    def write_record(self, sweep: str, record: dict) -> None:
        """Record that sweep ``sweep`` started: its trials, tracking store and launch (see sweep.run)."""
        self.write_text(_record_name(sweep), json.dumps(record, indent=1))

    def check_writable(self) -> None:
        """Raise StorageError when a local storage folder cannot be written (see :func:`folder_problem`);
        nothing is created. A remote storage is checked when it is read."""
        if self.local is not None and (problem := folder_problem(self.local)) is not None:
            raise StorageError(f"cannot use the storage {self.location}: {problem}")

    @property
    def artifact_root(self) -> str:
        """Where the MLflow runs of the sweeps kept here keep their artifacts (URI): ``mlartifacts`` beside
        the sweeps, on a local folder or on S3, never the folder a command runs in (MLflow's default)."""
        return (self.local / ARTIFACT_FOLDER).as_uri() if self.local is not None else self.path(ARTIFACT_FOLDER)

    def portable(self, uri: str) -> str:
        """``uri`` as the sweep's record keeps it: with :data:`STORAGE_PLACEHOLDER` in place of this local
        storage's path, so that the storage can be moved or copied. :meth:`resolve` undoes it."""
        if self.local is None:
            return uri
        for scheme in ("sqlite:///", "file://"):
            uri = uri.replace(f"{scheme}{self.local}/", f"{scheme}{STORAGE_PLACEHOLDER}/", 1)
        return uri

    def resolve(self, uri: str) -> str:
        """A recorded ``uri`` with this storage's path in place of :data:`STORAGE_PLACEHOLDER`."""
        return uri if self.local is None else uri.replace(STORAGE_PLACEHOLDER, str(self.local))

    def tracking_uri(self, explicit: str | None, recorded: str | None = None) -> str:
        """``explicit``, else ``$MLFLOW_TRACKING_URI``, else ``recorded`` (the store a continued sweep started
        with, as its record keeps it), else the embedded ``sqlite:///<storage>/mlflow.db``; a server's
        credentials taken out of it (:func:`take_credentials`)."""
        recorded = None if recorded is None else self.resolve(recorded)
        uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or recorded or self.embedded_store
        if uri is None:
            raise StorageError(f"with a remote --storage ({self.location}), pass --tracking-uri (an MLflow server)")
        return take_credentials(uri)

    @property
    def embedded_store(self) -> str | None:
        """The URI of the MLflow store kept in a local storage, ``sqlite:///<storage>/mlflow.db``; None for a
        remote storage."""
        return None if self.local is None else f"sqlite:///{self.local / 'mlflow.db'}"


def _is_postgres(uri: str) -> bool:
    return uri.partition("://")[0].partition("+")[0] == "postgresql"


def _split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(``uri`` without its password, the user taken out with it, the password) for an
    ``http(s)://USER:PASSWORD@HOST`` URI (user and password out) and a ``postgresql://USER:PASSWORD@HOST`` one
    (the password out, the user kept: the database needs it, and it is no secret); (``uri``, None, None) for
    any other, a URL that does not parse included."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # no URL at all: the pre-flight's check of the store says so
        return uri, None, None
    if parts.username is None or not (parts.scheme in ("http", "https") or _is_postgres(uri)):
        return uri, None, None
    host = parts.netloc.rpartition("@")[2]
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    if _is_postgres(uri):
        return (
            urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.netloc.partition(':')[0]}@{host}")),
            None,
            password,
        )
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), urllib.parse.unquote(parts.username), password


def without_credentials(uri: str) -> str:
    """``uri`` without the user and password of an ``http(s)://USER:PASSWORD@HOST...`` URI, without the
    password of a ``postgresql://USER:PASSWORD@HOST...`` one."""
    return _split_credentials(uri)[0]


def take_credentials(uri: str) -> str:
    """:func:`without_credentials`, the user and password going into ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` of this process, where MLflow's client takes them from (a PostgreSQL
    password into ``PGPASSWORD``, where the database driver, libpq, takes it from). Called where a command
    line reads the URI, so that no line it prints, no file it writes (the sweep's record, the runs) and no
    error message holds the password."""
    bare, user, password = _split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password is not None:
        os.environ["PGPASSWORD" if _is_postgres(uri) else "MLFLOW_TRACKING_PASSWORD"] = password
    return bare


def resolve_storage(explicit: str | None) -> SweepStorage:
    """``--storage``, else ``$SWEEP_STORAGE``, else ``./sweeps``."""
    return SweepStorage(explicit or os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE)
