"""Folders on Ray: the same folder analysed (perception, then the anomaly pass) here, on a local
Ray instance with 1 worker and with 2 workers, in the same run.

    .venv/bin/python bench/cluster.py [--media sintel,iscc_mp4,bbb_webm,chaplin] [--models a,b] [--fps 2]
                                      [--configs local,ray1,ray2] [--no-anomalies] [--json OUT]

The folder holds copies of packaged real clips (:mod:`core.media.samples`; about 2.5 minutes in
all by default). Each configuration starts from fresh projects (one for perception, another
for the anomaly pass, so the pass computes its own detections instead of reusing perception's)
and runs the command's own job (:func:`core.perception.folder.analyze_folder`,
:func:`core.anomaly.folder.anomalies_folder`): the wall time includes loading the models (in
each Ray worker: once per worker process) and, on Ray, starting the instance (given apart).
× real time = wall time / media seconds (lower is faster). Ratios are against the local run of
the same job in this process.

On Ray each worker gets ``cores / workers`` torch and OpenCV threads (2 workers on 2 cores:
one thread each; 1 worker: two), so 2 workers do not oversubscribe the cores: what 2 workers
can buy over 1 is only what one process leaves idle (decoding waits, single-threaded steps).

``run(...) -> dict`` is what bench/longfootage.py calls.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jobs import HeadlessState  # noqa: E402

MEDIA = ("sintel", "iscc_mp4", "bbb_webm", "chaplin")
MODELS = ("ssd-mobilenet-v2-coco", "silero-vad")  # perception as #18 measures it: SSD + tracking at 2 fps
CONFIGS = {"local": (None, 0), "ray1": ("local", 1), "ray2": ("local", 2)}


def sample_folder(names: Sequence[str], folder: Path) -> Path:
    """Copies of the named real samples in ``folder``."""
    from core.media.samples import sample_path

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        src = sample_path(n)
        shutil.copyfile(src, folder / src.name)
    return folder


def _job(kind: str, sources: Sequence[str], address: str | None, workers: int, models: Sequence[str],
         fps: float, project: Any) -> Any:
    if kind == "analyze":
        from core.perception.analysis import AnalysisRequest
        from core.perception.folder import FolderRequest, analyze_folder

        req = FolderRequest(project, tuple(sources), AnalysisRequest("", models=tuple(models), fps=fps),
                            ray_address=address, ray_workers=max(1, workers))
        return analyze_folder(req, HeadlessState())
    from core.anomaly.folder import FolderRequest as AnomalyFolder, anomalies_folder

    return anomalies_folder(AnomalyFolder(project, tuple(sources), {}, ray_address=address,
                                          ray_workers=max(1, workers)), HeadlessState())


def run(sources: Sequence[str] | None = None, *, media: Sequence[str] = MEDIA, models: Sequence[str] = MODELS,
        fps: float = 2.0, configs: Sequence[str] = tuple(CONFIGS), anomalies: bool = True,
        verbose: bool = True) -> dict[str, Any]:
    """Each job over the same files in each configuration, from fresh projects. ``sources``:
    folders or files (default: copies of ``media`` in a temporary folder). Returns
    ``{"media_s", "files", "cores", "jobs": {job: {config: {wall_s, ray_start_s, xrt, done,
    failed, per_file}}}, "ratios": {job: {config: wall / local wall}}}``."""
    from core.store.project import Project

    tmp = tempfile.TemporaryDirectory(prefix="kestrel-bench-cluster-")
    try:
        if sources is None:
            sources = [str(sample_folder(media, Path(tmp.name) / "media"))]
        out: dict[str, Any] = {"cores": os.cpu_count(), "models": list(models), "fps": fps, "jobs": {}, "ratios": {}}
        for job in ("analyze",) + (("anomalies",) if anomalies else ()):
            rows = out["jobs"].setdefault(job, {})
            for name in configs:
                address, workers = CONFIGS[name]
                with Project.create(Path(tmp.name) / f"{job}-{name}.kestrel") as project:
                    t0 = time.perf_counter()
                    res = _job(job, sources, address, workers, models, fps, project)
                    wall = time.perf_counter() - t0
                media_s = res.media_s
                failed = [f"{f.name}: {f.error}" for f in res.having("failed")]
                rows[name] = {"wall_s": wall, "ray_start_s": res.timings.get("ray_start_s", 0.0),
                              "media_s": media_s, "xrt": wall / media_s if media_s else None,
                              "done": len(res.having("done")), "failed": failed,
                              "workers_used": len({f.where for f in res.having("done") if f.where}),
                              "per_file": {f.name: round(f.compute_s, 2) for f in res.having("done")}}
                out["media_s"] = max(out.get("media_s", 0.0), media_s)
                out["files"] = [f.name for f in res.having("done")]
                if verbose:
                    r = rows[name]
                    line = f"{job:9s} {name:5s}: {wall:7.1f} s wall for {media_s:6.1f} s of media"
                    line += f" ({r['xrt']:.3f}× real time)" if r["xrt"] else " (nothing computed)"
                    if address:
                        line += f" [Ray start {r['ray_start_s']:.1f} s, {r['workers_used']} worker processes]"
                    print(line + "".join(f"\n  FAILED {x}" for x in failed), flush=True)
            if "local" in rows:
                out["ratios"][job] = {n: rows[n]["wall_s"] / rows["local"]["wall_s"] for n in rows}
                if "ray1" in rows and "ray2" in rows:
                    out["ratios"][job]["ray2/ray1"] = rows["ray2"]["wall_s"] / rows["ray1"]["wall_s"]
                    one = rows["ray1"]["wall_s"] - rows["ray1"]["ray_start_s"]
                    two = rows["ray2"]["wall_s"] - rows["ray2"]["ray_start_s"]
                    out["ratios"][job]["ray2/ray1 without Ray's start"] = two / one
        return out
    finally:
        tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", default=",".join(MEDIA), help="sample names (python -m core.media.samples list)")
    ap.add_argument("--sources", nargs="*", help="folders or files instead of --media")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="of local, ray1, ray2")
    ap.add_argument("--no-anomalies", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="write the numbers here too")
    a = ap.parse_args(argv)
    configs = [c for c in a.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {bad}; use {', '.join(CONFIGS)}")
    print(f"{os.cpu_count()} cores; perception {a.models} at {a.fps:g} fps"
          + ("" if a.no_anomalies else "; then the anomaly pass (default settings: the first minutes of each "
                                       "file, at most half, are its normal footage)"))
    res = run(a.sources or None, media=a.media.split(","), models=a.models.split(","), fps=a.fps, configs=configs,
              anomalies=not a.no_anomalies)
    print(f"\n{len(res.get('files', []))} files, {res.get('media_s', 0):.1f} s of media")
    for job, ratios in res["ratios"].items():
        print(f"{job}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) + "  (wall time ratios; < 1 is faster)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
