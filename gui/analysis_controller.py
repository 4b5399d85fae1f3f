"""Runs the perception job (:mod:`core.perception`) for the main window: reuse, progress,
partial tracks, storage.

Flow: ask the database worker which models already have results with these settings →
run the others on the compute worker, showing partial tracks as they come → store each
model's run and tracks on the database worker → reload the media's tracks from the project.
A cancelled or failed model leaves a run marked so, never tracks that look complete.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from core.perception import ops
from core.perception.analysis import AnalysisPartial, AnalysisRequest, analyze, partial_tracks

log = logging.getLogger(__name__)


class AnalysisController(QObject):
    """Signals: ``analysis_finished(summary: str)`` after results are stored and shown."""

    analysis_finished = Signal(str)

    def __init__(self, bench, parent: QObject | None = None):
        super().__init__(parent)
        self.bench = bench  # gui.workbench.Workbench: tasks, session, project, errors
        self._titles: dict[str, str] = {}

    def user_paths(self) -> tuple[tuple[str, str], ...]:
        paths = self.bench.settings.get("model_paths")
        return tuple(sorted((k, v) for k, v in paths.items() if isinstance(v, str))) if isinstance(paths, dict) else ()

    def start(self, models: tuple[str, ...], fps: float, span: tuple[float, float] | None = None,
              device: str | None = None) -> None:
        w = self.bench
        info, media_id, project = w.session.info, w.session.media_id, w.project()
        if info is None:
            w.show_error("Open a media file first.")
            return
        start, end = span if span else (0.0, None)
        req = AnalysisRequest(path=info.path, models=models, fps=fps, start=start, end=end,
                              user_paths=self.user_paths(), device=device)
        if project is None or media_id is None or project.read_only:
            self._run(req, info, None, {})
            return
        # the scene's confusions (core.perception.confirm) come with the request; then the reuse check
        w.tasks.call(ops.analysis_plan, project, media_id, req, info.duration_s, pool="db",
                     name="check stored results").on_done(
            lambda plan: self._run(plan[0], info, media_id, plan[1])).on_error(
            lambda e: w.show_error(f"Could not read stored results: {e}"))

    def _run(self, req: AnalysisRequest, info, media_id, cached: dict[str, int]) -> None:
        w = self.bench
        todo = tuple(m for m in req.models if m not in cached)
        if not todo:
            w.show_status(f"All {len(cached)} models already have results for these settings "
                                      "(reused).", 8000)
            self._reload(media_id, f"reused {len(cached)} stored results")
            return
        from models.catalogue import ModelError, get_spec
        for name in todo:
            try:
                self._titles[name] = get_spec(name).title
            except ModelError:
                self._titles[name] = name
        step = 1.0 / req.fps
        job_req = replace(req, models=todo)

        def partial(p: AnalysisPartial) -> None:
            if w.session.info is not info:
                return
            for tr in partial_tracks(p, self._titles.get(p.model, p.model), step):
                if w.session.timeline.track(tr.kind, tr.name) is None:
                    w.session.timeline.set_track(tr)  # with its meta and visibility (unconfirmed: hidden)
                else:
                    w.session.timeline.add_items(tr.kind, tr.name, tr.items)

        def done(result) -> None:
            errors = result.errors
            for msg in errors.values():
                w.show_error(msg)
            ok = [o for o in result.outputs.values() if not o.error]
            summary = (f"analysed {len(ok)} model(s) in {result.compute_s:.1f} s"
                       + (f", reused {len(cached)}" if cached else "")
                       + (f", {len(errors)} failed" if errors else "")
                       + "".join(f"; {n}: {why}" for n, why in result.skipped.items()))  # not applicable
            if media_id is None or w.project() is None or w.project().read_only:
                self._show_unsaved(result, step, summary)
                return
            w.tasks.call(ops.store_analyses, w.project(), media_id, list(result.outputs.values()), step,
                         pool="db", name="store results").on_done(
                lambda _r: self._reload(media_id, summary)).on_error(
                lambda e: w.show_error(f"Could not store the analysis results: {e}"))

        def cancelled() -> None:
            w.show_status("Analysis cancelled: nothing was stored for it.", 8000)
            if media_id is not None and w.project() is not None and not w.project().read_only:
                w.tasks.call(ops.record_cancelled, w.project(), media_id, req, info.duration_s, todo, pool="db")
            self._reload(media_id, "cancelled")

        def failed(e) -> None:
            w.show_error(f"Analysis failed: {e}")
            self._reload(media_id, "failed")

        w.tasks.run(analyze, job_req, pool="compute", name="analysis", key="analysis").on_partial(
            partial).on_done(done).on_cancel(cancelled).on_error(failed)

    def _reload(self, media_id, summary: str) -> None:
        """Show exactly what the project holds for the media (drops partial tracks)."""
        w = self.bench
        if media_id is None or w.project() is None:
            self.analysis_finished.emit(summary)
            return
        proj = w.project()
        w.tasks.call(ops.load_timeline, proj, media_id, pool="db", name="load tracks").on_done(
            lambda tracks: self._set_tracks(media_id, tracks, summary))

    def _set_tracks(self, media_id, tracks, summary: str) -> None:
        w = self.bench
        if w.session.media_id != media_id:
            return
        w.session.timeline.clear()
        for tr in tracks:
            w.session.timeline.set_track(tr)
        w.show_status(summary, 8000)
        self.analysis_finished.emit(summary)

    def _show_unsaved(self, result, step: float, summary: str) -> None:
        from core.perception.analysis import tracks_for
        w = self.bench
        for out in result.outputs.values():
            if not out.error and out.task != "?":
                for tr in tracks_for(out, step):
                    w.session.timeline.set_track(tr)
        w.show_status(summary + " (not stored: no writable project)", 8000)
        self.analysis_finished.emit(summary)

