"""The chat's history in the project: each question and answer a marker on the media's "chat" track."""
from __future__ import annotations

import time
from typing import Any

CHAT_TRACK = ("chat", "chat")


def save_chat(project: Any, media_id: int, ans: Any) -> int:
    """Store one question and answer (a :class:`core.chat.session.ChatAnswer`) as a marker on the
    media's "chat" track (run the call on the database worker). The provenance — model, bitrate,
    frames — rides in the item's data and in a recorded run; no API key or server secret is ever
    part of it."""
    from models.catalogue import provenance_of

    at = float(ans.at or 0.0)
    latency = {"encode_s": round(ans.encode_s, 3), "transfer_s": round(ans.transfer_s, 3),
               "inference_s": round(ans.inference_s, 3), "perceive_s": round(ans.perceive_s, 3)}
    with project.batch():  # the run and its marker commit together
        run_id = project.record_run(kind="chat", producer=ans.model, version="1",
                                    params={"question": ans.question, "kbps": round(ans.kbps, 2),
                                            "frames": [round(t, 3) for t in ans.frames_seen],
                                            **provenance_of([ans.model])},
                                    media_id=media_id, started_at=time.time(),
                                    duration_s=ans.encode_s + ans.transfer_s + ans.inference_s + ans.perceive_s,
                                    status="failed" if ans.error and not ans.text else "ok", error=ans.error)
        item = {"start_s": at, "end_s": at, "label": ans.question[:500], "confidence": None, "run_id": run_id,
                "data": {"answer": ans.text, "model": ans.model, "kbps": round(ans.kbps, 2),
                         "human_kbps": None if ans.human_kbps is None else round(ans.human_kbps, 2),
                         "frames": [round(t, 3) for t in ans.frames_seen], "partial": ans.partial,
                         "error": ans.error, "citations": [[c.text, c.seconds] for c in ans.citations],
                         "latency": latency,
                         # the boxes the answer cites (core.chat.cited.CitedBox), with their verdicts
                         "evidence": [{"cited": b.cited, "time": b.time, "box": [round(float(v), 1) for v in b.box],
                                       "size": list(b.size), "label": b.label, "score": round(float(b.score), 3),
                                       "confirmed": b.confirmed, "source": b.source}
                                      for b in getattr(ans, "evidence", None) or ()]}}
        for tr in project.load_tracks(media_id):
            if (tr.kind, tr.name) == CHAT_TRACK:
                project.append_items(tr.id, [item])
                return tr.id
        return project.save_track(media_id, CHAT_TRACK[0], CHAT_TRACK[1], [item], meta={"kind": "chat history"})


def load_chat(project: Any, media_id: int) -> list[dict[str, Any]]:
    """The stored chat of a media file, oldest first: {"at", "question", **data}."""
    out = []
    for tr in project.load_tracks(media_id):
        if (tr.kind, tr.name) == CHAT_TRACK:
            out += [{"at": i.start_s, "question": i.label, **dict(i.data)} for i in tr.items]
    return sorted(out, key=lambda d: d["at"])
