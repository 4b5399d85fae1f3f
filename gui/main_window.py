"""Kestrel's main window: the player over the waveform over the timeline, menus, status bar.

All project access happens on the task manager's database worker; probing and indexing
on the I/O pool; peak pyramids on the compute worker. The window only wires results
into the session model, which the views watch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QFrame, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QMainWindow, QMessageBox, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout, QWidget)

from core.errors import describe, is_expected
from core.media.decode import MEDIA_EXTENSIONS, MediaInfo, VideoDecoder
from core.media.waveform import WaveformRequest
from core.perception import ops
from core.perception.overlay import OverlayModel
from core.session import MediaSession, load_stored
from core.settings import Settings, data_dir
from core.store import jobs as project_jobs
from core.store.project import Project, ProjectError, ProjectForeignSqlError
from gui.analysis_controller import AnalysisController
from gui.device_status import DeviceLabel
from gui.live_controller import LiveController
from gui.panels.anomalies import AnomalyPanel
from gui.panels.chat import ChatPanel
from gui.panels.detections import AnalysisDialog, DetectionsPanel, ModelsDialog
from gui.panels.frame_search import FocusPanel
from gui.panels.handoff import HandoffDialog
from gui.panels.tags import TaggingPanel
from gui.tasks import FrameFetcher, Task, TaskManager
from gui.views.player import PlayerView
from gui.views.timeline import TimelineView
from gui.views.waveform import WaveformView
from gui.workbench import Workbench

log = logging.getLogger(__name__)

PROJECT_FILTER = "Kestrel projects (*.kestrel);;All files (*)"
MEDIA_FILTER = "Media ({});;All files (*)".format(" ".join("*" + e for e in MEDIA_EXTENSIONS))


class JobBar(QWidget):
    """Status-bar progress with a cancel button, shown for any job longer than a moment: what the
    job does, its bar, then its ETA and throughput (``ETA 3 min 12 s · 48× faster than real time``, the task's
    :class:`core.jobs.Estimator`; the tooltip adds how much footage in how long)."""

    LABEL_W = 360  # the job's own text is elided past this; the ETA always shows whole

    def __init__(self, tasks: TaskManager, parent: QWidget | None = None):
        super().__init__(parent)
        self.tasks = tasks
        self.label = QLabel("")
        self.label.setMaximumWidth(self.LABEL_W)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFixedWidth(180)
        self.bar.setTextVisible(False)
        self.eta = QLabel("")
        self.cancel = QPushButton("Cancel")
        self.cancel.setFlat(True)
        self.cancel.clicked.connect(self._cancel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.eta)
        lay.addWidget(self.cancel)
        self._delay = QTimer(self)
        self._delay.setSingleShot(True)
        self._delay.setInterval(400)  # a moment: quick jobs never flash a bar
        self._delay.timeout.connect(self._refresh)
        self._tick = QTimer(self)  # the ETA counts down between a job's reports
        self._tick.setInterval(1000)
        self._tick.timeout.connect(lambda: self._refresh(only_visible=True))
        tasks.task_started.connect(lambda _t: self._delay.start())
        tasks.task_progress.connect(lambda _t: self._refresh(only_visible=True))
        tasks.task_ended.connect(lambda _t: self._refresh())
        self.hide()

    def _jobs(self) -> list[Task]:
        return [t for t in self.tasks.active if t.visible]

    def _refresh(self, only_visible: bool = False) -> None:
        jobs = self._jobs()
        if not jobs:
            self._tick.stop()
            self.hide()
            return
        if only_visible and not self.isVisible() and self._delay.isActive():
            return
        t = jobs[0]
        more = f" (+{len(jobs) - 1})" if len(jobs) > 1 else ""
        full = f"{t.name}{': ' + t.text if t.text else ''}{more}"
        self.label.setText(self.label.fontMetrics().elidedText(full, Qt.TextElideMode.ElideMiddle, self.LABEL_W))
        self.label.setToolTip(full)
        self.bar.setValue(int(t.progress * 1000))
        now, est = self.tasks.now(), t.estimate
        # nothing for a job that reports no progress; at 100 % it only wraps up (the bar goes soon)
        self.eta.setText("" if not est.reports else "finishing…" if est.ended is not None else est.text(now))
        self.eta.setToolTip(est.detail(now) if est.reports else "")
        self.show()
        if not self._tick.isActive():
            self._tick.start()

    def _cancel(self) -> None:
        for t in self._jobs():
            t.cancel()


class MainWindow(QMainWindow):
    """Signals: ``media_ready(info)`` once a file's first frame/overview is requested,
    ``waveform_ready()`` when the exact waveform is shown, ``waveform_stored(media_id)``
    when it is cached in the project, ``project_changed(path)``,
    ``error_shown(message)``."""

    media_ready = Signal(object)
    waveform_ready = Signal()
    waveform_stored = Signal(int)  # media id
    media_list_refreshed = Signal()
    project_changed = Signal(str)
    error_shown = Signal(str)

    def __init__(self, settings: Settings | None = None, *, tasks: TaskManager | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.tasks = tasks or TaskManager(self)
        self.fetcher = FrameFetcher(lambda p: VideoDecoder(p, max_size=(1920, 1080)), self)
        self.session = MediaSession()
        self.project: Project | None = None
        self._error_box: QMessageBox | None = None
        self.setWindowTitle("Kestrel")
        self.resize(1280, 860)
        self.setAcceptDrops(True)

        self.overlay = OverlayModel(self.session.timeline)
        self.player = PlayerView(self.session, self.fetcher, self.overlay)
        self.waveform = WaveformView(self.session, self.tasks)
        self.timeline = TimelineView(self.session)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.player)
        split.addWidget(self.waveform)
        self.timeline_scroll = QScrollArea()
        self.timeline_scroll.setWidget(self.timeline)
        self.timeline_scroll.setWidgetResizable(True)
        self.timeline_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # always there, and matched by a margin right of the waveform, so both time axes align
        self.timeline_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        bar_w = self.timeline_scroll.verticalScrollBar().sizeHint().width()
        self.waveform.layout().setContentsMargins(0, 0, bar_w, 0)
        self.timeline_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        split.addWidget(self.timeline_scroll)
        split.setStretchFactor(0, 6)
        split.setStretchFactor(1, 2)
        split.setStretchFactor(2, 2)
        split.setSizes([450, 130, 230])
        self.setCentralWidget(split)

        self.media_list = QListWidget()
        self.media_list.itemActivated.connect(lambda it: self.open_media(it.data(Qt.ItemDataRole.UserRole)))
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(4, 4, 4, 4)
        sl.addWidget(QLabel("<b>Media in project</b>"))
        sl.addWidget(self.media_list, 1)
        sl.addWidget(self.info_label)
        dock = QDockWidget("Project", self)
        dock.setObjectName("project-dock")
        dock.setWidget(side)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable |
                         QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.resizeDocks([dock], [190], Qt.Orientation.Horizontal)
        self.project_dock = dock

        self.detections = DetectionsPanel(self.session, self.overlay)
        ddock = QDockWidget("Detections", self)
        ddock.setObjectName("detections-dock")
        scroll = QScrollArea()  # a crowded panel scrolls rather than drawing its parts over each other
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.detections)
        ddock.setWidget(scroll)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, ddock)
        self.resizeDocks([ddock], [280], Qt.Orientation.Horizontal)
        self.detections_dock = ddock
        self.live = LiveController(self.tasks, self)
        self.bench = Workbench(
            tasks=self.tasks, session=self.session, settings=self.settings, project=lambda: self.project,
            project_changed=self.project_changed, show_error=self.show_error,
            show_status=lambda text, ms=8000: self.statusBar().showMessage(text, ms),
            open_media=self.open_media, live=self.live, user_paths=lambda: dict(self.analysis.user_paths()))
        self.analysis = AnalysisController(self.bench, self)
        self.detections.attach(self.bench)  # the scene's confusions: learn, suppress, restore
        self.focus = FocusPanel(self.bench)
        fdock = QDockWidget("Frame search", self)
        fdock.setObjectName("focus-dock")
        fdock.setWidget(self.focus)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, fdock)
        self.focus_dock = fdock
        self.anomalies = AnomalyPanel(self.bench)
        adock = QDockWidget("Anomalies", self)
        adock.setObjectName("anomaly-dock")
        adock.setWidget(self.anomalies)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, adock)
        self.tabifyDockWidget(self.detections_dock, adock)
        self.detections_dock.raise_()
        self.anomaly_dock = adock
        self.chat = ChatPanel(self.bench, overlay=self.overlay)
        cdock = QDockWidget("Chat", self)
        cdock.setObjectName("chat-dock")
        cdock.setWidget(self.chat)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, cdock)
        self.tabifyDockWidget(self.anomaly_dock, cdock)
        self.detections_dock.raise_()
        self.chat_dock = cdock
        self.tagging = TaggingPanel(self.bench)
        tdock = QDockWidget("Tags", self)
        tdock.setObjectName("tags-dock")
        tdock.setWidget(self.tagging)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, tdock)
        self.tabifyDockWidget(self.chat_dock, tdock)
        self.detections_dock.raise_()
        self.tags_dock = tdock
        self.focus.send_to_chat.connect(lambda times: (self.chat_dock.raise_(), self.chat.ask_about(times)))
        self.live.event.connect(self.anomalies.on_live_event)
        self.chat.attach_live(self.live)
        self.live.frame.connect(self.player.show_live)
        self.live.status.connect(lambda text: self.statusBar().showMessage(f"live: {text}", 10000))
        self.live.stopped.connect(self._live_stopped)

        self.jobbar = JobBar(self.tasks)
        self.project_label = QLabel("")
        self.device_label = DeviceLabel(self.tasks, self.settings)  # where the models run (the setting)
        self.statusBar().addPermanentWidget(self.jobbar)
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().addPermanentWidget(self.project_label)
        self.tasks.task_failed.connect(lambda t, e: self.show_error(f"{t.name} failed: {describe(e)}"))

        self._build_menus()
        self._build_shortcuts()
        self.session.events.media_changed.connect(self._on_media_changed)
        self.waveform.set_per_channel(bool(self.settings.get("waveform_per_channel")))

    # -- menus and keys ------------------------------------------------------------------
    def _action(self, menu, text: str, slot, shortcut=None, checkable=False) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setCheckable(checkable)
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&Open Media…", self.choose_media, QKeySequence.StandardKey.Open)
        self.recent_menu = f.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._action(f, "Open &Stream or Camera…", self.choose_stream, "Ctrl+L")
        self._action(f, "S&top Stream", self.stop_stream)
        f.addSeparator()
        self._action(f, "&New Project", self.new_project, QKeySequence.StandardKey.New)
        self._action(f, "Open &Project…", self.choose_project, "Ctrl+Shift+O")
        self._action(f, "Save Project &As…", self.choose_save_as, QKeySequence.StandardKey.SaveAs)
        f.addSeparator()
        self.export_action = self._action(f, "&Export…", lambda: self.open_handoff(False), "Ctrl+E")
        self.import_action = self._action(f, "&Import…", lambda: self.open_handoff(True), "Ctrl+I")
        f.aboutToShow.connect(self._handoff_enabled)  # and for the keys, when what is open changes:
        self.session.events.media_changed.connect(lambda _info: self._handoff_enabled())
        self.project_changed.connect(lambda _path: self._handoff_enabled())
        self._handoff_enabled()
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        v = mb.addMenu("&View")
        a = self._action(v, "Waveform per &channel", self._toggle_channels, checkable=True)
        a.setChecked(bool(self.settings.get("waveform_per_channel")))
        self._action(v, "Zoom to &whole file", lambda: self.session.set_view(0, self.session.duration), "Ctrl+0")
        v.addAction(self.project_dock.toggleViewAction())
        v.addAction(self.detections_dock.toggleViewAction())
        v.addAction(self.focus_dock.toggleViewAction())
        v.addAction(self.anomaly_dock.toggleViewAction())
        v.addAction(self.chat_dock.toggleViewAction())
        v.addAction(self.tags_dock.toggleViewAction())
        an = mb.addMenu("&Analyse")
        self._action(an, "&Analyse Media…", self.choose_analysis, "Ctrl+Shift+A")
        self._action(an, "Find &Anomalies", lambda: (self.anomaly_dock.raise_(), self.anomalies.run()))
        self._action(an, "Find &Frames…", lambda: (self.focus_dock.raise_(), self.focus.query.setFocus()),
                     "Ctrl+F")
        self._action(an, "&Chat about This Frame", lambda: (self.chat_dock.raise_(),
                                                             self.chat.ask_about([self.session.position])), "Ctrl+T")
        self._action(an, "&Tag This File", lambda: (self.tags_dock.raise_(), self.tagging.tag_current()))
        self._action(an, "Tag &Folder…", lambda: (self.tags_dock.raise_(), self.tagging.choose_folder()))
        self._action(an, "&Models…", self.show_models)
        h = mb.addMenu("&Help")
        self._action(h, "&Keyboard shortcuts", self._show_keys, "F1")

    def _handoff_enabled(self) -> None:
        """File ▸ Export… / Import… need a media file open in a project (an import a writable one)."""
        there = self.session.info is not None and self.project is not None
        self.export_action.setEnabled(there)
        self.import_action.setEnabled(there and not self.project.read_only)

    def open_handoff(self, importing: bool) -> HandoffDialog | None:
        """The export (or import) dialog for the open file (gui/panels/handoff.py)."""
        self._handoff_enabled()
        if not (self.import_action if importing else self.export_action).isEnabled():
            self.show_error("Open a media file in a writable project first." if importing
                            else "Open a media file in a project first.")
            return None
        self.handoff = HandoffDialog(self.bench, importing=importing, parent=self)
        self.handoff.show()
        return self.handoff

    def _build_shortcuts(self) -> None:
        s = self.session
        keys = {
            "Space": self.player.toggle_play,
            "Right": lambda: (self._pause(), s.step(1)),
            "Left": lambda: (self._pause(), s.step(-1)),
            "Shift+Right": lambda: s.seek(s.position + 1.0),
            "Shift+Left": lambda: s.seek(s.position - 1.0),
            "Home": lambda: s.seek(0.0),
            "End": lambda: s.seek(s.last_time()),
            "K": self._pause,
            "L": lambda: self._shuttle(+1),
            "J": lambda: self._shuttle(-1),
            "N": lambda: self.anomalies.step_event(+1),
            "P": lambda: self.anomalies.step_event(-1),
        }
        self._shortcuts = []
        for key, fn in keys.items():
            sc = QShortcut(QKeySequence(key), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(fn)
            self._shortcuts.append(sc)

    def _pause(self) -> None:
        self.session.playing = False
        self.session.rate = 1.0

    def _shuttle(self, direction: int) -> None:
        """J/L: play backwards/forwards; pressing again doubles the speed (up to 8×)."""
        s = self.session
        if s.playing and (s.rate > 0) == (direction > 0):
            s.rate = max(-8.0, min(8.0, s.rate * 2))
        else:
            s.rate = float(direction)
            if not s.playing:
                self.player.toggle_play()
            else:
                self.player._on_playing(True)

    def _show_keys(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", (
            "Space  play / pause\n← / →  previous / next frame\nShift+← / →  back / forward 1 s\n"
            "J / K / L  play backwards / pause / play (again: faster)\nHome / End  start / end\n"
            "N / P  next / previous anomaly event (replayed in a loop; Space stops)\n"
            "Ctrl+O  open media    Ctrl+0  zoom to whole file\n"
            "Timeline: wheel zooms, drag pans, click seeks, double-click an item to jump to it"))

    def _toggle_channels(self, on: bool) -> None:
        self.settings.set("waveform_per_channel", bool(on))
        self.waveform.set_per_channel(on)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.settings.get("recent_media") if isinstance(p, str)]
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for p in recent:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.open_media(p))

    # -- analysis ------------------------------------------------------------------------
    def choose_analysis(self) -> None:
        from models.catalogue import load_catalogue, locate
        if self.session.info is None:
            self.show_error("Open a media file first.")
            return
        paths = dict(self.analysis.user_paths())
        specs = list(load_catalogue().values())
        avail = {s.name: locate(s, paths.get(s.name)) for s in specs}
        view = self.session.view
        full = view[0] <= 0.0 and view[1] >= self.session.duration - 1e-3
        chosen = tuple(self.settings.get("analysis_models")) or None
        dlg = AnalysisDialog(specs, avail, None if full else view, self,
                             **({"chosen": chosen} if chosen else {}), fps=float(self.settings.get("analysis_fps")),
                             device=str(self.settings.get("analysis_device")))
        if dlg.exec():
            models, fps, span, device = dlg.selection()
            if not models:
                return
            self.settings.set("analysis_models", list(models))
            self.settings.set("analysis_fps", fps)
            self.settings.set("analysis_device", device)
            self.device_label.refresh()
            self.analysis.start(models, fps, span, None if device == "auto" else device)

    def show_models(self) -> None:
        from models.catalogue import load_catalogue, locate
        dlg = ModelsDialog(list(load_catalogue().values()), locate, dict(self.analysis.user_paths()), self)
        dlg.paths_changed.connect(lambda p: self.settings.set("model_paths", p))
        dlg.exec()

    # -- errors --------------------------------------------------------------------------
    #: errors kept in the one open error dialog (older ones are counted, not listed)
    MAX_ERRORS_SHOWN = 5

    def show_error(self, message: str) -> None:
        """One line in the status bar and one dialog at a time: further errors are added to
        the open dialog (the last few, a repeat only once), never stacked in new ones.
        Logged at INFO (the log file): the failure itself was logged where it happened."""
        message = " ".join(str(message).split()) or "An error occurred."
        log.info("shown: %s", message)
        self.statusBar().showMessage(message, 15000)
        self.error_shown.emit(message)
        if os.environ.get("KESTREL_NO_DIALOGS"):
            return
        box = self._error_box
        if box is not None and box.isVisible():
            shown = box.property("kestrel_messages") or []
            if shown and shown[-1] == message:
                return
            shown = [*shown, message]
            earlier = int(box.property("kestrel_earlier") or 0) + max(0, len(shown) - self.MAX_ERRORS_SHOWN)
            shown = shown[-self.MAX_ERRORS_SHOWN:]
            box.setProperty("kestrel_messages", shown)
            box.setProperty("kestrel_earlier", earlier)
            box.setText("\n\n".join(([f"({earlier} earlier errors are in the log file)"] if earlier else [])
                                     + shown))
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "Kestrel", message, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.setProperty("kestrel_messages", [message])
        self._error_box = box
        box.show()

    # -- projects ------------------------------------------------------------------------
    def _db(self, fn, *args, name: str = "") -> Task:
        return self.tasks.call(fn, *args, pool="db", name=name)

    def new_project(self) -> None:
        self._db(project_jobs.create_untitled, data_dir() / "untitled", name="new project").on_done(
            self._set_project).on_error(
            lambda e: self.show_error(f"Could not create a project: {describe(e)}"))

    def choose_project(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", PROJECT_FILTER)
        if path:
            self.open_project(path)

    def open_project(self, path: str) -> Task:
        """Open a project; one that is refused (damaged, foreign, locked…) leaves the current
        project open (or an untitled one) and says why. A project carrying SQL that Kestrel did
        not create (triggers, views) is opened only after the analyst agrees to remove it."""
        return self._db(Project.open, path, name="open project").on_done(self._set_project).on_error(
            lambda e: self._project_refused(path, e))

    def _project_refused(self, path: str, e: BaseException, *, stripped: bool = False) -> None:
        message = describe(e) if isinstance(e, ProjectError) or is_expected(e) else \
            f"Could not open {path}: {describe(e)}"
        if not stripped and isinstance(e, ProjectForeignSqlError):
            objects = ", ".join(e.objects) or "triggers or views"
            message = (f"{Path(path).name} was not opened: it contains SQL that Kestrel did not create "
                       f"({objects}), and Kestrel never runs such SQL.")
            if self._ask_strip_foreign(message):
                self._db(project_jobs.strip_and_open, path, name="open project").on_done(self._set_project).on_error(
                    lambda e2: self._project_refused(path, e2, stripped=True))
                return
        self.show_error(message)
        if self.project is None:  # nothing open (e.g. at start-up): carry on in an untitled project
            self.new_project()

    def _ask_strip_foreign(self, message: str) -> bool:
        """Ask whether to remove a project's foreign SQL objects; False without dialogs."""
        if os.environ.get("KESTREL_NO_DIALOGS"):
            return False
        box = QMessageBox(QMessageBox.Icon.Warning, "Kestrel", message, QMessageBox.StandardButton.NoButton, self)
        box.setInformativeText("Kestrel can remove these objects from the file, keeping a copy of it first; the "
                               "media, results and caches in it are kept. Then it opens the project.")
        remove = box.addButton("Remove them and open", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is remove

    def choose_save_as(self) -> None:
        if self.project is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", "", PROJECT_FILTER)
        if path:
            if not path.endswith(".kestrel"):
                path += ".kestrel"
            self.save_project_as(path)

    def save_project_as(self, path: str) -> Task | None:
        old = self.project
        if old is None:
            return None
        return self._db(project_jobs.save_as_and_close, old, path, name="save project").on_done(
            self._set_project).on_error(
            lambda e: self.show_error(f"Could not save the project as {path}: {describe(e)}"))

    def _set_project(self, project: Project) -> None:
        old, self.project = self.project, project
        if old is not None and old is not project:
            self._db(old.close)
        for w in getattr(project, "warnings", []) or []:
            self.show_error(w)
        label = "untitled project" if getattr(project, "is_temporary", False) else str(project.path)
        if project.read_only:
            label += " (read-only)"
        self.project_label.setText(label)
        self.setWindowTitle(f"Kestrel — {Path(str(project.path)).name}")
        if not getattr(project, "is_temporary", False):
            self.settings.add_recent("recent_projects", str(project.path))
        self.settings.set("last_project", str(project.path))
        self._refresh_media_list()
        if old is not project and self.session.info is not None:
            # the open file's id belonged to the previous project (or to none, when the file
            # opened before the project did): never store results against a stale id
            self.session.media_id = None
            self._attach_media(self.session.info)
        self.project_changed.emit(str(project.path))

    def _refresh_media_list(self) -> None:
        p = self.project
        if p is None:
            return
        self._db(p.list_media, name="list media").on_done(self._fill_media_list)

    def _fill_media_list(self, records) -> None:
        self.media_list.clear()
        for r in records:
            it = QListWidgetItem(Path(r.path).name)
            duration = "duration unknown" if r.duration_s is None else f"{r.duration_s:.2f} s"
            it.setToolTip(f"{r.path}\n{duration}, {r.container}")
            it.setData(Qt.ItemDataRole.UserRole, r.path)
            if not Path(r.path).exists():
                it.setText(it.text() + "  (missing)")
            self.media_list.addItem(it)
        self.media_list_refreshed.emit()

    # -- media ---------------------------------------------------------------------------
    def choose_media(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open media", "", MEDIA_FILTER)
        if path:
            self.open_media(path)

    def open_media(self, path: str) -> Task:
        self.statusBar().showMessage(f"Opening {path}…")
        return self.tasks.run(ops.probe_job, str(path), pool="io", name="open media",
                              key="open-media").on_done(self._media_probed).on_error(
            lambda e: self.show_error(describe(e) if is_expected(e) and str(path) in describe(e)
                                      else f"Cannot open {path}: {describe(e)}"))

    def _media_probed(self, info: MediaInfo) -> None:
        self.fetcher.forget()
        self.session.set_media(info)
        self.settings.add_recent("recent_media", info.path)
        self.statusBar().showMessage(" ".join((info.summary(), *info.notes)), 30000 if info.notes else 8000)
        self.info_label.setText(f"<b>{Path(info.path).name}</b><br>{info.summary()}")
        if info.has_video:
            self.tasks.run(ops.frame_times_job, info.path, pool="io", name="frame index",
                           key="frame-index").on_done(self._frame_times).on_error(
                lambda e: log.warning("frame index failed: %s", e))
        self._attach_media(info)
        self.media_ready.emit(info)

    def _attach_media(self, info: MediaInfo) -> None:
        """Find (or add) the open file in the current project, so that results are stored
        against this project's row for it; called again when the project changes."""
        if self.project is not None and not self.project.read_only:
            self._db(ops.register_media, self.project, info, name="add media").on_done(
                lambda mid: self._media_registered(info, mid)).on_error(
                lambda e: self.show_error(f"Could not add {Path(info.path).name} to the project: {describe(e)}"))
        elif self.project is not None:
            rec_task = self._db(self.project.find_media, info.path, name="find media")
            rec_task.on_done(lambda rec: self._media_registered(info, rec.id if rec else None))
        else:
            self._media_registered(info, None)

    def _frame_times(self, times) -> None:
        self.session.set_frame_times(times)

    def _media_registered(self, info: MediaInfo, media_id: int | None) -> None:
        if self.session.info is not info:
            return  # another file was opened meanwhile
        self.session.media_id = media_id
        if media_id is not None:
            self._refresh_media_list()
            self._db(load_stored, self.project, media_id, name="load cached results").on_done(
                lambda res: self._cached_loaded(info, res)).on_error(
                lambda e: (log.warning("cache load failed: %s", e), self._cached_loaded(info, (None, [], []))))
        else:
            self._cached_loaded(info, (None, [], []))

    def _cached_loaded(self, info: MediaInfo, res) -> None:
        if self.session.info is not info:
            return
        pyr, tracks, events = res
        self.anomalies.show_stored(events)  # this file's events, not the previous file's
        for tr in tracks:
            self.session.timeline.set_track(tr)
        if not info.has_audio:
            self.waveform_ready.emit()
        elif pyr is not None:
            self.session.set_waveform(pyr)
            self.waveform_ready.emit()
        else:
            self._compute_waveform(info)

    def _compute_waveform(self, info: MediaInfo) -> None:
        # Stored only under the project and id the file had when the build started: a build
        # started before the file was attached to a project (the project still opening) must
        # not add a second waveform run beside the one that project already holds.
        mid0, proj0 = self.session.media_id, self.project

        def partial(pyr):
            if self.session.info is info:
                self.session.set_waveform(pyr)

        def done(result):
            pyr, run = result
            if self.session.info is not info:
                return
            self.session.set_waveform(pyr)
            self.waveform_ready.emit()
            mid, proj = self.session.media_id, self.project
            if mid is not None and mid == mid0 and proj is proj0 and proj is not None and not proj.read_only:
                self._db(ops.store_waveform, proj, mid, pyr, run, name="store waveform").on_done(
                    lambda _run_id: self.waveform_stored.emit(mid)).on_error(
                    lambda e: self.show_error(f"Could not store the waveform in the project: {describe(e)}"))

        self.tasks.run(ops.timed_waveform, WaveformRequest(info.path), pool="compute",
                       name="waveform", key="waveform").on_partial(partial).on_done(done).on_error(
            lambda e: self.show_error(f"Cannot read the audio of {Path(info.path).name}: {describe(e)}"))

    def _on_media_changed(self, info) -> None:
        if info is None:
            self.setWindowTitle("Kestrel")

    # -- live --------------------------------------------------------------------------
    def choose_stream(self) -> None:
        from PySide6.QtWidgets import QInputDialog
        text, ok = QInputDialog.getText(
            self, "Open stream", "Camera index (0, 1…), stream URL (rtsp://, http://, udp://, tcp://),\n"
            "or a video file to play as live:", text=str(self.settings.get("last_stream") or "0"))
        if ok and text.strip():
            self.open_stream(text.strip())

    def open_stream(self, spec: str, *, realtime: bool | None = None, loop: bool = False) -> None:
        self.session.playing = False
        self.session.set_media(None)
        self.fetcher.forget()
        self.settings.set("last_stream", spec)
        self.setWindowTitle(f"Kestrel — live: {spec}")
        self.live.start(spec, realtime=realtime, loop=loop)

    def stop_stream(self) -> None:
        self.live.stop()

    def _live_stopped(self, why: str) -> None:
        self.statusBar().showMessage(f"live stream stopped: {why}", 15000)
        if why not in ("stopped", "ended", "cancelled"):
            self.show_error(f"Live stream: {why}")

    # -- drag and drop -------------------------------------------------------------------
    def dragEnterEvent(self, ev) -> None:
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        first = paths[0]
        if first.endswith(".kestrel"):
            self.open_project(first)
        else:
            self.open_media(first)
        ev.acceptProposedAction()

    # -- shutdown ------------------------------------------------------------------------
    def closeEvent(self, ev) -> None:
        if getattr(self, "_shut", False):
            super().closeEvent(ev)
            return
        self._shut = True
        self.session.playing = False
        self.live.stop()
        proj = self.project
        self.project = None
        if proj is not None:
            self._db(proj.close, name="close project")
        self.fetcher.shutdown()
        self.tasks.shutdown(wait=True)
        super().closeEvent(ev)

