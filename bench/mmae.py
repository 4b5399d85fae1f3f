"""Archive tagging: how fast the archive index is built once features exist, and what Ray buys.

    .venv/bin/python bench/mmae.py [--media sintel,iscc_mp4,...] [--ray-media bikes,chaplin,failing_audio]
                                   [--no-ray] [--full]

- ``throughput(project)``: tagging throughput in media-seconds per compute-second once the
  per-shot features are stored — ``core.tagging.index.build_index`` on them (MMAE training,
  encoding, clustering, tags, storing), timed twice: first with no stored model (it trains),
  then again (the model is reused while the features are unchanged). Goal: ≥ 20× real time.
  The features come from ``tag_archive(build_index=False)`` over real sample clips, kept in
  a bench project under ``~/.cache/kestrel/bench/`` (incremental: a second run reuses them).
- ``clustering_quality(project)``: following MMAE's own measure, k-means on the latent
  against each shot's source file (NMI, ARI) and the silhouette of the sources in the latent,
  for the MMAE latent and for the linear baseline (PCA of the standardised concatenated
  features) in the same run, over three seeds.
- ``ray_speedup(paths)``: the same files tagged from scratch through a local Ray instance
  with 1 worker CPU, then with 2, each in a fresh project; wall time of the per-file part
  (Ray's own start apart) and its ratio. Each Ray worker loads the models once, so with
  more workers than files the load is paid per worker.

Faces and OCR are off unless ``--full`` (the costliest models; they change the feature cost,
not the index's). Numbers depend on the load of the machine (2 shared cores here).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.jobs import HeadlessState  # noqa: E402
from core.tagging.features import FeatureConfig  # noqa: E402

CACHE = Path(os.environ.get("KESTREL_BENCH_CACHE", Path.home() / ".cache" / "kestrel" / "bench"))
MEDIA = ("sintel", "iscc_mp4", "bikes", "chaplin", "city_mpg", "failing_audio", "bbb_6ch", "bbb_webm", "fire2")
RAY_MEDIA = ("bikes", "chaplin", "failing_audio")
FAST = FeatureConfig(faces=None, ocr=None)


def sample_folder(names: Sequence[str], folder: Path) -> Path:
    """Copies of the named real samples in ``folder`` (the archive to tag)."""
    from core.media.samples import sample_path

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        src = sample_path(n)
        dst = folder / src.name
        if not dst.exists():
            shutil.copyfile(src, dst)
    return folder


def featured_project(names: Sequence[str] = MEDIA, cfg: FeatureConfig = FAST, path: Path | None = None) -> Any:
    """A project whose media have stored shots and features (computed once, then reused)."""
    from core.cli import open_project
    from core.tagging.archive import ArchiveRequest, tag_archive

    tag = "full" if cfg.faces else "fast"
    path = path or CACHE / f"mmae-{tag}.kestrel"
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = sample_folder(names, CACHE / "mmae-media")
    project = open_project(str(path))
    t0 = time.perf_counter()
    res = tag_archive(ArchiveRequest(project, paths=tuple(str(folder / Path(sample_name(n)).name) for n in names),
                                     features=cfg, build_index=False), HeadlessState(bar=True, label="features"))
    done = len(res.computed)
    print(f"features: {done} files described now, {len(res.ok) - done} reused ({time.perf_counter() - t0:.1f} s)"
          + "".join(f"\n  FAILED {f.path}: {f.error}" for f in res.failed))
    return project


def sample_name(name: str) -> str:
    from core.media.samples import sample_path

    return str(sample_path(name))


def throughput(project: Any, params: Any = None) -> dict[str, Any]:
    """build_index on the stored features, first training the MMAE, then reusing it:
    media-seconds per compute-second of each."""
    from core.tagging.index import MODEL_SETTING, build_index, gather

    refs, feats = gather(project)
    media = {r.media_id for r in refs}
    media_s = sum(project.get_media(m).duration_s or 0.0 for m in media)
    project.set_setting(MODEL_SETTING, None)  # no stored model: the first build trains one
    out: dict[str, Any] = {"media": len(media), "media_s": media_s, "shots": len(refs)}
    for run in ("first", "again"):
        t0 = time.perf_counter()
        idx = build_index(project, HeadlessState(), params)
        dt = time.perf_counter() - t0
        out[f"{run}_s"], out[f"{run}_x"] = dt, media_s / dt
        out[f"{run}_timings"] = dict(idx.timings)
    out.update(method=idx.method, clusters=len(idx.names), silhouette=idx.model_info.get("silhouette"),
               notes=list(idx.notes))
    return out


def ray_speedup(paths: Sequence[str], workers: Sequence[int] = (1, 2), cfg: FeatureConfig = FAST) -> dict[str, Any]:
    """The same files from scratch on a local Ray instance with each number of worker CPUs."""
    from core.store.project import Project
    from core.tagging.archive import ArchiveRequest, tag_archive

    media_s = 0.0
    out: dict[str, Any] = {"files": [Path(p).name for p in paths], "runs": {}}
    for n in workers:
        with tempfile.TemporaryDirectory(prefix="kestrel-ray-") as d, Project.create(Path(d) / "p.kestrel") as pr:
            t0 = time.perf_counter()
            res = tag_archive(ArchiveRequest(pr, paths=tuple(paths), features=cfg, build_index=False,
                                             ray_address="local", ray_workers=n), HeadlessState())
            wall = time.perf_counter() - t0
            if res.failed:
                raise RuntimeError("; ".join(f.error for f in res.failed))
            media_s = sum(f.duration_s for f in res.ok)
            start = res.timings.get("ray_start_s", 0.0)
            out["runs"][n] = {"wall_s": wall, "ray_start_s": start, "work_s": res.timings["files_s"] - start,
                              "per_file_s": {Path(f.path).name: round(f.compute_s, 2) for f in res.files},
                              "load_s": sum(f.load_s for f in res.files),
                              "cores_busy": sum(f.cpu_s for f in res.files) / max(1e-9, sum(f.compute_s for f in res.files)),
                              "workers_used": len({f.where for f in res.files})}
    out["media_s"] = media_s
    if 1 in out["runs"] and 2 in out["runs"]:
        one, two = out["runs"][1], out["runs"][2]
        out["speedup_work"] = one["work_s"] / two["work_s"]
        out["speedup_wall"] = one["wall_s"] / two["wall_s"]
    return out


def clustering_quality(project: Any, seeds: Sequence[int] = (0, 1, 2), ffn: str = "dense",
                       params: Any = None) -> dict[str, Any]:
    """MMAE latent vs the linear baseline (PCA of the concatenated standardised features) on the
    project's tagged shots, against the source file of each shot: silhouette (of the latent,
    with the source labels), and NMI/ARI of k-means (k = number of sources) to the sources."""
    import time
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
    from core.tagging import index
    from models.nn import mmae

    refs, feats = index.gather(project)
    data, masks, _ = index.mmae_inputs(feats)
    from core.tagging.index import IndexParams
    p = params or IndexParams(ffn=ffn)  # as build_index trains it
    latent, epochs = p.latent, p.epochs
    src = np.array([r.media_id for r in refs])
    k = len(set(src.tolist()))

    def measure(z, seed):
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)
        lab = KMeans(k, n_init=8, random_state=seed).fit_predict(z)
        return (silhouette_score(z, src), normalized_mutual_info_score(src, lab), adjusted_rand_score(src, lab))

    rows = {"pca": [], "mmae": []}
    train_s = []
    pca = index.pca_latent(data, masks, latent)  # deterministic: only k-means' seed varies
    for seed in seeds:
        rows["pca"].append(measure(pca, seed))
        cfg = mmae.MMAEConfig({m: x.shape[1] for m, x in data.items()}, latent=latent, hidden=p.hidden,
                              width=p.width, ffn=p.ffn)
        net = mmae.build(cfg, seed=seed)
        t = time.perf_counter()
        mmae.fit(net, data, masks, mmae.TrainParams(epochs=epochs, seed=seed))
        train_s.append(time.perf_counter() - t)
        rows["mmae"].append(measure(np.nan_to_num(mmae.encode(net, data, masks, on_empty="nan")), seed))
    return {"shots": len(refs), "sources": k, "train_s": float(np.mean(train_s)), "epochs": epochs,
            "seeds": list(seeds),
            **{m: np.asarray(v).mean(0).tolist() for m, v in rows.items()},
            **{m + "_sd": np.asarray(v).std(0).tolist() for m, v in rows.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--media", default=",".join(MEDIA), help="samples for the throughput part")
    ap.add_argument("--ray-media", default=",".join(RAY_MEDIA), help="samples for the Ray part")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--full", action="store_true", help="faces and OCR on")
    args = ap.parse_args()
    cfg = FeatureConfig() if args.full else FAST
    project = featured_project([m for m in args.media.split(",") if m], cfg)
    try:
        t = throughput(project)
        q = clustering_quality(project)
    finally:
        project.close()
    print(f"\nthroughput of build_index on stored features: {t['media']} files, {t['media_s']:.1f} s of media, "
          f"{t['shots']} shots, latent {t['method']}, {t['clusters']} clusters (silhouette {t['silhouette']})")
    for run, what in (("first", "training the MMAE"), ("again", "model reused")):
        tm = ", ".join(f"{k} {v:.2f} s" for k, v in t[f"{run}_timings"].items())
        print(f"  {what:18s}: {t[f'{run}_s']:6.2f} s  → {t[f'{run}_x']:6.1f}× real time   ({tm})")
    for n in t["notes"]:
        print(f"  note: {n}")
    print(f"\nclustering quality against each shot's source file ({q['shots']} shots, {q['sources']} files; "
          f"k-means with k = {q['sources']}; mean of seeds {q['seeds']}; MMAE {q['epochs']} epochs, "
          f"{q['train_s']:.1f} s training):")
    print(f"  {'latent':34s} {'silhouette':>10s} {'NMI':>6s} {'ARI':>6s}")
    for m, name in (("pca", "linear baseline: PCA of features"), ("mmae", "MMAE shared latent")):
        sil, nmi, ari = q[m]
        print(f"  {name:34s} {sil:10.3f} {nmi:6.3f} {ari:6.3f}   (sd {', '.join(f'{v:.3f}' for v in q[m + '_sd'])})")
    if not args.no_ray:
        paths = [sample_name(m) for m in args.ray_media.split(",") if m]
        r = ray_speedup(paths, (1, 2), cfg)
        print(f"\nRay, local instance, {len(paths)} files ({', '.join(r['files'])}), {r['media_s']:.1f} s of media, "
              "from scratch:")
        for n, run in r["runs"].items():
            print(f"  {n} worker{'s' if n > 1 else ' '}: {run['work_s']:6.1f} s of work (of which {run['load_s']:.1f} s "
                  f"loading models in the workers) + {run['ray_start_s']:4.1f} s Ray start; "
                  f"{run['workers_used']} worker processes, each busy on {run['cores_busy']:.2f} cores while describing; "
                  f"per file {run['per_file_s']}")
        if "speedup_work" in r:
            print(f"  speed-up 2 over 1: {r['speedup_work']:.2f}× (work), {r['speedup_wall']:.2f}× (wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
