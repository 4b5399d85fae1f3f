"""Fuzzing the media paths with damaged files built from real and generated clips (issue #15).

The set (built once per session, about 140 files): the first two seconds of real sample
clips (packets copied, real codecs) and short generated clips, each truncated at 10/50/90 %,
with bits flipped in the header and in the body, a range zeroed near the start and the tail
zeroed; Matroska durations patched to 10^15 ms, NaN, infinity and -1; MP4 box sizes patched;
WAV sizes, channel counts and rates patched; two frames 10^6 s apart; a stream no decoder
knows; tags that are not UTF-8; odd names (too long, not UTF-8, spaces and newlines, a
leading dash, emoji); an empty file, text and random bytes named .mp4, a folder and a pipe;
MP4 sample and chunk counts of 2^31, AVI frame rates of 10^9 fps and one frame per 31 years,
Matroska element sizes of 2^36.

Each file goes through
  (a) probe, frame index, a few decoded frames, audio, waveform and ``analyze`` (a frame
      counting detector and Silero VAD) in worker processes, each file bounded in time
      and the workers' memory capped: a hang or a crash fails the test, it never hangs CI;
  (b) the window's open path (probe, frame index, first frame, waveform, project) in one
      MainWindow, waiting on the signals that say the file opened or failed;
  (c) ``main.py analyze F --project P --models silero-vad`` on 25 of them as subprocesses.
Outcomes: "opened", "refused" (a MediaError sentence); anything else (another exception, a
traceback, a hang, a signal) fails. The counts are printed (``pytest -s`` shows them).
"""
from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PER_FILE_S = 30.0  # a file taking longer than this in a worker is a hang
WORKERS = 2


# -- the damaged set ----------------------------------------------------------------------

REAL = ("fire2", "punch_wav", "crunching_mp3", "bikes", "iscc_mkv", "city_mpg", "chaplin", "bbb_webm", "iscc_avi")
GENERATED = ("clip.mp4", "clip.mov", "clip.mpg", "audio.m4a", "audio.ogg", "audio.flac")


def _flip_bits(data: bytes, lo: int, hi: int, n: int, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, max(lo + 1, hi))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _zero(data: bytes, lo: int, hi: int) -> bytes:
    return data[:lo] + bytes(hi - lo) + data[hi:]


def _mutations(data: bytes, rng: random.Random) -> dict[str, bytes]:
    n = len(data)
    head = max(64, min(4096, n // 20))
    return {
        "trunc10": data[:n // 10], "trunc50": data[:n // 2], "trunc90": data[:n * 9 // 10],
        "flip-header": _flip_bits(data, 0, head, 16, rng),
        "flip-body": _flip_bits(data, n // 10, n * 9 // 10, 64, rng),
        "zero-near-start": _zero(data, n // 50, n // 50 + max(16, n // 25)),
        "zero-tail": _zero(data, n * 9 // 10, n),
    }


def _patch_box_size(data: bytes, box: bytes, size: int) -> bytes:
    i = data.find(box)
    if i < 4:
        raise ValueError(f"no {box!r} box")
    return data[:i - 4] + size.to_bytes(4, "big") + data[i:]


def build_fuzz_set(d: Path, sample) -> list[tuple[str, Path]]:
    """``[(what, path)]``: every damaged file of the set, built under ``d``."""
    import mediagen

    rng = random.Random(15)
    base = d / "base"
    base.mkdir(parents=True)
    bases: dict[str, Path] = {}
    for name in REAL:
        src = sample(name)
        bases[name] = mediagen.cut_copy(src, base / f"{name}{src.suffix}", 2.0)
    for name in GENERATED:
        p = base / name
        if p.suffix in (".m4a", ".ogg", ".flac"):
            bases[name] = mediagen.make_audio_only(p, duration=1.5)
        else:
            bases[name] = mediagen.make_clip(p, duration=1.5, size=(160, 120))
    out: list[tuple[str, Path]] = []
    fz = d / "fuzz"
    fz.mkdir()

    def add(what: str, name: str, data: bytes | None = None) -> Path:
        p = fz / name
        if data is not None:
            p.write_bytes(data)
        out.append((what, p))
        return p

    for bname, bpath in bases.items():
        data = bpath.read_bytes()
        stem = bname.replace(".", "_")
        for kind, mutated in _mutations(data, rng).items():
            add(f"{kind} of {bname}", f"{stem}-{kind}{bpath.suffix}", mutated)
    # lying headers and sizes
    mkv = mediagen.make_clip(base / "dur.mkv", duration=1.5, size=(160, 120))
    for label, ms in (("1e15ms", 1e15), ("nan", float("nan")), ("inf", float("inf")), ("minus1", -1.0),
                      ("zero", 0.0)):
        mediagen.patch_mkv_duration(mkv, fz / f"mkv-duration-{label}.mkv", ms)
        add(f"Matroska duration {label}", f"mkv-duration-{label}.mkv")
    aac = mediagen.make_audio_only(base / "aac.mkv", duration=1.5, acodec="aac")
    mediagen.patch_mkv_duration(aac, fz / "aac-claims-27.8h.mkv", 27.8 * 3600e3)
    add("AAC claiming 27.8 h", "aac-claims-27.8h.mkv")
    mp4 = bases["clip.mp4"].read_bytes()
    add("mp4 moov size 0xffffffff", "moov-size-huge.mp4", _patch_box_size(mp4, b"moov", 0xFFFFFFFF))
    add("mp4 mdat size 0", "mdat-size-0.mp4", _patch_box_size(mp4, b"mdat", 0))
    add("mp4 mdat size past the end", "mdat-size-past.mp4", _patch_box_size(mp4, b"mdat", len(mp4) * 4))
    add("mp4 stsz box size 0x7fffffff", "stsz-size-huge.mp4", _patch_box_size(mp4, b"stsz", 0x7FFFFFFF))
    i = mp4.find(b"stsz")
    add("mp4 stsz sample count 0x7fffffff", "stsz-count-huge.mp4", mp4[:i + 12] + b"\x7f\xff\xff\xff" + mp4[i + 16:])
    i = mp4.find(b"stco")
    add("mp4 stco chunk count 0x7fffffff", "stco-count-huge.mp4", mp4[:i + 8] + b"\x7f\xff\xff\xff" + mp4[i + 12:])
    avi = bases["iscc_avi"].read_bytes()
    i = avi.find(b"strh") + 28  # dwScale, dwRate of the first stream header
    for label, (scale, rate) in (("1e9 fps", (1, 10**9)), ("one frame per 31 years", (10**9, 1)),
                                 ("scale 0", (0, 25))):
        add(f"AVI frame rate {label}", f"avi-rate-{label.replace(' ', '-')}.avi",
            avi[:i] + scale.to_bytes(4, "little") + rate.to_bytes(4, "little") + avi[i + 8:])
    mkv_bytes = mkv.read_bytes()
    for k in range(3):  # EBML element sizes of 2^36 near the start
        b = bytearray(mkv_bytes)
        for _ in range(3):
            j = rng.randrange(0, min(len(b) - 8, 600))
            b[j:j + 8] = b"\x01\x00\x00\x0f\xff\xff\xff\xff"
        add(f"Matroska element sizes of 2^36 ({k})", f"mkv-ebml-size-{k}.mkv", bytes(b))
    wav = mediagen.make_audio_only(base / "tone.wav", duration=1.0)
    wdata = wav.read_bytes()
    i = wdata.find(b"data")
    add("wav data size 0xffffffff", "wav-data-huge.wav", wdata[:i + 4] + b"\xff\xff\xff\xff" + wdata[i + 8:])
    add("wav RIFF size 0", "wav-riff-0.wav", wdata[:4] + bytes(4) + wdata[8:])
    for label, kw in (("255ch", {"channels": 255}), ("0ch", {"channels": 0}),
                      ("2ghz", {"sample_rate": 2**31 - 1}), ("0hz", {"sample_rate": 0})):
        mediagen.patch_wav_header(wav, fz / f"wav-{label}.wav", **kw)
        add(f"WAV header {label}", f"wav-{label}.wav")
    mediagen.make_sparse_video(fz / "two-frames-1e6s-apart.mp4")
    add("two frames 10^6 s apart (mp4)", "two-frames-1e6s-apart.mp4")
    mediagen.make_sparse_video(fz / "two-frames-1e6s-apart.mkv")
    add("two frames 10^6 s apart (mkv)", "two-frames-1e6s-apart.mkv")
    mediagen.make_sparse_audio(fz / "audio-1e6s-apart.mkv")
    add("audio packets 10^6 s apart", "audio-1e6s-apart.mkv")
    mediagen.replace_bytes(bases["clip.mp4"], fz / "unknown-codec.mp4", b"avc1", b"zzzz")
    add("a video stream no decoder knows", "unknown-codec.mp4")
    mediagen.make_bad_tags(fz / "tags-not-utf8.mkv")
    add("tags that are not UTF-8", "tags-not-utf8.mkv")
    # odd names and odd things
    clip = bases["clip.mp4"].read_bytes()
    add("a 250-byte name", "n" * 246 + ".mp4", clip)
    out.append(("a 300-character name (does not fit)", fz / ("x" * 296 + ".mp4")))
    raw = os.fsencode(fz) + b"/clip\xff.mp4"
    with open(raw, "wb") as f:
        f.write(clip)
    out.append(("a name that is not UTF-8", Path(os.fsdecode(raw))))
    add("spaces and a newline in the name", "my clip\nsecond line .mp4", clip)
    add("a leading dash", "-rf --help.mp4", clip)
    add("emoji in the name", "🎬 clip 🦅.mp4", clip)
    add("an empty file", "empty.mp4", b"")
    add("a text file named .mp4", "text.mp4", b"This is not a video.\n" * 50)
    add("random bytes named .mkv", "random.mkv", rng.randbytes(50_000))
    (fz / "folder.mp4").mkdir()
    out.append(("a folder named .mp4", fz / "folder.mp4"))
    os.mkfifo(fz / "pipe.mp4")
    out.append(("a named pipe", fz / "pipe.mp4"))
    return out


@pytest.fixture(scope="session")
def fuzz_set(tmp_path_factory, sample) -> list[tuple[str, Path]]:
    return build_fuzz_set(tmp_path_factory.mktemp("fuzz"), sample)


# -- (a) the core readers, in bounded worker processes ------------------------------------

class CountingDetector:
    """A detector that finds nothing, instantly: analyze's frame plan without a real model."""

    classes = ("thing",)

    def __init__(self, spec, where, device, **options):
        self.device = device

    def detect(self, images):
        return [[] for _ in images]


def check_one(path: str) -> dict:
    """Everything the app does with a file it opens, outside the window."""
    import traceback

    from core.perception.analysis import AnalysisRequest, analyze
    from core.media.audio import AudioReader
    from core.jobs import HeadlessState
    from core.media.decode import MediaError, VideoDecoder, frame_times, probe
    from core.media.waveform import WaveformRequest, build_waveform

    try:
        try:
            info = probe(path)
        except MediaError as e:
            return {"outcome": "refused", "message": str(e)}
        partial = []

        def step(name, fn):
            try:
                fn()
            except MediaError as e:
                partial.append(f"{name}: {e}")

        if info.has_video:
            step("frame index", lambda: frame_times(path))

            def frames():
                with VideoDecoder(path) as dec:
                    for t in (0.0, info.duration_s / 2, max(0.0, info.duration_s - 0.01), 0.0):
                        dec.frame_at(t)
                    for _ in range(3):
                        dec.next_frame()
            step("frames", frames)
        if info.has_audio:
            def audio():
                with AudioReader(path) as r:
                    r.read(0.0, 1.0)
            step("audio", audio)
            step("waveform", lambda: build_waveform(WaveformRequest(path), HeadlessState()))
        res = analyze(AnalysisRequest(path, models=("counting", "silero-vad"), fps=2.0), HeadlessState())
        bugs = [f"{k}: {v}" for k, v in res.errors.items() if "failed while running" in v]
        if bugs:
            return {"outcome": "bug", "message": "; ".join(bugs)}
        partial += [f"{k}: {v}" for k, v in res.errors.items()]
        return {"outcome": "opened", "partial": partial, "notes": list(getattr(info, "notes", ())),
                "duration": info.duration_s}
    except Exception as e:
        return {"outcome": "bug", "message": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}


def worker_main(list_file: str) -> None:
    """``python tests/media/test_fuzz_media.py --worker LIST``: one JSON line before and after each file."""
    import resource

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    soft = 6 << 30  # a damaged header must not make a reader take the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    from models import catalogue
    from models.catalogue import ModelSpec

    real = catalogue.load_catalogue()
    spec = ModelSpec(name="counting", title="Counting", task="detect", cls="test_fuzz_media:CountingDetector",
                     weights={"package": "numpy", "module": "numpy", "files": []}, version="t1")
    catalogue.load_catalogue = lambda: {**real, "counting": spec}
    for i, path in json.loads(Path(list_file).read_text()):
        print(json.dumps({"i": i, "start": True}), flush=True)
        t0 = time.monotonic()
        result = check_one(path)
        print(json.dumps({"i": i, **result, "seconds": round(time.monotonic() - t0, 2)}), flush=True)


def run_workers(paths: list[str], tmp: Path) -> tuple[dict[int, dict], float]:
    """Check every path in worker processes; a file that takes longer than PER_FILE_S is a
    hang (its worker is killed, another takes the rest), a worker that dies is a crash."""
    results: dict[int, dict] = {}
    todo = list(enumerate(paths))
    lanes = [todo[k::WORKERS] for k in range(WORKERS)]
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}

    def lane(items: list[tuple[int, str]], k: int) -> None:
        while items:
            lst = tmp / f"lane{k}-{len(items)}.json"
            lst.write_text(json.dumps(items))
            proc = subprocess.Popen([sys.executable, __file__, "--worker", str(lst)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                    env=env, cwd=ROOT)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                             daemon=True).start()
            err_lines: list[str] = []
            threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()
            current = None
            while True:
                try:
                    line = lines.get(timeout=PER_FILE_S)
                except queue.Empty:
                    proc.kill()
                    proc.wait()
                    results[current if current is not None else items[0][0]] = {
                        "outcome": "hang", "message": f"no answer in {PER_FILE_S:.0f} s"}
                    break
                if line is None:
                    proc.wait()
                    if current is not None and current not in results:
                        results[current] = {"outcome": "crash", "message": f"worker exit {proc.returncode}: "
                                            + "".join(err_lines[-5:])[-600:]}
                    break
                msg = json.loads(line)
                if msg.get("start"):
                    current = msg["i"]
                else:
                    results[msg["i"]] = msg
                    current = None
            items = [it for it in items if it[0] not in results]

    threads = [threading.Thread(target=lane, args=(lanes[k], k)) for k in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.monotonic() - t0


def test_fuzz_core_readers(fuzz_set, tmp_path):
    assert len(fuzz_set) >= 100
    results, took = run_workers([str(p) for _w, p in fuzz_set], tmp_path)
    counts = Counter(r["outcome"] for r in results.values())
    partial = sum(1 for r in results.values() if r.get("partial"))
    noted = sum(1 for r in results.values() if r.get("notes"))
    print(f"\n[fuzz a] {len(fuzz_set)} damaged files through probe, frame index, decoding, audio, waveform and "
          f"analyze in {took:.1f} s: {counts['opened']} opened ({partial} with a clean error in a later step, "
          f"{noted} with a note about the file), {counts['refused']} refused with a MediaError sentence, "
          f"{counts['bug']} other exceptions, {counts['hang']} hangs, {counts['crash']} crashes; "
          f"slowest file {max((r.get('seconds', 0) for r in results.values()), default=0):.1f} s")
    bad = {fuzz_set[i][0]: r for i, r in results.items() if r["outcome"] not in ("opened", "refused")}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)[:6000]
    assert len(results) == len(fuzz_set)
    for r in results.values():
        for text in [r.get("message", ""), *r.get("partial", []), *r.get("notes", [])]:
            assert "\n" not in text and "Traceback" not in text, text
    # the lying headers opened with what the file holds
    by_what = {fuzz_set[i][0]: r for i, r in results.items()}
    assert by_what["Matroska duration 1e15ms"]["duration"] < 3
    assert "31,688 years" in by_what["Matroska duration 1e15ms"]["notes"][0]
    assert by_what["AAC claiming 27.8 h"]["duration"] < 3


# -- (b) the window's open path -----------------------------------------------------------

def open_in_window(qtbot, win, path: Path) -> tuple[str, list[str]]:
    """Open ``path`` as the analyst would and wait until the window has said it opened (first
    frame shown or refused, waveform drawn or refused) or that it failed."""
    got: dict = {"errors": []}
    slots = [(win.media_ready, lambda info: got.__setitem__("info", info)),
             (win.error_shown, lambda m: got["errors"].append(m)),
             (win.player.frame_shown, lambda _t: got.__setitem__("frame", True)),
             (win.fetcher.frame_failed, lambda _rid, _m: got.__setitem__("frame", True)),
             (win.waveform_ready, lambda: got.__setitem__("wave", True))]
    for sig, fn in slots:
        sig.connect(fn)
    try:
        win.open_media(str(path))
        qtbot.waitUntil(lambda: "info" in got or bool(got["errors"]), timeout=int(PER_FILE_S * 1000))
        info = got.get("info")
        if info is None:
            return "refused", got["errors"]
        qtbot.waitUntil(lambda: (not info.has_video or "frame" in got)
                        and (not info.has_audio or "wave" in got or bool(got["errors"])),
                        timeout=int(PER_FILE_S * 1000))
        return "opened", got["errors"]
    finally:
        for sig, fn in slots:
            sig.disconnect(fn)


def test_fuzz_window_open_path(qtbot, window, fuzz_set, caplog, capfd, tmp_path):
    import logging

    from gui.app import logging_handlers

    caplog.set_level(logging.INFO)
    root = logging.getLogger()
    handlers = logging_handlers(sys.stderr, tmp_path / "kestrel.log")  # the app's console and log file
    for h in handlers:
        root.addHandler(h)
    outcomes: Counter = Counter()
    t0 = time.monotonic()
    try:
        for what, path in fuzz_set:
            outcome, errors = open_in_window(qtbot, window, path)
            outcomes[outcome] += 1
            outcomes["with a message"] += bool(errors)
            for m in errors:
                assert "\n" not in m and "Traceback" not in m, (what, m)
            if outcome == "refused":
                assert errors, what
        window.timeline.grab()
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
    took = time.monotonic() - t0
    assert "not valid UTF-8" in (tmp_path / "kestrel.log").read_text(encoding="utf-8")
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
    _out, err = capfd.readouterr()
    print(f"\n[fuzz b] {len(fuzz_set)} damaged files opened in one window in {took:.1f} s: "
          f"{outcomes['opened']} opened, {outcomes['refused']} refused with a message "
          f"({outcomes['with a message']} files showed a message), {len(tracebacks)} tracebacks logged")
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in err, err[-3000:]


# -- (c) the command line -----------------------------------------------------------------

def test_fuzz_cli_analyze(fuzz_set, tmp_path):
    picked = fuzz_set[::max(1, len(fuzz_set) // 25)][:25]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "KESTREL_DATA_DIR": str(tmp_path / "data"),
           "KESTREL_CONFIG_DIR": str(tmp_path / "config"), "OMP_NUM_THREADS": "1"}
    results: dict[str, tuple[int, str, str]] = {}

    def run(k: int, what: str, path: Path) -> None:
        try:
            p = subprocess.run([sys.executable, str(ROOT / "main.py"), "analyze", str(path), "--project",
                                str(tmp_path / f"p{k}.kestrel"), "--models", "silero-vad"],
                               capture_output=True, text=True, encoding="utf-8", errors="replace",
                               timeout=120, env=env, cwd=tmp_path)
            results[what] = (p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired:
            results[what] = (-999, "", "timed out")

    t0 = time.monotonic()
    jobs = list(enumerate(picked))
    for batch in (jobs[k:k + WORKERS] for k in range(0, len(jobs), WORKERS)):
        ts = [threading.Thread(target=run, args=(k, w, p)) for k, (w, p) in batch]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    codes = Counter(rc for rc, _o, _e in results.values())
    print(f"\n[fuzz c] main.py analyze --models silero-vad on {len(picked)} damaged files in "
          f"{time.monotonic() - t0:.1f} s: exit codes {dict(sorted(codes.items()))}")
    for what, (rc, out, err) in results.items():
        assert rc in (0, 1, 2), (what, rc, err[-2000:])
        assert "Traceback" not in out + err, (what, err[-2000:])
        if rc:
            lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\r")]
            assert any(ln.startswith("kestrel: ") or ": FAILED" in ln for ln in lines), (what, err[-2000:])


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(sys.argv[2])
