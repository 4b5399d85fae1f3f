"""Red-team regressions for hostile project files: SQL planted while a project is open,
planted WAL and hot-journal side files (a refused file and its side files stay unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.project import Project, ProjectForeignSqlError
from projectkit import check_populated, filled, project_path, raw  # noqa: F401  (fixtures)


def test_a_trigger_planted_while_the_project_is_open_never_runs(filled: tuple[Path, dict[str, Any]]) -> None:
    path, written = filled
    with Project.open(path) as p:
        p.set_setting("before", 1)  # a first write checks and records the schema
        other = raw(path)
        other.execute("CREATE TABLE pwn(x)")
        other.execute("CREATE TRIGGER t AFTER INSERT ON settings BEGIN INSERT INTO pwn VALUES ('ran'); "
                      "UPDATE media SET path = '/evil'; END")
        other.close()
        with pytest.raises(ProjectForeignSqlError, match="trigger 't' on settings") as err:
            p.set_setting("k", 1)
        assert "trigger 't' on settings" in err.value.objects
        with pytest.raises(ProjectForeignSqlError):
            with p.batch():
                p.set_setting("k", 2)
        assert p.get_setting("k") is None and p.get_setting("before") == 1
    check = raw(path)
    assert check.execute("SELECT count(*) FROM pwn").fetchone() == (0,)
    check.execute("DROP TRIGGER t")
    check.execute("DROP TABLE pwn")
    check.close()
    with Project.open(path) as p:
        check_populated(p, written)
        p.set_setting("k", 3)  # a schema that is Kestrel's again: writes go on
        assert p.get_setting("k") == 3
