"""Project storage under kills, races and hostile files (issue #15): a run and what it produced
commit together, runs of dead processes are failed, concurrent creators and writers lose
nothing, the whole schema is validated before anything is written, and SQL that Kestrel did
not create is refused (or stripped with consent)."""

from __future__ import annotations

import select
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from core.store import schema as dbschema

from core.perception import ops
from core.perception.analysis import AnalysisRequest, ModelOutput, run_params
from core.store.project import (
    NotAProjectError,
    Project,
    ProjectCorruptError,
    ProjectError,
    ProjectForeignSqlError,
)
from models.catalogue import get_spec
from models.types import Detection
from projectkit import (  # noqa: F401  (fixtures are used by name)
    DURATION, MODEL, _request, detector_output, REPO, check_populated, dir_listing, filled, populate, project_path,
    raw, run_sql, sha256,
)



def _child(code: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _expect(proc: subprocess.Popen[str], line: str) -> None:
    got = proc.stdout.readline() if proc.stdout else ""
    if got.strip() != line:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"expected {line!r} from the child, got {got!r}; stderr:\n{err}")


def _new_media(path: Path) -> int:
    with Project.create(path) as p:
        return p.add_media("/videos/clip.mp4", "sha256:abc", 1000, DURATION, "mp4", [])


# ------------------------------------------------------------- 1. a run and its results together
def test_a_kill_between_the_run_and_its_tracks_leaves_nothing_to_reuse(project_path: Path) -> None:
    mid = _new_media(project_path)
    code = f"""
        import os, sys
        sys.path.insert(0, "tests")
        from core.perception import ops
        from core.store.project import Project
        from projectkit import detector_output
        calls = []
        real = Project.save_track
        def save_track(self, *a, **k):
            calls.append(1)
            if len(calls) == 2:  # killed while storing the 2nd of 4 tracks
                os._exit(9)
            return real(self, *a, **k)
        Project.save_track = save_track
        p = Project.open({str(project_path)!r})
        ops.store_analysis(p, {mid}, detector_output(), 0.5)
        print("not killed")
    """
    done = _child(code)
    assert done.returncode == 9, done.stderr
    with Project.open(project_path) as p:
        assert [r for r in p.list_runs(mid) if r.status == "ok"] == []
        assert p.load_tracks(mid) == []
        assert ops.cached_analysis(p, mid, _request(), DURATION) == {}  # nothing "reused"
        run_id = ops.store_analysis(p, mid, detector_output(), 0.5)  # the rerun stores everything
        assert ops.cached_analysis(p, mid, _request(), DURATION) == {MODEL: run_id}
        tracks = p.load_tracks(mid)
        assert len(tracks) == 4 and all(t.run_id == run_id for t in tracks)


def test_a_failing_track_write_rolls_back_its_run(project_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = _new_media(project_path)
    real, calls = Project.save_track, []

    def save_track(self: Project, *a: Any, **k: Any) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise ProjectError("the disk is full (simulated)")
        return real(self, *a, **k)

    monkeypatch.setattr(Project, "save_track", save_track)
    with Project.open(project_path) as p:
        with pytest.raises(ProjectError, match="simulated"):
            ops.store_analysis(p, mid, detector_output(), 0.5)
        assert p.list_runs(mid) == [] and p.load_tracks(mid) == []
        assert ops.cached_analysis(p, mid, _request(), DURATION) == {}


def test_batch_is_one_transaction(project_path: Path) -> None:
    with Project.create(project_path) as p:
        mid = p.add_media("/v.mp4", "h", 1, 1.0, "mp4", [])
        other = raw(project_path)
        with p.batch():
            run = p.record_run("k", "prod", "1", {}, mid, 1.7e9, 1.0)
            p.save_track(mid, "notes", "a", [{"start_s": 0, "end_s": 1}], run_id=run)
            assert [r.id for r in p.list_runs(mid)] == [run]  # reads inside see the batch
            assert other.execute("SELECT count(*) FROM runs").fetchone()[0] == 0  # others do not, yet
            with pytest.raises(KeyError):  # a failing call inside is undone alone (savepoint)...
                p.save_track(mid, "notes", "b", [{"start_s": 0, "end_s": 1, "run_id": 999}])
            with p.batch():  # nested batches join the outer one
                p.set_setting("inner", 1)
        assert other.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # ...and the rest commits
        assert [t.name for t in p.load_tracks(mid)] == ["a"] and p.get_setting("inner") == 1
        with pytest.raises(RuntimeError, match="boom"):
            with p.batch():
                p.set_setting("lost", 1)
                p.record_run("k", "prod", "1", {}, mid, 1.7e9, 1.0)
                raise RuntimeError("boom")
        assert p.get_setting("lost") is None and len(p.list_runs(mid)) == 1
        other.close()


# ------------------------------------------------------------- 2. runs of dead processes
def test_a_run_left_running_by_a_dead_process_is_marked_failed(project_path: Path) -> None:
    mid = _new_media(project_path)
    code = f"""
        import os
        from core.store.project import Project
        p = Project.open({str(project_path)!r})
        print(p.start_run("analysis/detect", "m", "1", {{}}, {mid}), flush=True)
        os._exit(0)  # dies without finishing the run
    """
    done = _child(code)
    assert done.returncode == 0, done.stderr
    dead = int(done.stdout.strip())
    c = raw(project_path)
    mine = c.execute("INSERT INTO runs (kind, producer, version, params_json, media_id, started_at, status, "
                     "owner_host, owner_pid) VALUES ('v', 'p', '1', '{}', ?, '2026-01-01T00:00:00+00:00', "
                     "'running', ?, ?)", (mid, *dbschema.this_owner())).lastrowid  # this live process
    c.execute("INSERT INTO runs (kind, producer, version, params_json, media_id, started_at, status, "
              "owner_host, owner_pid) VALUES ('x', 'p', '1', '{}', ?, '2026-01-01T00:00:00+00:00', 'running', "
              "'another-machine.example', 1)", (mid,))
    c.execute("INSERT INTO runs (kind, producer, version, params_json, media_id, started_at, status) "
              "VALUES ('y', 'p', '1', '{}', ?, '2026-01-01T00:00:00+00:00', 'running')", (mid,))  # no owner
    c.close()
    before = sha256(project_path)
    with Project.open(project_path, read_only=True) as ro:  # read-only: nothing is changed
        assert all(r.status == "running" for r in ro.list_runs(mid))
    assert sha256(project_path) == before
    with Project.open(project_path) as p:
        runs = {r.id: r for r in p.list_runs(mid)}
    assert (runs[dead].status, runs[dead].error) == ("failed", "the process that ran it ended before it finished")
    assert runs[mine].status == "running"
    other, ownerless = sorted(set(runs) - {dead, mine})
    assert runs[other].status == "running"  # another host: cannot tell, left alone
    assert runs[ownerless].status == "failed"


def test_a_version_1_file_is_upgraded(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    c = raw(path)  # the v1 layout: runs without owner columns
    c.executescript("DROP TABLE item_shared; DROP TABLE track_lod; ALTER TABLE items DROP COLUMN shared_n; "
                    "DROP TABLE item_blocks; ALTER TABLE runs DROP COLUMN owner_pid; ALTER TABLE runs DROP COLUMN owner_host; "
                    "UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    c.close()
    with Project.open(path) as p:
        assert p.schema_version == 4 and any("bak-v1" in w for w in p.warnings)
        runs = {r.id: r for r in p.list_runs()}
        assert runs[written["r3"]].status == "failed"  # 'running' with no owner: its process is unknown
        r = p.start_run("k", "p", "1", {})
        assert p.list_runs()[-1].id == r
    c = raw(path)
    assert {"owner_host", "owner_pid"} <= {row[1] for row in c.execute("PRAGMA table_info(runs)")}
    c.close()
    assert (path.parent / "case.kestrel.bak-v1").exists()


# ------------------------------------------------------------- 3. concurrent creators and writers
WRITER = """
    import sys
    from core.store.project import Project
    tag, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdin.readline()  # start together
    p = Project.open_or_create(path)
    for i in range(n):
        p.set_setting(f"{tag}-{i}", i)
    p.close()
    print("done")
"""


@pytest.mark.parametrize("trial", range(5))
def test_two_processes_creating_the_same_project_lose_nothing(tmp_path: Path, trial: int) -> None:
    path, n = tmp_path / "new.kestrel", 40
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), tag, str(path), str(n)], cwd=REPO,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _out, err in results]
    with Project.open(path) as p:
        for tag in ("a", "b"):
            assert [p.get_setting(f"{tag}-{i}") for i in range(n)] == list(range(n))
    assert [name for name in dir_listing(tmp_path) if name != "new.kestrel"] == []  # no temp files left


def test_open_or_create(tmp_path: Path, filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    with Project.open_or_create(path) as p:  # exists: opened, nothing replaced
        check_populated(p, written)
    empty = tmp_path / "empty.kestrel"
    empty.touch()
    with Project.open_or_create(empty) as p:  # an empty placeholder becomes a project
        assert p.list_media() == []
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(path)
    with pytest.raises(NotAProjectError):
        (tmp_path / "text.kestrel").write_text("hello")
        Project.open_or_create(tmp_path / "text.kestrel")


def test_a_long_transaction_makes_another_writer_wait_not_fail(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    waiter = _spawn(f"""
        from core.store.project import Project
        Project.BUSY_TIMEOUT_S = 0.05  # reads give up quickly; writes must still wait
        p = Project.open({str(path)!r})
        print("open", flush=True)
        input()
        print("writing", flush=True)
        p.set_setting("b", 1)
        print("done", flush=True)
    """)
    holder = raw(path)  # another writer, in the middle of a long transaction
    try:
        _expect(waiter, "open")  # opened before the lock is taken
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO settings VALUES ('a', '1')")
        assert waiter.stdin is not None
        waiter.stdin.write("go\n")
        waiter.stdin.flush()
        _expect(waiter, "writing")
        # the waiter is blocked on the lock: it must not give up (before: locked error after 0.05 s)
        ready, _, _ = select.select([waiter.stdout], [], [], 1.0)
        assert ready == [], "the second writer gave up instead of waiting"
        holder.execute("INSERT INTO settings VALUES ('a2', '2')")
        holder.execute("COMMIT")
        out, err = waiter.communicate(timeout=120)
    finally:
        holder.close()
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(timeout=30)
    assert waiter.returncode == 0 and out.strip() == "done", err
    with Project.open(path) as p:
        assert (p.get_setting("a"), p.get_setting("a2"), p.get_setting("b")) == (1, 2, 1)


def test_write_and_read_lock_waits(filled: tuple[Path, dict[str, Any]]) -> None:
    path, _ = filled
    with Project.open(path) as p:
        with p._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
            assert conn.exec_driver_sql("PRAGMA cell_size_check").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA trusted_schema").scalar() == 0
        with p._writing() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


# ------------------------------------------------------------- 4./5. the schema, before any write
def _refused(path: Path, error: type[ProjectError], *needles: str) -> ProjectError:
    before, listing = sha256(path), dir_listing(path.parent)
    with pytest.raises(error) as err:
        Project.open(path)
    for needle in needles:
        assert needle in str(err.value)
    assert "Traceback" not in str(err.value) and str(path) in str(err.value)
    assert sha256(path) == before and dir_listing(path.parent) == listing  # not a byte written
    return err.value


@pytest.mark.parametrize("sql, needle", [
    ("DROP TABLE runs", "the table 'runs' is missing"),
    ("ALTER TABLE items DROP COLUMN data_json", "the column 'items.data_json' is missing"),
    ("CREATE TABLE m2 (key TEXT, value TEXT); INSERT INTO m2 SELECT * FROM meta; DROP TABLE meta; "
     "ALTER TABLE m2 RENAME TO meta", "the column 'meta.key' was changed"),
    ("DROP INDEX ix_items_track_start", "the index 'ix_items_track_start' is missing"),
    ("DROP INDEX ix_runs_lookup; CREATE INDEX ix_runs_lookup ON runs (kind)", "the index 'ix_runs_lookup' was changed"),
    ("ALTER TABLE media ADD COLUMN must TEXT NOT NULL DEFAULT 'x'; UPDATE media SET must = 'y'", None),
])
def test_a_damaged_schema_is_refused_before_any_write(filled: tuple[Path, dict[str, Any]], sql: str,
                                                      needle: str | None) -> None:
    path, written = filled
    run_sql(path, sql)
    if needle is None:  # an extra column with a default is harmless: opened
        with Project.open(path) as p:
            check_populated(p, written)
        return
    _refused(path, ProjectCorruptError, needle, "damaged")


TRIGGER = ("CREATE TRIGGER evil AFTER INSERT ON items BEGIN DELETE FROM items; "
           "UPDATE media SET path = '/tmp/pwned'; END")


def test_a_planted_trigger_is_refused_then_stripped_with_consent(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    c = raw(path)
    c.execute(TRIGGER)
    c.close()
    err = _refused(path, ProjectForeignSqlError, "trigger 'evil' on items", "Kestrel did not create",
                   "nothing was run or changed")
    assert isinstance(err, ProjectForeignSqlError) and err.objects == ["trigger 'evil' on items"]
    with pytest.raises(ProjectForeignSqlError):
        Project.open(path, read_only=True)  # not even read-only
    assert Project.strip_foreign_objects(path) == ["trigger 'evil' on items"]
    backup = path.with_name("case.kestrel.bak-foreign-sql")
    b = raw(backup)
    assert b.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == [("evil",)]
    b.close()
    with Project.open(path) as p:
        check_populated(p, written)
        p.save_track(written["m1"], "notes", "new", [{"start_s": 1, "end_s": 2, "label": "x"}])
        assert [m.path for m in p.list_media()] == ["/videos/a.mp4", "/videos/b.mkv"]
        assert sum(len(t.items) for t in p.load_tracks(written["m1"])) == 5
    c = raw(path)
    assert c.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0
    c.close()
    assert Project.strip_foreign_objects(path) == []  # nothing left: nothing written


@pytest.mark.parametrize("sql, what", [
    ("CREATE VIEW peek AS SELECT path FROM media", "view 'peek'"),
    ("CREATE TABLE extra (x)", "table 'extra'"),
    ("CREATE INDEX ix_extra ON items (label)", "index 'ix_extra' on items"),
    ("CREATE VIRTUAL TABLE ft USING fts5(body)", "virtual table 'ft'"),
    ("PRAGMA writable_schema=ON; INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES "
     "('table', 'vx', 'vx', 0, 'CREATE VIRTUAL TABLE vx USING nosuchmodule(a)'); PRAGMA writable_schema=OFF",
     "virtual table 'vx'"),
    ("ALTER TABLE media ADD COLUMN g TEXT GENERATED ALWAYS AS (upper(path)) VIRTUAL", "generated column 'media.g'"),
])
def test_foreign_objects_are_named_and_strippable(filled: tuple[Path, dict[str, Any]], sql: str, what: str) -> None:
    path, written = filled
    run_sql(path, sql)
    err = _refused(path, ProjectForeignSqlError, what)
    assert what in err.objects
    removed = Project.strip_foreign_objects(path)
    assert what in removed
    with Project.open(path) as p:
        check_populated(p, written)
        p.set_setting("after", 1)


def test_a_foreign_database_with_kestrels_id_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "other.kestrel"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA application_id={dbschema.APPLICATION_ID}")
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(Project.SCHEMA_VERSION),))
    c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, secret TEXT)")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c.close()
    _refused(path, ProjectCorruptError, "the table 'runs' is missing")
    assert dir_listing(tmp_path) == ["other.kestrel"]  # no -wal, -shm or -journal


def test_the_cli_refuses_a_planted_trigger_in_one_line(filled: tuple[Path, dict[str, Any]]) -> None:
    """The command line reports a planted trigger in one line and writes nothing."""
    path, _ = filled
    c = raw(path)
    c.execute(TRIGGER)
    c.close()
    before = sha256(path)
    done = _child(f"""
        from core.cli import open_project
        from core.store.project import ProjectError
        try:
            open_project({str(path)!r})
        except ProjectError as e:
            print(e)
    """)
    assert done.returncode == 0 and "trigger 'evil' on items" in done.stdout and "Traceback" not in done.stderr
    assert sha256(path) == before


def test_defensive_connection_settings(project_path: Path) -> None:
    with Project.create(project_path):
        pass
    conn = dbschema.connect(project_path, "ro", 1.0)
    try:
        assert conn.execute("PRAGMA trusted_schema").fetchone()[0] == 0
        assert conn.execute("PRAGMA cell_size_check").fetchone()[0] == 1
    finally:
        conn.close()
