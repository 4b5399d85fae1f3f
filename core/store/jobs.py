"""Project jobs the window runs on its database worker (plain functions, Qt-free): each opens,
creates or saves a project and returns it, so the window only swaps in what comes back."""
from __future__ import annotations

from pathlib import Path

from core.store.project import Project


def create_untitled(folder: str | Path) -> Project:
    """A temporary project in ``folder`` (made if missing): what the window works in until saved."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Project.create_temporary(folder)


def strip_and_open(path: str | Path) -> Project:
    """Remove the SQL Kestrel did not create (the analyst agreed; a copy is kept), then open."""
    Project.strip_foreign_objects(path)
    return Project.open(path)


def save_as_and_close(project: Project, path: str | Path) -> Project:
    """``project`` saved as ``path``; the old one closed. Returns the new one."""
    new = project.save_as(path)
    project.close()
    return new
