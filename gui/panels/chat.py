"""Chat with a multimodal LLM about the open file or the live stream.

Each question runs :func:`core.chat.session.answer` on the compute worker: the recent
window is encoded for the machine (question-aware regions, ultra-low bitrate), grounded in
the perception log, and answered by the chosen backend; tokens stream into the panel.
Timestamps in answers are links that seek the player; where the answer names an object seen at
that time, the link also shows that object's boxes on the video as the answer's evidence
(:attr:`core.chat.session.ChatAnswer.evidence`, the overlay's evidence layer) until the next
question or another link. The meter shows the kbps the model
was given beside what a human-quality stream of the same frames costs: per answer, and —
while a live source runs — continuously, from :class:`core.chat.live.LiveStreamMeter`, a live
processor that encodes on the live worker; the panel only shows the numbers it reports.
"""
from __future__ import annotations

import html
import logging
import math

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextBrowser,
                               QVBoxLayout, QWidget)

from core.chat import make_backend
from core.chat.live import LivePerception, LiveStreamMeter, StreamRate
from core.errors import describe
from core.timefmt import timecode

log = logging.getLogger(__name__)


class ChatPanel(QWidget):
    """Signals: ``answered(answer)``, ``meter_changed(rate)`` (a :class:`StreamRate` from the live
    stream, or a :class:`core.chat.session.ChatAnswer`'s numbers after an answer)."""

    answered = Signal(object)
    meter_changed = Signal(object)

    def __init__(self, bench, parent=None, overlay=None):
        super().__init__(parent)
        self.bench = bench  # gui.workbench.Workbench: tasks, session, settings, project, live, show_error
        self.session = bench.session
        self.overlay = overlay  # core.perception.overlay.OverlayModel: where cited boxes are shown
        self._cited: list[list] = []  # per answer shown, its evidence (core.chat.cited.CitedBox)
        self.backend = None
        self._backend_key = None
        self.task = None
        self.frames_override: list[float] | None = None
        self.perception = LivePerception()
        self.stream_meter = LiveStreamMeter(perception=self.perception)
        self.live_rate: StreamRate | None = None
        self.selftest = None  # the self-test window, made on first use
        self._noted = False
        self.history = QTextBrowser()
        self.history.setOpenLinks(False)
        self.history.document().setDefaultStyleSheet("a { color: #61afef; } p { margin: 4px 0; }")
        self._entries: list[str] = []  # finished HTML paragraphs; the streaming answer is drawn after them
        self.history.anchorClicked.connect(self._on_link)
        from models.llm.local import local_chat_models

        self.kind = QComboBox()
        for spec in local_chat_models():  # the default first; data "local:<catalogue name>"
            self.kind.addItem(f"Embedded LLM ({spec.title.split(' (')[0]}, local)", f"local:{spec.name}")
        self.kind.addItem("OpenAI-compatible server (Ollama, llama.cpp, vLLM)", "server")
        self.kind.setCurrentIndex(max(0, self.kind.findData(bench.settings.get("chat_kind") or "")))
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.url = QLineEdit(str(bench.settings.get("chat_url") or "http://127.0.0.1:11434/v1"))
        self.model = QLineEdit(str(bench.settings.get("chat_model") or ""))
        self.model.setPlaceholderText("model name on the server")
        self.question = QLineEdit()
        self.question.setPlaceholderText("Ask about the video, e.g. “is anyone at the gate?”")
        self.question.returnPressed.connect(self.ask)
        self.ask_btn = QPushButton("Ask")
        self.ask_btn.clicked.connect(self.ask)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        self.selftest_btn = QPushButton("Self-test…")
        self.selftest_btn.setToolTip("Questions with known answers on real clips, answered at several bitrates: "
                                     "see where the chosen model stops coping")
        self.selftest_btn.clicked.connect(self.open_selftest)
        self.live_meter = QLabel("")
        self.live_meter.setWordWrap(True)
        self.live_meter.setVisible(False)
        self.meter = QLabel("stream to the model: —")
        self.meter.setWordWrap(True)
        self.meter.setToolTip("Bitrate of the machine-oriented stream the model saw, beside a human-quality "
                              "H.264 stream of the same frames")
        server = QHBoxLayout()
        server.addWidget(self.url, 2)
        server.addWidget(self.model, 1)
        self.server_row = QWidget()
        self.server_row.setLayout(server)
        self._on_kind()  # hidden unless the saved choice is a server
        ask = QHBoxLayout()
        ask.addWidget(self.question, 1)
        ask.addWidget(self.ask_btn)
        ask.addWidget(self.stop_btn)
        top = QHBoxLayout()
        top.addWidget(self.kind, 1)
        top.addWidget(self.selftest_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.server_row)
        lay.addWidget(self.history, 1)
        lay.addWidget(self.live_meter)
        lay.addWidget(self.meter)
        lay.addLayout(ask)
        self._current = ""

    def _on_kind(self) -> None:
        self.server_row.setVisible(self.kind.currentData() == "server")

    # -- the live meter ------------------------------------------------------------------
    def attach_live(self, live) -> None:
        """Watch ``live`` (a :class:`gui.live_controller.LiveController`): the chat's live
        perception and the meter run on its worker for every stream started from now on."""
        for proc in (self.perception, self.stream_meter):  # in this order: the meter reads the boxes
            if proc not in live.processors:
                live.processors.append(proc)
        live.event.connect(self.on_live_event)
        live.stopped.connect(self._live_stopped)

    def on_live_event(self, payload, _t: float) -> None:
        """A live processor's event (UI thread); the meter's readings are ours."""
        if not isinstance(payload, StreamRate):
            return
        self.live_rate = payload
        self._render_live(None)
        self.meter_changed.emit(payload)

    def _render_live(self, stopped: str | None) -> None:
        r = self.live_rate
        if r is None:
            return
        ratio = f"1/{r.ratio:.0f}" if math.isfinite(r.ratio) and r.ratio >= 1 else f"×{r.ratio:.2f}"
        head = (f"<b>stream {html.escape(stopped)}</b> — last reading" if stopped else
                "<span style='color:#e06c75'>●</span> <b>live</b>")
        full = 200  # px of the human-quality bar; the model's bar is to scale (linear)
        mine = max(2, round(full * r.kbps / r.human_kbps)) if r.human_kbps else 0

        def bar(width: int, color: str) -> str:
            return (f"<table cellspacing=0 cellpadding=0><tr><td width={width} height=9 bgcolor='{color}'></td>"
                    f"</tr></table>") if width else ""
        human = (f"<tr><td>human-quality H.264&nbsp;</td><td align=right><b>{r.human_kbps:,.0f} kbps</b>&nbsp;</td>"
                 f"<td>{bar(full, '#7f848e')}</td></tr>") if r.human_kbps else ""
        self.live_meter.setText(
            f"{head} · the model's stream is <b style='color:#98c379'>{ratio}</b> of a human-quality one"
            f"<table cellspacing=2 cellpadding=0>"
            f"<tr><td>stream to the model&nbsp;</td><td align=right><b style='color:#61afef'>{r.kbps:.1f} kbps</b>"
            f"&nbsp;</td><td>{bar(mine, '#61afef')}</td></tr>{human}</table>"
            f"<span style='color:#888'>over the last {r.window_s:.0f} s · {r.frames_sent} of {r.frames_in} frames "
            f"sent so far, at {r.size[0]}×{r.size[1]} ({r.codec}) · source {r.source_size[0]}×{r.source_size[1]}"
            f"</span>")
        self.live_meter.setToolTip(f"The machine-oriented stream ({r.codec}, frames sent on semantic change) and a "
                                   f"human-quality H.264 stream (CRF 23, every frame, full size) of the same "
                                   f"live frames, both encoded on the live worker ({r.cost_ms:.1f} ms per frame).")
        self.live_meter.setVisible(True)

    def _live_stopped(self, why: str) -> None:
        self._render_live(why)

    def open_selftest(self) -> None:
        """The self-test window for the chosen model (made once; it keeps its last run)."""
        from core.settings import data_dir
        from gui.panels.chat_selftest import SelfTestView

        key = self._key()
        if key[0] == "server" and not key[2]:
            self.bench.show_error("Name the model to use on the server.")
            return
        if self.selftest is None:
            self.selftest = SelfTestView(self.bench.tasks, folder=str(data_dir() / "chat-selftest"), parent=self)
            self.selftest.backend_loaded.connect(self._adopt)
        self.selftest.set_backend(self.backend if self._backend_key == key else None, key,
                                  self.kind.currentText() if key[0] == "local" else f"{key[2]} at {key[1]}")
        self.selftest.show()
        self.selftest.raise_()
        self.selftest.activateWindow()

    def _adopt(self, loaded) -> None:
        key, backend = loaded
        if self.backend is None:
            self.backend, self._backend_key = backend, key

    def _key(self) -> tuple[str, str, str]:
        data = str(self.kind.currentData())
        if data.startswith("local:"):  # a local chat model of the catalogue
            return ("local", "", data.partition(":")[2])
        return (data, self.url.text().strip(), self.model.text().strip())

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() != "t":
            return
        t = float(url.path() or url.toString()[2:].split("#")[0])
        frag = url.fragment()
        n = int(frag[1:]) if frag.startswith("a") and frag[1:].isdigit() else -1
        boxes = [b for b in self._cited[n] if b.cited == t] if 0 <= n < len(self._cited) else []
        self.show_evidence(boxes)
        self.session.seek(boxes[0].time if boxes else t)  # the frame the cited boxes were seen in

    def show_evidence(self, boxes: list) -> None:
        """Show these cited boxes (core.chat.cited.CitedBox) on the video, replacing any shown; [] clears."""
        if self.overlay is None:
            return
        from core.chat.cited import on_screen
        self.overlay.set_evidence(on_screen(boxes))

    def ask_about(self, times: list[float]) -> None:
        """From FOCUS's thumbnails or the player: the next question is about these frames."""
        self.frames_override = sorted(times)
        self.question.setFocus()
        self._add(f"<i>next question is about {len(times)} selected frame(s) from "
                            f"{timecode(times[0])}</i>")

    def ask(self) -> None:
        q = self.question.text().strip()
        if not q:
            return
        key = self._key()
        self.bench.settings.set("chat_kind", self.kind.currentData())
        if key[0] == "server":
            self.bench.settings.set("chat_url", key[1])
            self.bench.settings.set("chat_model", key[2])
            if not key[2]:
                self.bench.show_error("Name the model to use on the server.")
                return
        self.question.clear()
        self.show_evidence([])  # the last answer's evidence goes with it
        when = self.bench.live.last_time if self.bench.live.running else (self._at() or 0)
        self._add(f"<p><b>You</b> <span style='color:#888'>[{timecode(when)}]</span>: "
                            f"{html.escape(q)}</p>")
        self.ask_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        if self.backend is None or self._backend_key != key:
            self._add("<i>loading the model…</i>")
            self.bench.tasks.run(make_backend, key, pool="compute", name="load chat model").on_done(
                lambda b: self._loaded(key, b, q)).on_error(self._failed)
        else:
            self._ask(q)

    def _loaded(self, key, backend, q: str) -> None:
        self.backend, self._backend_key = backend, key
        self._ask(q)

    def _at(self) -> float | None:
        if self.bench.live.running:
            return None
        return self.session.position if self.session.info is not None else None

    def _ask(self, q: str) -> None:
        from core.chat.session import ChatRequest, answer

        live = self.bench.live.running
        info = self.session.info
        if not live and info is None:
            self._failed("Open a video or a stream first.")
            return
        frames = None
        at = self._at()
        if live:
            frames = self.bench.live.ring.frames
            source = self.bench.live.spec or "live"
            self.stream_meter.question = q  # the live meter's stream is steered like the answer's
        else:
            source = info.path
            if self.frames_override:
                at = self.frames_override[-1]
        # a file's log is built in the job from the tracks (big stored tracks read the project there)
        log_ = self.perception.snapshot() if live else None
        tracks = None if live else list(self.session.timeline.tracks)
        if live and self.perception.note and not self._noted:
            self._noted = True
            self._add(f"<i>{html.escape(self.perception.note)}</i>")
        req = ChatRequest(question=q, backend=self.backend, source=source, at=at, frames=frames, log=log_,
                          tracks=tracks, reference=True)
        self.frames_override = None
        self._current = ""
        self._render_current("…")

        def partial(p) -> None:
            self._current = p.text
            self._render_current(p.text + " ▍")

        self.task = self.bench.tasks.run(answer, req, pool="compute", name="chat", key="chat", visible=False)
        self.task.on_partial(partial).on_done(self._done).on_error(self._failed).on_cancel(
            lambda: self._finish_ui("(stopped)"))

    def _add(self, html_text: str) -> None:
        self._entries.append(html_text)
        self._render_current(None)

    def _render_current(self, text: str | None) -> None:
        tail = f"<p><b>Kestrel</b>: {html.escape(text)}</p>" if text else ""
        self.history.setHtml("".join(self._entries) + tail)
        bar = self.history.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _done(self, ans) -> None:
        n = len(self._cited)
        evidence = list(getattr(ans, "evidence", None) or [])
        self._cited.append(evidence)
        body = html.escape(ans.text or "")
        for c in sorted(ans.citations, key=lambda c: -c.start):
            body = body.replace(html.escape(c.text), f"<a href='t:{c.seconds}#a{n}'>{html.escape(c.text)}</a>", 1)
        extra = []
        if ans.partial:
            extra.append("partial answer")
        if ans.error:
            extra.append(html.escape(ans.error))
        if ans.corrected:
            extra.append("; ".join(ans.notes) or "corrected from the perception log")
        seen = ", ".join(f"<a href='t:{t}'>{timecode(t)[3:]}</a>" for t in ans.frames_seen[:6])
        if evidence:
            extra.append(_evidence_note(evidence))
        note = f"<br><span style='color:#999'>{'; '.join(extra)}</span>" if extra else ""
        self._add(f"<p><b>Kestrel</b> ({html.escape(ans.model)}): {body}{note}<br>"
                            f"<span style='color:#888'>saw {seen or 'no frames'} · {ans.kbps:.1f} kbps · "
                            f"encode {ans.encode_s:.2f} s, transfer {ans.transfer_s:.2f} s, "
                            f"answer {ans.inference_s:.2f} s</span></p>")
        human = f" (human-quality H.264 of the same frames: {ans.human_kbps:,.0f} kbps, " \
                f"1/{ans.human_kbps / max(ans.kbps, 1e-9):.0f})" if ans.human_kbps else ""
        self.meter.setText(f"last answer: {ans.kbps:.1f} kbps to the model{human}, "
                           f"{ans.frames_sent} frame(s) encoded")
        self.meter_changed.emit(ans)
        self._finish_ui(None)
        proj, mid = self.bench.project(), self.session.media_id
        if proj is not None and mid is not None and not proj.read_only and not self.bench.live.running:
            from core.chat.history import save_chat
            self.bench.tasks.call(save_chat, proj, mid, ans, pool="db", name="store chat").on_error(
                lambda e: log.warning("could not store the chat: %s", e))
        self.answered.emit(ans)

    def _failed(self, e: BaseException | str) -> None:
        self._add(f"<p style='color:#e06c75'>{html.escape(e if isinstance(e, str) else describe(e))}</p>")
        self._finish_ui(None)

    def _finish_ui(self, note: str | None) -> None:
        if note:
            self._add(f"<i>{note}</i>")
        self.ask_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)

    def stop(self) -> None:
        if self.backend is not None and hasattr(self.backend, "stop"):
            self.backend.stop()
        if self.task is not None:
            self.task.cancel()


def _evidence_note(evidence: list) -> str:
    """What an answer's links show, e.g. "click a time to see the boxes it cites — 00:02: 5 person box(es), 1
    unconfirmed"."""
    parts = []
    for t in dict.fromkeys(b.cited for b in evidence):
        mine = [b for b in evidence if b.cited == t]
        labels = ", ".join(dict.fromkeys(b.label for b in mine))
        weak = sum(b.confirmed is False for b in mine)
        own = " by the chat's own look" if all(b.source == "chat" for b in mine) else ""
        parts.append(f"{timecode(t)[3:8]}: {len(mine)} {html.escape(labels)} box(es){own}"
                     + (f", {weak} unconfirmed" if weak else ""))
    return "click a time to see the boxes it cites — " + "; ".join(parts)
