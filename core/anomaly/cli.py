"""Headless anomaly pass: ``python main.py anomalies VIDEO [--normal START-END] [--project P]
[--sensitivity 0.5] [--export DIR] [--experts dense|topk|dynamic [--expert KEY=VALUE ...]]
[--scene NAME] [--restore-confusion LABEL ...] [--suppress-confusion LABEL ...]``.

Scene confusions: training on the normal footage also learns the classes the detector reports on
a static region of it (SSD's "surfboard" on a tree) and suppresses them there: they are no
objects for the cues. They are stored in the project under the scene key ``--scene`` (the
camera; "default" when not named) and listed after the events; ``--restore-confusion LABEL``
undoes one (it counts again from this pass on; it stays listed, and is not suppressed again),
``--suppress-confusion LABEL`` marks it again. Both need ``--project``.

``--experts`` picks the network's feed-forward blocks: ``dense`` (default), ``topk`` (a fixed
top-k mixture of experts) or ``dynamic`` (AnyExperts: a per-token number of experts under a
budget); ``--expert`` sets a field of ``models.nn.experts.ExpertsConfig`` (``budget=1.5``,
``k_max=4``, ``virtual=zero,copy``…). A stored model trained with other blocks is retrained.

Trains (or reuses) the model, draws a progress bar on stderr, then prints one line per
event on stdout: start, end, score, reasons (modality/cue). Without ``--project`` the work
happens in a temporary project that is deleted afterwards (nothing is reused next time).

Folders (walked recursively) or several files, ``--project P`` needed
(:mod:`core.anomaly.folder`): ``python main.py anomalies FOLDER|FILE... --project P [--ray ADDRESS]
[--ray-workers N]`` — each file its own pass (its own normal footage and model), a line per
file (done, unchanged: a pass with these settings over this content is stored, failed,
unreadable) with its events, then the totals (media hours, wall time, × real time). ``--ray``
runs the passes as Ray tasks; only this process writes the project. Exit 1 when a file failed
or none could be read, 130 when interrupted (finished files stay stored).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
from pathlib import Path

from core import cliargs
from core.anomaly import AnomalyError
from core.anomaly.events import AnomalyEvent
from core.cli import open_project
from core.errors import print_error
from core.jobs import Cancelled, HeadlessState
from core.timefmt import clock_cs, parse_time

def parse_range(text: str) -> tuple[float, float] | None:
    """``START-END`` → (start, end); ``none`` → None (no normal footage: detectors only)."""
    if text.strip().lower() in ("none", "no", "off"):
        return None
    if "-" not in text:
        raise ValueError(f"not a range: {text!r} (use START-END, e.g. 0-120 or 0:00-2:00)")
    a, b = text.split("-", 1)
    start, end = parse_time(a), parse_time(b)
    if end <= start:
        raise ValueError(f"the range {text!r} ends before it starts")
    return start, end


def parse_expert_options(pairs: list[str]) -> dict[str, object]:
    """``["budget=1.5", "virtual=zero,copy"]`` → ExpertsConfig fields (numbers as numbers;
    ``virtual`` a comma list, ``none`` for no virtual experts)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"not KEY=VALUE: {pair!r} (e.g. budget=1.5)")
        if key == "virtual":
            out[key] = [] if value.strip().lower() in ("", "none") else [v.strip() for v in value.split(",")]
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value.strip()
    return out


def summary_line(e: AnomalyEvent) -> str:
    """One line per event for the CLI: start, end, score, reasons (cue/modality)."""
    reasons = "; ".join(f"[{r.modality}/{r.cue}] {r.text}" for r in e.reasons)
    return f"{clock_cs(e.start)}–{clock_cs(e.end)}  score {e.peak:.2f}  {reasons}"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("sources", nargs="+", metavar="FOLDER|FILE",
                    help="a media file, or folders and files (folders are walked recursively; needs --project)")
    ap.add_argument("--normal", metavar="START-END",
                    help="footage that is normal (seconds or MM:SS); 'none': detectors only. "
                         "Default: the first --first-minutes")
    ap.add_argument("--first-minutes", default=2.0,
                    type=cliargs.number(0.0, 100_000.0, what="a number of minutes"),
                    help="without --normal: this many first minutes are normal (at most half the file)")
    ap.add_argument("--project", help="a .kestrel project: features and the model are stored and reused")
    ap.add_argument("--sensitivity", type=cliargs.fraction(what="a sensitivity"), default=0.5,
                    help="0..1, higher finds more (default 0.5)")
    ap.add_argument("--window", type=cliargs.number(0.5, 1.0, what="a window length in seconds"), default=1.0,
                    help="window length in seconds, 0.5..1 (default 1)")
    ap.add_argument("--retrain", action="store_true", help="train a new model even if one is stored")
    ap.add_argument("--dense", action="store_true",
                    help="no change gating: compute every window of a long range (by default, over 10 minutes "
                         "and more, windows where nothing changes hold the last computed one)")
    ap.add_argument("--export", metavar="DIR", type=cliargs.out_folder, help="write events.csv, events.json and a clip per event here")
    ap.add_argument("--clips", type=cliargs.integer(0, 10_000, what="a number of clips"), default=10,
                    help="with --export: at most this many clips (default 10)")
    ap.add_argument("--experts", choices=("dense", "topk", "dynamic"), default="dense",
                    help="the network's feed-forward blocks: dense (default), a fixed top-k mixture of experts, "
                         "or dynamic experts (AnyExperts: more experts where the footage is hard)")
    ap.add_argument("--scene", default="default", type=_scene_name,
                    help="the scene (camera) whose learned confusions apply and are learned (default: 'default')")
    ap.add_argument("--restore-confusion", action="append", default=[], metavar="LABEL",
                    help="undo a learned scene confusion: LABEL counts as an object again (needs --project)")
    ap.add_argument("--suppress-confusion", action="append", default=[], metavar="LABEL",
                    help="mark a listed scene confusion as suppressed again (needs --project)")
    ap.add_argument("--expert", action="append", default=[], metavar="KEY=VALUE",
                    help="an expert setting, e.g. budget=1.5, k_min=1, k_max=4, rho_max=0.25, n_experts=8 "
                         "(repeatable; with --experts topk|dynamic)")
    from core.perception.cli import add_cluster_arguments

    add_cluster_arguments(ap)
    cliargs.add_device(ap)


def _scene_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 120 or any(ord(c) < 32 for c in name):
        raise argparse.ArgumentTypeError(f"not a scene name: {text!r} (1–120 printable characters)")
    return name


def mark_confusions(project: object, scene: str, restore: list[str], suppress: list[str]) -> list[str]:
    """Restore / suppress the scene's stored confusions by label; one line per change (or per
    label that is not in the list)."""
    from core.perception.confirm import load_confusions, save_confusions

    sc = load_confusions(project, scene)
    lines = []
    for label, fn, verb in [(x, sc.restore, "restored") for x in restore] + \
                           [(x, sc.suppress, "suppressed") for x in suppress]:
        n = fn(label)
        lines.append(f"scene {scene!r}: {verb} {n} confusion(s) of class {label!r}" if n else
                     f"scene {scene!r}: no learned confusion of class {label!r} "
                     f"(listed: {', '.join(sorted({e.label for e in sc.entries})) or 'none'})")
    save_confusions(project, sc, scene)
    return lines


def confusion_lines(scene: str, confusions: object, learned: list) -> list[str]:
    """The scene's confusions for the analyst: each with its mark and how to undo it."""
    entries = list(getattr(confusions, "entries", []) or [])
    if not entries:
        return []
    new = {(c.label, tuple(c.box)) for c in learned}
    out = [f"scene {scene!r}: {len(entries)} learned confusion(s) (classes the detector reports on a static "
           "region of the normal footage; suppressed ones do not count as objects there)"]
    for c in entries:
        mark = "suppressed" if c.suppressed else "restored  "
        how = (f"undo: --restore-confusion {c.label}" if c.suppressed else f"suppress: --suppress-confusion {c.label}")
        out.append(f"  [{mark}] {c.describe()}{' (new)' if (c.label, tuple(c.box)) in new else ''}  ({how})")
    return out


def run(args: argparse.Namespace) -> int:
    cliargs.check_device(args.device)
    args.folder_mode = len(args.sources) > 1 or bool(args.ray) or Path(args.sources[0]).is_dir()
    args.video = args.sources[0]
    if args.folder_mode and not args.project:
        raise cliargs.BadArgument("folders, several files and --ray need --project: each file's events are "
                                  "stored there")
    if args.folder_mode and args.export:
        raise cliargs.BadArgument("argument --export: one file at a time (export each file's events "
                                  "from its own run)")
    if (args.restore_confusion or args.suppress_confusion) and not args.project:
        raise cliargs.BadArgument("--restore-confusion and --suppress-confusion need --project: the scene's "
                                  "confusions are stored there")
    try:
        normal = parse_range(args.normal) if args.normal is not None else None
    except ValueError as e:
        raise cliargs.BadArgument(f"argument --normal: {e}") from None
    try:
        args.experts_config = experts_from_flags(args.experts, args.expert)
    except (ValueError, AnomalyError) as e:
        raise cliargs.BadArgument(f"argument --expert: {e}") from None
    from models.nn.experts import ExpertCollapseWarning

    with warnings.catch_warnings():
        # the pass reports a collapse as one "note:" line; Python's raw warning (one per block,
        # with a line of torch's source) would only repeat it
        warnings.simplefilter("ignore", ExpertCollapseWarning)
        return _run_folder(args, normal) if args.folder_mode else _run(args, normal)


def experts_from_flags(kind: str, pairs: list[str]) -> object:
    """The ExpertsConfig the flags ask for (None: dense); a config that cannot work is refused
    here, before any decoding (AnomalyError with the reason)."""
    from core.anomaly.train import FFN_ALIASES, expert_config

    opts = parse_expert_options(pairs)
    if opts and kind == "dense":
        raise ValueError("--expert settings need --experts topk or --experts dynamic")
    _check_numbers(opts)
    return expert_config(FFN_ALIASES[kind], opts or None)


def _check_numbers(opts: dict[str, object]) -> None:
    """Whole numbers for ExpertsConfig's int fields, finite ones for its floats (``NaN``,
    ``1e999`` and ``n_experts=1e9`` are refused here, not deep inside training)."""
    import math
    from dataclasses import fields

    from models.nn.experts import ExpertsConfig

    types = {f.name: str(f.type) for f in fields(ExpertsConfig)}
    for key, v in opts.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if types.get(key) == "int" and not (number and isinstance(v, int) and 0 <= v <= 4096):
            raise ValueError(f"{key}={v!r} is not a whole number in [0, 4096]")
        if types.get(key) == "float" and not (number and math.isfinite(v) and abs(v) <= 1e6):
            raise ValueError(f"{key}={v!r} is not a finite number")


def _request(args: argparse.Namespace, normal: tuple[float, float] | None) -> dict:
    """The AnomalyRequest fields the flags set (besides path, project and media id)."""
    from core.anomaly.train import FFN_ALIASES

    request = {"sensitivity": args.sensitivity, "window_s": args.window, "retrain": args.retrain,
               "first_minutes": args.first_minutes if args.normal is None else 0.0,
               "ffn": FFN_ALIASES[args.experts], "experts": args.experts_config, "scene": args.scene,
               "gate": not args.dense}
    if normal is not None:
        request["normal"] = normal
    return request


def _run_folder(args: argparse.Namespace, normal: tuple[float, float] | None) -> int:
    from core.anomaly.folder import FolderRequest, anomalies_folder
    from core.perception.cli import folder_report

    project = open_project(args.project, stores="results")
    try:
        if args.restore_confusion or args.suppress_confusion:
            for line in mark_confusions(project, args.scene, args.restore_confusion, args.suppress_confusion):
                print(line, file=sys.stderr)
        req = FolderRequest(project, tuple(args.sources), _request(args, normal), ray_address=args.ray,
                            ray_workers=args.ray_workers)
        return folder_report(lambda state: anomalies_folder(req, state, _event_lines), "done",
                             (Path(args.sources[0]).name or "anomalies")[:24])
    finally:
        project.close()


def _event_lines(result) -> list[str]:
    span = result.curve.times[-1] + result.curve.window_s - result.curve.times[0] if len(result.curve.times) else 0.0
    return ([f"{len(result.events)} events (sensitivity {result.sensitivity:.2f}, threshold {result.threshold:.2f}) "
             f"in {span:.1f} s of media; compute {result.compute_s:.1f} s"]
            + [summary_line(e) for e in result.events] + [f"note: {n}" for n in result.notes])


def _run(args: argparse.Namespace, normal: tuple[float, float] | None) -> int:
    from core.anomaly.pipeline import run_anomalies
    from core.media.decode import MediaError, probe
    from core.store.project import Project, ProjectError

    info = probe(args.video, with_hash=False)
    if normal is not None:
        cliargs.past_end("--normal", normal[0], info.duration_s, Path(info.path).name, verb="starts")
    tmpdir = None
    if args.project:
        project = open_project(args.project, stores="results")
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="kestrel-anomalies-")
        project = Project.create_temporary(tmpdir.name)
        print("no --project: working in a temporary project (nothing is kept for next time)", file=sys.stderr)
    state = HeadlessState(bar=True, label=Path(args.video).name[:24])
    request = _request(args, normal)
    try:
        if args.restore_confusion or args.suppress_confusion:
            for line in mark_confusions(project, args.scene, args.restore_confusion, args.suppress_confusion):
                print(line, file=sys.stderr)
        result = run_anomalies(project, args.video, state, **request)
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled: nothing was stored (a stored model is kept)", file=sys.stderr)
        return 130
    except (AnomalyError, MediaError, ProjectError) as e:
        print(file=sys.stderr)
        print_error(e)
        return 1
    finally:
        if tmpdir is not None:
            project.discard()
            tmpdir.cleanup()
        else:
            project.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    span = result.curve.times[-1] + result.curve.window_s - result.curve.times[0] if len(result.curve.times) else 0.0
    print(f"{len(result.events)} events (sensitivity {result.sensitivity:.2f}, threshold {result.threshold:.2f}) "
          f"in {span:.1f} s of media; compute {result.compute_s:.1f} s "
          f"({result.compute_s / max(span, 1e-9):.2f}× real time)")
    for e in result.events:
        print(summary_line(e))
    for line in confusion_lines(args.scene, result.confusions, result.learned):
        print(line)
    if args.export:
        from core.anomaly.export import export_event_clips, export_events_csv, export_events_json
        from core.errors import describe

        folder = Path(args.export)
        try:
            export_events_csv(result.events, folder / "events.csv")
            export_events_json(result.events, folder / "events.json",
                               {"media": str(Path(args.video).resolve()), "threshold": result.threshold,
                                "sensitivity": result.sensitivity, "normal": result.normal, "notes": result.notes})
            clips = export_event_clips(args.video, result.events, folder, limit=args.clips)
        except (OSError, MediaError) as e:
            print_error(f"export failed: {describe(e)}")
            return 1
        print(f"exported events.csv, events.json and {len(clips)} clips to {folder}")
    return 0
