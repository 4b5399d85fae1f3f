"""What a panel is given: the few things of the window it works with, not the window itself.

A panel runs jobs (``tasks``), follows the open file (``session``), reads and writes the open
project (``project()``, which changes when the analyst opens another: ``project_changed``), reports
errors through the one reporter (``show_error``: a status line and one dialog) and short notes
through ``show_status``. The main window builds one :class:`Workbench` and hands it to each panel;
a panel under test gets one built from fakes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Workbench:
    tasks: Any                                   # gui.tasks.TaskManager
    session: Any                                 # core.session.MediaSession
    settings: Any                                # core.settings.Settings
    project: Callable[[], Any]                   # the open core.store.project.Project, or None
    project_changed: Any                         # Signal(str): another project is open
    show_error: Callable[[str], None]            # one line in the status bar, one dialog at a time
    show_status: Callable[[str, int], None]      # a note in the status bar for ms milliseconds
    open_media: Callable[[str], Any]             # open a file in the player (returns its Task)
    live: Any = None                             # gui.live_controller.LiveController
    user_paths: Callable[[], dict] = dict        # model name -> the folder the analyst gave for it
