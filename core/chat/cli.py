"""Headless chat: ``python main.py chat SOURCE --ask "..." [--at SECONDS] [--server URL --model NAME]``.

Prints the answer as it streams, then the times it cites (clickable in the GUI), the bitrate
the model was given beside a human-quality stream of the same frames, and where the time
went. SOURCE is a file (perception runs over the window before ``--at``, or the project's
stored tracks are used with ``--project``), a camera index or a stream URL (Kestrel listens
for ``--listen`` seconds, running the detector as it goes, then asks).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from core import cliargs
from core.chat.grounding import PerceptionLog
from core.chat.session import ChatAnswer, ChatPartial, ChatRequest, EncoderSettings, answer, perceive_file
from core.cli import open_project
from core.errors import describe, print_error
from core.jobs import HeadlessState
from core.timefmt import clock


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("source", help="a video file, a camera index (0) or a stream URL (rtsp://…, http://…)")
    ap.add_argument("--ask", required=True, type=cliargs.text("the question"), help="the question")
    ap.add_argument("--at", type=cliargs.seconds, default=None,
                    help="the moment asked about, in seconds (default: the end)")
    ap.add_argument("--window", type=cliargs.duration(hi=86_400.0), default=30.0,
                    help="seconds before --at the answer looks at (30)")
    ap.add_argument("--server", help="an OpenAI-compatible server (Ollama, llama.cpp, vLLM), e.g. "
                                     "http://localhost:11434/v1; default: the embedded model")
    ap.add_argument("--model", help="the model name on --server; without --server, the local chat model "
                                    "(`main.py models` lists them: qwen2.5-0.5b-chat, qwen2.5-1.5b-chat)")
    ap.add_argument("--key-env", default="KESTREL_LLM_API_KEY",
                    help="environment variable holding the server's API key (else the OS keyring)")
    ap.add_argument("--project", help="a .kestrel project: use its stored perception and keep the chat there")
    ap.add_argument("--listen", type=cliargs.duration(hi=3600.0), default=10.0,
                    help="seconds to watch a live source before asking (10)")
    ap.add_argument("--connect-timeout", type=cliargs.duration(hi=600.0), default=20.0,
                    help="seconds a live source may take to send its first frame before Kestrel gives up (20)")
    ap.add_argument("--max-side", type=cliargs.integer(16, 4096, what="a frame side in pixels"), default=640,
                    help="longer side of the frames sent (640)")
    ap.add_argument("--crf", type=cliargs.integer(0, 51, what="a CRF"), default=36,
                    help="codec quality 0..51, higher is fewer bits (36)")
    ap.add_argument("--codec", choices=("h264", "hevc"), default="h264")
    ap.add_argument("--max-tokens", type=cliargs.integer(1, 32_768, what="a number of tokens"), default=160)
    ap.add_argument("--timeout", type=cliargs.duration(hi=3600.0), default=60.0,
                    help="seconds a server may stay silent (60)")
    cliargs.add_device(ap)


def run(args: argparse.Namespace) -> int:
    cliargs.check_device(args.device)
    if not args.ask.strip():
        raise cliargs.BadArgument("argument --ask: the question is empty")
    if args.server and not args.model:
        raise cliargs.BadArgument("argument --server: needs --model (the model's name on that server)")
    if not args.server and args.model:  # a local chat model: checked before anything is opened
        from models.llm.local import local_chat_models
        names = [m.name for m in local_chat_models()]
        if args.model not in names:
            raise cliargs.BadArgument(f"argument --model: {args.model!r} is not a local chat model "
                                      f"(choose {', '.join(names)}, or give --server)")
    src = args.source
    if not src.strip():
        raise cliargs.BadArgument("argument source: it is empty (give a video file, a camera index or a stream URL)")
    is_file = not (src.isdigit() or "://" in src)
    if is_file and not Path(src).exists():  # before loading a model: nothing to look at
        print_error(no_frames(src, "it does not exist"))
        return 1
    frames = None
    at = args.at
    if is_file:  # the window's frames first: with none, there is nothing to perceive or ask
        from core.media.decode import probe
        info = probe(src, with_hash=False)
        cliargs.past_end("--at", args.at, info.duration_s + 1e-6, Path(info.path).name)
        if at is None and args.project:
            at = _index_moment(args.project, info.path, args.ask, args.window)
        frames, at, problem = _file_window(info, at, args.window)
        if not frames:
            print_error(no_frames(src, problem))
            return 1
    backend = _backend(args)
    settings = EncoderSettings(max_side=args.max_side, crf=args.crf, codec=args.codec)
    project = media_id = None
    try:
        if is_file:
            project, media_id, log = _file_log(args)
        else:
            frames, log, problem = _listen(src, args.listen, args.connect_timeout)
            if not frames:  # never an answer about a picture nobody saw
                print_error(no_frames(src, problem or f"nothing arrived in {args.connect_timeout:g} s"))
                return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130
    try:
        state = HeadlessState(on_partial=_print_token)
        req = ChatRequest(args.ask, backend, source=src if is_file else "", at=at, window_s=args.window,
                          frames=frames, log=log, encoder=settings, max_tokens=args.max_tokens, reference=True)
        try:
            ans = answer(req, state)
        except KeyboardInterrupt:
            print("\nstopped", file=sys.stderr)
            return 130
        _report(ans)
        if project is not None and media_id is not None and not project.read_only:
            from core.chat.session import save_chat
            save_chat(project, media_id, ans)
        return 2 if ans.error else 0
    finally:
        if project is not None:
            project.close()


def no_frames(source: str, why: str) -> str:
    """The one line for a source that gave no frame: nothing is asked then."""
    return f"no frames could be read from {source} ({why.rstrip('.')}); nothing was asked"


def _backend(args):
    """The model asked, chosen as the window chooses it (core.chat.make_backend)."""
    from core.chat import make_backend

    if args.server:
        return make_backend(("server", args.server, args.model), key_env=args.key_env, read_timeout=args.timeout)
    return make_backend(("local", "", args.model or ""))


def _file_window(info, at: float | None, window: float):
    """The frames a file's answer looks at (``window`` s up to ``at``, its end by default), as
    ``answer`` would decode them: (frames, at, why there are none or None)."""
    from core.chat.session import ChatRequest, file_frames
    from core.media.decode import MediaError

    end = info.duration_s if at is None else min(at, info.duration_s)
    if not info.has_video:
        return [], end, "it has no video stream"
    fps = ChatRequest.__dataclass_fields__["sample_fps"].default
    try:
        frames = file_frames(info.path, max(0.0, end - window), end, fps)
    except MediaError as e:
        return [], end, describe(e)
    t0 = max(0.0, end - window)
    return frames, end, None if frames else f"no frame decodes in {clock(t0)}–{clock(end)}"


def _file_log(args):
    """The perception log of a file: the project's stored tracks when there are any, else a
    perception pass over the window (detector, OCR for text questions, speech). A question about
    when speech starts or ends gets voice activity over the whole file (Silero is cheap); the log
    knows what the file holds (audio, video) and which part of it perception covered."""
    from core.chat import is_text_question
    from core.chat.grounding import question_kind
    from core.media.decode import probe

    info = probe(args.source, with_hash=args.project is not None)
    project = media_id = None
    if args.project:
        from core.perception import ops
        project = open_project(args.project)
        rec = project.find_media(info.path)
        media_id = rec.id if rec is not None else (None if project.read_only else ops.register_media(project, info))
        if media_id is not None:
            tracks = [t for t in ops.load_tracks(project, media_id) if t.kind != "chat"]
            if tracks:
                print(f"using {len(tracks)} stored perception tracks", file=sys.stderr)
                log = PerceptionLog.from_tracks(tracks)
                log.describe_media(info)
                log.seen, log.heard = stored_coverage(project, media_id, tracks, info.duration_s)
                _listen_if_missing(args.ask, info, log)
                return project, media_id, log
    at = info.duration_s if args.at is None else min(args.at, info.duration_s)
    kind = question_kind(args.ask, [])
    models = ["ssd-mobilenet-v2-coco"] + (["rapidocr"] if is_text_question(args.ask) else [])
    if info.has_audio:
        models.append("whisper-tiny")
    t0 = time.perf_counter()
    print(f"perception over {clock(max(0.0, at - args.window))}–{clock(at)} "
          f"({', '.join(models)})…", file=sys.stderr)
    log, errors = perceive_file(info.path, start=max(0.0, at - args.window), end=at + 0.5, models=models)
    if kind in ("speech", "audio", "speakers") and info.has_audio:
        # when speech starts, who speaks, which loud sounds: listen to the whole file (VAD, loud
        # sounds and the speaker encoder are cheap beside the transcriber, which keeps to the window)
        audio = ("silero-vad",) + (("resemblyzer-voices",) if kind == "speakers" else ())
        print(f"listening to the whole file ({', '.join(audio)}, loud sounds)…", file=sys.stderr)
        heard, more = perceive_file(info.path, start=0.0, end=None, models=audio)
        errors += more
        if not more:
            log.take_hearing(heard)
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return project, media_id, log


HEARD_RUNS = ("analysis/vad", "analysis/asr", "analysis/speaker-embed", "analysis/sounds", "analysis/audio-tags")


def _listen_if_missing(question: str, info, log: PerceptionLog) -> None:
    """A speaker question on a project analysed without the speaker model, or a sound question on
    one never searched for loud sounds: listen to the whole file now (VAD, speaker encoder, loud
    sounds; not stored), so the answer rests on turns and levels, not on "cannot tell"."""
    from core.chat.grounding import question_kind

    kind = question_kind(question, [])
    if not info.has_audio or (kind == "speakers" and log.turns is not None) or (
            kind == "audio" and log.sounds is not None) or kind not in ("speakers", "audio"):
        return
    audio = ("silero-vad",) + (("resemblyzer-voices",) if kind == "speakers" else ())
    print(f"the stored perception has no {'speaker turns' if kind == 'speakers' else 'loud sounds'}: listening to "
          f"the whole file ({', '.join(audio)}, loud sounds)…", file=sys.stderr)
    heard, errors = perceive_file(info.path, start=0.0, end=None, models=audio)
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    if not errors:
        log.take_hearing(heard)


def _index_moment(project_path: str, path: str, question: str, window_s: float) -> float | None:
    """Without --at: the window's end where the project's media index best matches the question
    (core.chat.session.index_moment), or None (then the file's end, as before)."""
    from core.chat.session import index_moment
    from core.perception.index import load_index
    from core.store.project import Project, ProjectError

    if not Path(project_path).exists():
        return None
    try:
        with Project.open(project_path, read_only=True) as project:
            rec = project.find_media(path)
            idx = load_index(project, rec.id) if rec is not None else None
    except ProjectError:
        return None  # the project's own problems are reported when it is opened for the log
    moment = index_moment(idx, question, None, window_s)
    if moment is None:
        return None
    print(f"the media index points to [{clock(moment[1])}] for this question (match {moment[2]:.2f})",
          file=sys.stderr)
    return moment[0]


def stored_coverage(project, media_id: int, tracks, duration: float):
    """The stretches of a file the stored perception covered, (seen, heard): from the params
    (start, end) of the analysis runs that made ``tracks``; None for a side nothing covered."""
    owners = {t.run_id for t in tracks if t.run_id is not None}
    seen: list[tuple[float, float]] = []
    heard: list[tuple[float, float]] = []
    for run in project.list_runs(media_id):
        if run.id not in owners or not str(run.kind).startswith("analysis/"):
            continue
        p = dict(run.params or {})
        a, b = float(p.get("start", 0.0) or 0.0), float(p.get("end", duration) or duration)
        (heard if run.kind in HEARD_RUNS else seen).append((a, b))

    def union(spans):
        """One covered stretch: runs that overlap or touch merge; where they leave a gap, the
        longest stretch (a gap between two runs was not looked at and must not be claimed)."""
        merged: list[list[float]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1] + 1e-6:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return tuple(max(merged, key=lambda m: m[1] - m[0])) if merged else None

    return union(seen), union(heard)


def _listen(spec: str, seconds: float, connect_timeout: float = 20.0):
    """Watch a live source for ``seconds``: frames into a ring buffer, the detector at 2 fps into
    the perception log (the live perception loop, headless). Gives up when no frame came in
    ``connect_timeout`` s. Returns (frames, log, the last problem met or None)."""
    from core.media.live import LiveError, LiveSource, RingBuffer
    from models.catalogue import ModelError, load_model

    ring = RingBuffer(seconds=max(seconds, 30.0) + 5)
    log = PerceptionLog(horizon_s=300.0, step=0.5)
    try:
        det = load_model("ssd-mobilenet-v2-coco")
    except ModelError as e:
        print_error(f"no detector ({e}); answering from the frames alone")
        det = None
    problems: list[str] = []

    def status(msg: str) -> None:
        print(f"[{spec}] {msg}", file=sys.stderr)
        if msg.startswith("cannot connect"):  # keep the OS's words: "[Errno 111] Connection refused"
            os_error = re.search(r"\[Errno \d+\] [^:'()]+", msg)
            why = os_error.group(0).strip() if os_error else msg.split("; retrying")[0]
            if "Immediate exit requested" in why:  # FFmpeg's word for its own timeout
                why = f"no answer in {min(5.0, connect_timeout):g} s"
            problems.append(f"cannot connect: {why}")

    try:
        src = LiveSource(spec, audio=False, give_up_s=connect_timeout, backoff=(0.25, 2.0),
                         open_timeout=min(5.0, connect_timeout), read_timeout=min(5.0, connect_timeout),
                         on_status=status)
    except LiveError as e:  # not a source at all (e.g. an unknown scheme taken for a file)
        return None, log, describe(e)
    began = time.monotonic()
    first: list[float] = []  # the watch starts with the first frame, not with the first try to connect

    def done() -> bool:
        now = time.monotonic()
        return now - first[0] > seconds if first else now - began > connect_timeout

    last = -1e9
    try:
        for ch in src.chunks(done):
            if ch.kind != "video" or ch.image is None:
                continue
            if not first:
                first.append(time.monotonic())
            ring.push(ch)
            if det is not None and ch.time - last >= 0.5:
                last = ch.time
                h, w = ch.image.shape[:2]
                log.add_frame(ch.time, det.detect([ch.image])[0], size=(w, h))
    except LiveError as e:  # a camera that drops: answer from what was seen
        if not problems:  # the OS's reason for the failed tries says more than "gave up"
            problems.append(describe(e))
        if first:
            print_error(f"{describe(e)} — answering from the {ring.span[1] - ring.span[0]:.0f} s buffered")
    # the ring's reader, or None when not one frame arrived
    return (ring.frames if first else None), log, (problems[-1] if problems else None)


def _print_token(p: object) -> None:
    if isinstance(p, ChatPartial):
        sys.stdout.write(p.token)
        sys.stdout.flush()


def _report(ans: ChatAnswer) -> None:
    out = sys.stdout
    if ans.error and not ans.text:
        print_error(ans.error)
    else:
        out.write("\n")
        if ans.corrected:  # what was streamed was the model's count; the code's replaces it
            out.write(f"corrected: {ans.text}\n")
        if ans.partial:
            out.write(f"[partial answer: {ans.error}]\n")
    for c in ans.citations:
        out.write(f"  {c.text} → {c.seconds:.0f} s\n")
    ref = ""
    if ans.human_kbps:
        ratio = ans.human_kbps / ans.kbps if ans.kbps else float("inf")
        ref = f" (human-quality H.264 of the same frames: {ans.human_kbps:.0f} kbps, 1/{ratio:.0f})"
    seen = ", ".join(clock(t) for t in ans.frames_seen) or "none"
    out.write(f"stream: {ans.kbps:.1f} kbps{ref}; {ans.frames_sent} frames encoded, the model saw {seen}\n")
    out.write(f"latency: encode {ans.encode_s:.2f} s, transfer {ans.transfer_s:.2f} s, inference "
              f"{ans.inference_s:.2f} s (perception on the decoded frames {ans.perceive_s:.2f} s); model {ans.model}\n")
    for n in ans.notes:
        out.write(f"note: {n}\n")
