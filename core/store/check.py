"""Is this file's schema exactly what Kestrel creates?  Read-only checks run on open, before
anything is written, and the removal of SQL that Kestrel did not create (with consent).

Qt-free.  :func:`inspect` compares a file's ``sqlite_master`` with the layout that
:data:`core.store.schema.METADATA` creates (built once in an in-memory database, so the two are
read back the same way): every table with its columns (``PRAGMA table_xinfo``: name, type,
NOT NULL, primary key, default), its foreign keys, its CHECK constraints and collations
(from its CREATE statement), every index (columns, order, collation, unique,
partial) and SQLite's automatic indexes.

* A Kestrel table, column, foreign key or index that is missing or different is a
  *problem*: the file is damaged (``ProjectCorruptError``).
* Anything Kestrel never creates -- triggers, views, virtual tables, extra tables, extra
  indexes, generated columns -- is *foreign*: a project from elsewhere must not run SQL
  Kestrel did not write (``ProjectForeignSqlError``).  :func:`strip` drops it.
* An extra plain column in a Kestrel table (nullable or with a default) is tolerated: it
  cannot run anything and Kestrel's inserts still work.  SQLite's own internal tables
  (``sqlite_sequence``, ``sqlite_stat1``…) are allowed.

Every read goes through ``pragma_*`` table-valued functions with bound parameters, so a
hostile object name is never spliced into SQL; nothing here executes a view or fires a
trigger.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from core.store import schema as db

#: Columns each layout version added: a file of an older version must lack them.
ADDED_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"runs": ("owner_host", "owner_pid")},
    3: {"items": ("shared_n",)},
}
#: Tables (with their indexes) each layout version added: a file of an older version lacks them.
ADDED_TABLES: dict[int, tuple[str, ...]] = {
    3: ("item_shared", "track_lod"),
    4: ("item_blocks",),
}


class Column(NamedTuple):
    name: str
    type: str
    notnull: bool
    pk: int
    hidden: int


@dataclass(frozen=True)
class TableShape:
    columns: dict[str, Column]
    foreign_keys: frozenset[tuple[str, str, str, str, str]]  # (table, from, to, on_update, on_delete)
    defaulted: frozenset[str] = frozenset()  # columns with a DEFAULT
    constraints: tuple[str, ...] = ()  # CHECK expressions and COLLATE clauses, normalised
    defaults: tuple[tuple[str, str], ...] = ()  # (column, DEFAULT expression)
    computed: frozenset[str] = frozenset()  # columns whose DEFAULT is an expression, not a literal


@dataclass(frozen=True)
class IndexShape:
    table: str
    unique: bool
    origin: str
    partial: bool
    keys: tuple[tuple[int, str | None, bool, str | None], ...]  # (cid, name, desc, collation)


@dataclass(frozen=True)
class Layout:
    tables: dict[str, TableShape]
    indexes: dict[str, IndexShape]


class Foreign(NamedTuple):
    """One object Kestrel did not create; ``what`` is the sentence fragment shown."""

    kind: str  # trigger | view | virtual table | table | index | generated column
    name: str
    table: str
    what: str


@dataclass(frozen=True)
class Findings:
    problems: list[str]  # Kestrel objects missing or changed
    foreign: list[Foreign]  # objects Kestrel did not create


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_virtual(sql: str | None) -> bool:
    return isinstance(sql, str) and " ".join(sql.split()[:3]).upper() == "CREATE VIRTUAL TABLE"


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|\w+|\S")


_LITERAL = re.compile(r"'(?:[^']|'')*'|[-+]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|0x[0-9a-f]+|x'[0-9a-f]*'"
                      r"|null|true|false|current_(?:time|date|timestamp)", re.IGNORECASE)


def _constraints(sql: object) -> tuple[str, ...]:
    """The CHECK expressions and COLLATE clauses of a CREATE TABLE statement, each as one
    normalised string (keywords and names lower-cased, string literals kept), sorted: what
    pragma_table_xinfo does not show, yet changes what Kestrel's writes and lookups do."""
    if not isinstance(sql, str):
        return ()
    tokens = _TOKEN.findall(sql)
    norm = [t if t.startswith("'") else t.lower() for t in tokens]
    found: list[str] = []
    i = 0
    while i < len(norm):
        if norm[i] == "check" and i + 1 < len(norm) and norm[i + 1] == "(":
            depth, j = 0, i + 1
            while j < len(norm):
                depth += {"(": 1, ")": -1}.get(norm[j], 0)
                if depth == 0:
                    break
                j += 1
            found.append("check " + " ".join(norm[i + 1:j + 1]))
            i = j
        elif norm[i] == "collate" and i + 1 < len(norm):
            found.append("collate " + norm[i + 1].strip('"`[]'))
            i += 1
        i += 1
    return tuple(sorted(found))


def _table_shape(conn: sqlite3.Connection, table: str, sql: object = None) -> TableShape:
    cols, defaulted, defaults, computed = {}, set(), [], set()
    for _cid, name, ctype, notnull, dflt, pk, hidden in conn.execute(
            "SELECT cid, name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?)", (table,)):
        cols[str(name)] = Column(str(name), str(ctype or "").upper(), bool(notnull), int(pk), int(hidden))
        if dflt is not None:
            defaulted.add(str(name))
            defaults.append((str(name), " ".join(_TOKEN.findall(str(dflt)))))
            if not _LITERAL.fullmatch(str(dflt).strip()):
                computed.add(str(name))
    pks = [c for c in cols.values() if c.pk]
    if len(pks) == 1 and pks[0].type == "INTEGER":  # the rowid: never NULL, whether declared or not
        cols[pks[0].name] = pks[0]._replace(notnull=True)
    fks = frozenset(
        (str(t), str(f), str(to), str(up).upper(), str(de).upper()) for t, f, to, up, de in conn.execute(
            "SELECT \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?)", (table,)))
    return TableShape(cols, fks, frozenset(defaulted), _constraints(sql), tuple(sorted(defaults)),
                      frozenset(computed))


def _index_shape(conn: sqlite3.Connection, table: str, index: str) -> IndexShape | None:
    row = conn.execute("SELECT \"unique\", origin, partial FROM pragma_index_list(?) WHERE name = ?",
                       (table, index)).fetchone()
    if row is None:
        return None
    keys = tuple((int(cid), None if name is None else str(name), bool(desc), None if coll is None else str(coll))
                 for cid, name, desc, coll in conn.execute(
                     "SELECT cid, name, \"desc\", coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno",
                     (index,)))
    return IndexShape(table, bool(row[0]), str(row[1]), bool(row[2]), keys)


def read_layout(conn: sqlite3.Connection) -> tuple[Layout, list[Foreign]]:
    """The file's tables and indexes, and the objects no Kestrel layout ever has
    (triggers, views, virtual tables).  Reads only."""
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
    foreign: list[Foreign] = []
    virtual: set[str] = set()
    tables: dict[str, TableShape] = {}
    for kind, name, tbl, sql in objects:
        name, tbl = str(name), str(tbl)
        if kind == "trigger":
            foreign.append(Foreign("trigger", name, tbl, f"trigger '{name}' on {tbl}"))
        elif kind == "view":
            foreign.append(Foreign("view", name, tbl, f"view '{name}'"))
        elif kind == "table" and _is_virtual(sql):
            virtual.add(name)
            foreign.append(Foreign("virtual table", name, tbl, f"virtual table '{name}'"))
        elif kind == "table" and not name.lower().startswith("sqlite_"):
            tables[name] = _table_shape(conn, name, sql)
    indexes: dict[str, IndexShape] = {}
    for kind, name, tbl, _sql in objects:
        if kind == "index" and str(tbl) in tables:
            shape = _index_shape(conn, str(tbl), str(name))
            if shape is not None:
                indexes[str(name)] = shape
    return Layout(tables, indexes), foreign


@cache
def _current() -> Layout:
    """The layout this build creates, read back from an in-memory database."""
    dialect = sqlite_dialect.dialect()
    mem = sqlite3.connect(":memory:")
    try:
        for table in db.METADATA.sorted_tables:
            mem.execute(str(CreateTable(table).compile(dialect=dialect)))
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                mem.execute(str(CreateIndex(index).compile(dialect=dialect)))
        layout, _ = read_layout(mem)
        return layout
    finally:
        mem.close()


def expected(version: int) -> Layout | None:
    """The layout of a file of ``version`` (None: a version this build knows nothing about)."""
    if version < 1:
        return None
    layout = _current()  # newer (only in tests that pretend a newer build) or current: this build's
    drop = {t: {c for v, added in ADDED_COLUMNS.items() if v > version for c in added.get(t, ())}
            for t in layout.tables}
    later = {t for v, added in ADDED_TABLES.items() if v > version for t in added}
    return Layout({t: TableShape({n: c for n, c in s.columns.items() if n not in drop[t]}, s.foreign_keys,
                                 s.defaulted, s.constraints, tuple(d for d in s.defaults if d[0] not in drop[t]))
                   for t, s in layout.tables.items() if t not in later},
                  {n: i for n, i in layout.indexes.items() if i.table not in later})


def compare(have: Layout, foreign: list[Foreign], want: Layout | None) -> Findings:
    """What is missing or changed (problems) and what Kestrel did not create (foreign)."""
    problems: list[str] = []
    foreign = list(foreign)
    if want is None:  # unknown version: only the objects no layout has are judged
        return Findings(problems, foreign)
    for name, shape in want.tables.items():
        got = have.tables.get(name)
        if got is None:
            problems.append(f"the table '{name}' is missing")
            continue
        for col in shape.columns.values():
            mine = got.columns.get(col.name)
            if mine is None:
                problems.append(f"the column '{name}.{col.name}' is missing")
            elif mine != col:
                problems.append(f"the column '{name}.{col.name}' was changed")
        for col in got.columns.values():
            if col.name in shape.columns:
                continue
            if col.hidden:
                foreign.append(Foreign("generated column", col.name, name, f"generated column '{name}.{col.name}'"))
        extra_required = [c.name for c in got.columns.values()
                          if c.name not in shape.columns and not c.hidden and c.notnull and not c.pk
                          and c.name not in got.defaulted]
        for cname in extra_required:
            problems.append(f"the table '{name}' has an extra required column '{cname}'")
        for cname in sorted(got.computed - set(shape.columns)):  # evaluated by each of Kestrel's inserts
            problems.append(f"the table '{name}' has an extra column '{cname}' with a computed default")
        if got.foreign_keys != shape.foreign_keys:
            problems.append(f"the links (foreign keys) of the table '{name}' were changed")
        if got.constraints != shape.constraints:
            problems.append(f"the rules (CHECK constraints or collations) of the table '{name}' were changed")
        if [d for d in got.defaults if d[0] in shape.columns] != list(shape.defaults):
            problems.append(f"the default values of the table '{name}' were changed")
    for name, table in have.tables.items():
        if name not in want.tables:
            foreign.append(Foreign("table", name, name, f"table '{name}'"))
    for name, index in want.indexes.items():
        got_index = have.indexes.get(name)
        if got_index is None:
            if index.table in have.tables:
                problems.append(f"the index '{name}' is missing")
        elif got_index != index:
            problems.append(f"the index '{name}' was changed")
    for name, index in have.indexes.items():
        if name in want.indexes or index.table not in want.tables:
            continue  # an extra table's indexes go with it
        if name.lower().startswith("sqlite_autoindex_"):
            problems.append(f"the table '{index.table}' has an extra unique constraint")
        else:
            foreign.append(Foreign("index", name, index.table, f"index '{name}' on {index.table}"))
    return Findings(problems, foreign)


def inspect(conn: sqlite3.Connection, version: int) -> Findings:
    """Compare the open file with the layout of its ``version``.  Reads only."""
    have, foreign = read_layout(conn)
    return compare(have, foreign, expected(version))


class Damaged(Exception):
    """The file failed SQLite's integrity check or has no version: nothing is removed."""


def stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version the file's ``meta`` table states, or None when it is missing or odd."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return None
    value = row[0] if row else None
    if not (isinstance(value, str) and value.isascii() and value.isdigit()):
        return None
    return int(value)


def strip(path: Path, timeout: float, write_timeout: float) -> list[str]:
    """Drop every foreign object of the project at ``path`` in one transaction, after
    keeping a copy ``<name>.bak-foreign-sql``; returns what was dropped (empty: nothing
    to drop, nothing written).  The caller has checked the header and asked the analyst."""
    conn = db.connect(path, "rw", timeout, defensive=False)
    try:
        if conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            raise Damaged("it fails SQLite's integrity check")
        version = stored_version(conn)
        if version is None:
            raise Damaged("it has lost its version information")
        found = inspect(conn, version)
        if not found.foreign:
            return []
        backup = db.unique_path(path.with_name(f"{path.name}.bak-foreign-sql"))
        db.backup_copy(path, "rw", timeout, backup, journal_mode="DELETE")
        conn.execute(f"PRAGMA busy_timeout={int(write_timeout * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            drop_foreign(conn, found.foreign)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [f.what for f in found.foreign]
    finally:
        conn.close()


def _unlink_virtual(conn: sqlite3.Connection, name: str) -> None:
    """Remove a virtual table whose module SQLite does not have (so DROP TABLE cannot run
    it): a virtual table owns no pages (rootpage 0), so deleting its schema row is all
    there is; the schema cookie is bumped so every connection re-reads the schema."""
    cookie = int(conn.execute("PRAGMA schema_version").fetchone()[0])
    conn.execute("PRAGMA writable_schema=ON")
    try:
        conn.execute("DELETE FROM sqlite_master WHERE type = 'table' AND name = ? AND rootpage = 0", (name,))
        conn.execute(f"PRAGMA schema_version={cookie + 1}")
    finally:
        conn.execute("PRAGMA writable_schema=OFF")


def drop_foreign(conn: sqlite3.Connection, foreign: list[Foreign]) -> None:
    """Drop every foreign object, inside the caller's transaction (triggers and views first,
    then virtual and extra tables, then indexes and generated columns)."""
    order = ("trigger", "view", "virtual table", "table", "index", "generated column")
    for obj in sorted(foreign, key=lambda f: order.index(f.kind)):
        if obj.kind == "trigger":
            conn.execute(f"DROP TRIGGER IF EXISTS {_q(obj.name)}")
        elif obj.kind == "view":
            conn.execute(f"DROP VIEW IF EXISTS {_q(obj.name)}")
        elif obj.kind in ("virtual table", "table"):
            try:
                conn.execute(f"DROP TABLE IF EXISTS {_q(obj.name)}")
            except sqlite3.OperationalError as exc:
                if obj.kind != "virtual table" or "no such module" not in str(exc):
                    raise
                _unlink_virtual(conn, obj.name)
        elif obj.kind == "index":
            conn.execute(f"DROP INDEX IF EXISTS {_q(obj.name)}")
        else:
            conn.execute(f"ALTER TABLE {_q(obj.table)} DROP COLUMN {_q(obj.name)}")
