"""One data-access layer: every step reads and writes named tables through `DataAccess`, whose
back end (memory, a folder of CSV files, a SQLite file) is a setting, not the step's concern.

A table is columns and rows of numbers. A dataset's name and its columns are identifiers
(`[a-z_][a-z0-9_]*`): safe as a file name and as a quoted SQL name. A step gets a `Handle`,
which refuses any dataset the step did not declare: the declaration in the DAG is the truth.
"""

import csv
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"[a-z_][a-z0-9_]*")


class AccessError(LookupError):
    """A dataset that is missing, misnamed, or not declared by the step asking for it."""


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[float, ...]]

    def __post_init__(self) -> None:
        for column in self.columns:
            _check_name(column, "column")
        if len(set(self.columns)) != len(self.columns):
            raise AccessError(f"duplicate column names: {self.columns}")
        width = len(self.columns)
        for index, row in enumerate(self.rows):
            if len(row) != width:
                raise AccessError(f"row {index} has {len(row)} values for {width} columns")

    def column(self, name: str) -> list[float]:
        if name not in self.columns:
            raise AccessError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        at = self.columns.index(name)
        return [row[at] for row in self.rows]


def _check_name(name: str, what: str = "dataset") -> str:
    if not NAME.fullmatch(name):
        raise AccessError(f"{what} name {name!r} is not [a-z_][a-z0-9_]*")
    return name


class DataAccess(ABC):
    """The one interface every step's data goes through."""

    def read(self, name: str) -> Table:
        table = self._read(_check_name(name))
        if table is None:
            raise AccessError(f"no dataset {name!r} in {self}")
        return table

    def write(self, name: str, table: Table) -> None:
        self._write(_check_name(name), table)

    def handle(self, step: str, reads: Iterable[str], writes: Iterable[str]) -> "Handle":
        return Handle(self, step, frozenset(reads), frozenset(writes))

    @abstractmethod
    def _read(self, name: str) -> Table | None: ...

    @abstractmethod
    def _write(self, name: str, table: Table) -> None: ...


class MemoryAccess(DataAccess):
    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}

    def __str__(self) -> str:
        return "memory"

    def _read(self, name: str) -> Table | None:
        return self.tables.get(name)

    def _write(self, name: str, table: Table) -> None:
        self.tables[name] = Table(table.columns, list(table.rows))


class CsvAccess(DataAccess):
    """One `<name>.csv` per dataset in a folder; the header is the columns."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __str__(self) -> str:
        return f"csv folder {self.folder}"

    def _read(self, name: str) -> Table | None:
        path = self.folder / f"{name}.csv"
        if not path.exists():
            return None
        with path.open(newline="") as file:
            header, *rows = list(csv.reader(file))
        return Table(tuple(header), [tuple(float(v) for v in row) for row in rows])

    def _write(self, name: str, table: Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.csv"
        partial = path.with_suffix(".csv.partial")
        with partial.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(table.columns)
            writer.writerows([repr(float(v)) for v in row] for row in table.rows)
        partial.replace(path)  # a reader sees the old table or the new one, never half


class SqliteAccess(DataAccess):
    """One table per dataset in a SQLite file, replaced whole in one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return f"sqlite {self.path}"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(self.path)

    def _read(self, name: str) -> Table | None:
        with self._connect() as db:
            columns = tuple(r[1] for r in db.execute(f'PRAGMA table_info("{name}")'))
            if not columns:
                return None
            rows = db.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
        return Table(columns, [tuple(float(v) for v in row) for row in rows])

    def _write(self, name: str, table: Table) -> None:
        columns = ", ".join(f'"{c}" REAL' for c in table.columns)
        marks = ", ".join("?" for _ in table.columns)
        db = self._connect()
        try:
            with db:  # one transaction: the old table or the new one
                db.execute(f'DROP TABLE IF EXISTS "{name}"')
                db.execute(f'CREATE TABLE "{name}" ({columns})')
                db.executemany(f'INSERT INTO "{name}" VALUES ({marks})', table.rows)
        finally:
            db.close()


def open_store(backend: str, store_dir: str | Path) -> DataAccess:
    """The back end a setting names: memory, csv (a folder) or sqlite (a file) under store_dir."""
    if backend == "memory":
        return MemoryAccess()
    if backend == "csv":
        return CsvAccess(Path(store_dir) / "csv")
    if backend == "sqlite":
        return SqliteAccess(Path(store_dir) / "datasets.db")
    raise AccessError(f"unknown back end {backend!r}: memory, csv or sqlite")


@dataclass(frozen=True)
class Handle:
    """A step's view of the store: only the datasets it declared."""

    store: DataAccess
    step: str
    reads: frozenset[str]
    writes: frozenset[str]

    def read(self, name: str) -> Table:
        if name not in self.reads:
            raise AccessError(
                f"step {self.step!r} reads {name!r}, which it does not declare "
                f"(reads: {', '.join(sorted(self.reads)) or 'nothing'})"
            )
        return self.store.read(name)

    def write(self, name: str, table: Table) -> None:
        if name not in self.writes:
            raise AccessError(
                f"step {self.step!r} writes {name!r}, which it does not declare "
                f"(writes: {', '.join(sorted(self.writes)) or 'nothing'})"
            )
        self.store.write(name, table)
