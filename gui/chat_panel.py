"""Chat with a multimodal LLM about the open file or the live stream.

Each question runs :func:`core.chat.session.answer` on the compute worker: the recent
window is encoded for the machine (question-aware regions, ultra-low bitrate), grounded in
the perception log, and answered by the chosen backend; tokens stream into the panel.
Timestamps in answers are links that seek the player. The meter shows the kbps the model
was given beside what a human-quality stream of the same frames costs.
"""
from __future__ import annotations

import html
import logging

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QTextBrowser,
                               QVBoxLayout, QWidget)

from core.session import format_time

log = logging.getLogger(__name__)


def make_backend(request: tuple[str, str, str], state):
    """Job: load the chosen model (seconds for the local GGUF; a server is only configured)."""
    kind, url, model = request
    if kind == "server":
        from models.llm.openai_compat import OpenAICompatLLM
        return OpenAICompatLLM(url, model)
    from models.catalogue import load_model
    return load_model("qwen2.5-0.5b-chat")


class ChatPanel(QWidget):
    """Signals: ``answered(answer)``."""

    answered = Signal(object)

    def __init__(self, window, parent=None):
        super().__init__(parent)
        self.w = window
        self.session = window.session
        self.backend = None
        self._backend_key = None
        self.task = None
        self.frames_override: list[float] | None = None
        self.history = QTextBrowser()
        self.history.setOpenLinks(False)
        self.history.document().setDefaultStyleSheet("a { color: #61afef; } p { margin: 4px 0; }")
        self._entries: list[str] = []  # finished HTML paragraphs; the streaming answer is drawn after them
        self.history.anchorClicked.connect(self._on_link)
        self.kind = QComboBox()
        self.kind.addItem("Embedded LLM (Qwen2.5 0.5B, local)", "local")
        self.kind.addItem("OpenAI-compatible server (Ollama, llama.cpp, vLLM)", "server")
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.url = QLineEdit(str(window.settings.get("chat_url") or "http://127.0.0.1:11434/v1"))
        self.model = QLineEdit(str(window.settings.get("chat_model") or ""))
        self.model.setPlaceholderText("model name on the server")
        self.question = QLineEdit()
        self.question.setPlaceholderText("Ask about the video, e.g. “is anyone at the gate?”")
        self.question.returnPressed.connect(self.ask)
        self.ask_btn = QPushButton("Ask")
        self.ask_btn.clicked.connect(self.ask)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.clicked.connect(self.stop)
        self.meter = QLabel("stream to the model: —")
        self.meter.setToolTip("Bitrate of the machine-oriented stream the model saw, beside a human-quality "
                              "H.264 stream of the same frames")
        server = QHBoxLayout()
        server.addWidget(self.url, 2)
        server.addWidget(self.model, 1)
        self.server_row = QWidget()
        self.server_row.setLayout(server)
        self.server_row.setVisible(False)
        ask = QHBoxLayout()
        ask.addWidget(self.question, 1)
        ask.addWidget(self.ask_btn)
        ask.addWidget(self.stop_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.kind)
        lay.addWidget(self.server_row)
        lay.addWidget(self.history, 1)
        lay.addWidget(self.meter)
        lay.addLayout(ask)
        self._current = ""

    def _on_kind(self) -> None:
        self.server_row.setVisible(self.kind.currentData() == "server")

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() == "t":
            self.session.seek(float(url.path() or url.toString()[2:]))

    def ask_about(self, times: list[float]) -> None:
        """From FOCUS's thumbnails or the player: the next question is about these frames."""
        self.frames_override = sorted(times)
        self.question.setFocus()
        self._add(f"<i>next question is about {len(times)} selected frame(s) from "
                            f"{format_time(times[0])}</i>")

    def ask(self) -> None:
        q = self.question.text().strip()
        if not q:
            return
        key = (self.kind.currentData(), self.url.text().strip(), self.model.text().strip())
        if key[0] == "server":
            self.w.settings.set("chat_url", key[1])
            self.w.settings.set("chat_model", key[2])
            if not key[2]:
                self.w.show_error("Name the model to use on the server.")
                return
        self.question.clear()
        self._add(f"<p><b>You</b> <span style='color:#888'>[{format_time(self._at() or 0)}]</span>: "
                            f"{html.escape(q)}</p>")
        self.ask_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        if self.backend is None or self._backend_key != key:
            self._add("<i>loading the model…</i>")
            self.w.tasks.run(make_backend, key, pool="compute", name="load chat model").on_done(
                lambda b: self._loaded(key, b, q)).on_error(self._failed)
        else:
            self._ask(q)

    def _loaded(self, key, backend, q: str) -> None:
        self.backend, self._backend_key = backend, key
        self._ask(q)

    def _at(self) -> float | None:
        if self.w.live.running:
            return None
        return self.session.position if self.session.info is not None else None

    def _ask(self, q: str) -> None:
        from core.chat.grounding import PerceptionLog
        from core.chat.session import ChatRequest, answer

        live = self.w.live.running
        info = self.session.info
        if not live and info is None:
            self._failed(ValueError("Open a video or a stream first."))
            return
        frames = None
        at = self._at()
        if live:
            frames = self.w.live.ring.frames
            source = self.w.live.spec or "live"
        else:
            source = info.path
            if self.frames_override:
                at = self.frames_override[-1]
        log_ = PerceptionLog.from_tracks(self.session.timeline.tracks)
        req = ChatRequest(question=q, backend=self.backend, source=source, at=at, frames=frames, log=log_,
                          reference=True)
        self.frames_override = None
        self._current = ""
        self._render_current("…")

        def partial(p) -> None:
            self._current = p.text
            self._render_current(p.text + " ▍")

        self.task = self.w.tasks.run(answer, req, pool="compute", name="chat", key="chat", visible=False)
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
        body = html.escape(ans.text or "")
        for c in sorted(ans.citations, key=lambda c: -c.start):
            body = body.replace(html.escape(c.text), f"<a href='t:{c.seconds}'>{html.escape(c.text)}</a>", 1)
        extra = []
        if ans.partial:
            extra.append("partial answer")
        if ans.error:
            extra.append(html.escape(ans.error))
        if ans.corrected:
            extra.append("; ".join(ans.notes) or "corrected from the perception log")
        seen = ", ".join(f"<a href='t:{t}'>{format_time(t)[3:]}</a>" for t in ans.frames_seen[:6])
        note = f"<br><span style='color:#999'>{'; '.join(extra)}</span>" if extra else ""
        self._add(f"<p><b>Kestrel</b> ({html.escape(ans.model)}): {body}{note}<br>"
                            f"<span style='color:#888'>saw {seen or 'no frames'} · {ans.kbps:.1f} kbps · "
                            f"encode {ans.encode_s:.2f} s, transfer {ans.transfer_s:.2f} s, "
                            f"answer {ans.inference_s:.2f} s</span></p>")
        human = f" (human-quality stream: {ans.human_kbps:.0f} kbps, ×{ans.human_kbps / max(ans.kbps, 1e-9):.0f})" \
            if ans.human_kbps else ""
        self.meter.setText(f"stream to the model: {ans.kbps:.1f} kbps{human}")
        self._finish_ui(None)
        proj, mid = self.w.project, self.session.media_id
        if proj is not None and mid is not None and not proj.read_only and not self.w.live.running:
            from core.chat.session import save_chat
            self.w.tasks.call(save_chat, proj, mid, ans, pool="db", name="store chat").on_error(
                lambda e: log.warning("could not store the chat: %s", e))
        self.answered.emit(ans)

    def _failed(self, e) -> None:
        self._add(f"<p style='color:#e06c75'>{html.escape(str(e))}</p>")
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
