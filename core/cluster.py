"""Folders of media, one file at a time, here or as Ray tasks: what ``analyze``, ``anomalies``
and ``tag`` share.

* :func:`find_media` — the media files of folders (recursive, sorted) and files named one by
  one; what cannot be read is reported with its reason, never raised.
* :func:`run_tasks` — the one Ray path: start (``"local"``: an instance of this machine with
  ``workers`` CPUs) or connect (a mistyped ``HOST:PORT`` fails in seconds), submit one task per
  file with ``max_retries`` (a task whose worker died runs again), wait, honouring cancel
  (Ctrl+C or :meth:`JobState.is_cancelled`: what still runs on the cluster is cancelled) and
  hand each result to the caller as it arrives. The caller stores it: only this process writes
  to the project (SQLite keeps one writer); workers return plain, picklable data.
* :func:`run_folder` — a folder job's loop over :class:`FolderJob` s, locally (one after the
  other, with progress and cancel inside each file) or through :func:`run_tasks`, with each
  file's outcome (:class:`FileOutcome`) and the totals (:class:`FolderRun`: files done,
  unchanged, failed, unreadable, media hours, wall time, × real time).

Ray is an optional extra (``pip install 'kestrel[cluster]'``, ray==2.60.0); without it a Ray
address is refused with one sentence (:class:`ClusterError`). On a real cluster every worker
needs Kestrel installed and the media (and, for ``anomalies``, the project file) at the same
paths: the paths, not the files, travel to the workers.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import KestrelError, describe, log_traceback
from core.jobs import Cancelled, HeadlessState, JobState, SubProgress, check, set_media_span

log = logging.getLogger(__name__)

RAY_POLL_S = 0.25  # how long one ray.wait blocks before cancel is checked again


class ClusterError(KestrelError):
    """Ray is missing, or the cluster cannot be reached: one sentence that says which."""


# -- finding the media ---------------------------------------------------------------------------

def find_media(sources: Sequence[str | os.PathLike]) -> tuple[list[Any], list[tuple[str, str]]]:
    """The readable media of ``sources`` (folders walked recursively in name order, files taken
    as given), each probed (:class:`core.media.decode.MediaInfo`, content hash included), and the
    others with a reason: ``not a media file`` (a name inside a folder without a media extension),
    ``unreadable: …`` (FFmpeg cannot read it), ``no such file or folder``. A file named twice is
    taken once."""
    from core.media.decode import MEDIA_EXTENSIONS

    paths: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for src in sources:
        root = Path(src)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    if p.suffix.lower() in MEDIA_EXTENSIONS:
                        paths.append(p)
                    else:
                        skipped.append((str(p), "not a media file"))
        elif root.exists():
            paths.append(root)
        else:
            skipped.append((str(root), "no such file or folder"))
    infos, seen = [], set()
    for p in paths:
        key = os.path.abspath(p)
        if key in seen:
            continue
        seen.add(key)
        info = probe_or_note(p, skipped)
        if info is not None:
            infos.append(info)
    return infos, skipped


def probe_or_note(path: str | os.PathLike, skipped: list[tuple[str, str]]):
    """``probe(path)``, or None with the reason appended to ``skipped`` (path, why)."""
    from core.media.decode import MediaError, probe

    try:
        return probe(path)
    except MediaError as e:
        skipped.append((str(path), f"unreadable: {e}"))
    except OSError as e:
        skipped.append((str(path), f"unreadable: {e.strerror or e}"))
    return None


def local_threads(workers: int) -> int:
    """Threads per worker of a local Ray instance: this machine's cores shared out (two workers
    on two cores get one each; they would only compete with more)."""
    return max(1, (os.cpu_count() or 1) // max(1, int(workers)))


# -- Ray: the one path every command uses ------------------------------------------------------------

@dataclass
class Task:
    """One unit of work for :func:`run_tasks`: ``fn(*args)`` on a worker. ``key``: the caller's
    handle (given back with the result); ``weight``: its share of the progress bar (media
    seconds); ``name``: how messages name it (the file's name)."""

    key: Any
    args: tuple
    weight: float = 1.0
    name: str = ""


@dataclass
class RayRun:
    start_s: float = 0.0  # starting or connecting to Ray
    cpus: float = 0.0  # the cluster's CPUs


def import_ray() -> tuple[Any, Any]:
    """``(ray, ray.exceptions)``, or ClusterError saying how to install it."""
    try:
        import ray
        from ray import exceptions as rex
    except ImportError as e:
        raise ClusterError("Ray is not installed: pip install 'kestrel[cluster]' (ray==2.60.0), "
                           "or run without --ray.") from e
    return ray, rex


def run_tasks(fn: Callable[..., Any], tasks: Sequence[Task], *, address: str, state: JobState,
              on_result: Callable[[Task, Any], None], on_failure: Callable[[Task, str], None],
              after: Callable[[Task], None] | None = None, workers: int = 2, max_retries: int = 2,
              own_errors: tuple[type[BaseException], ...] = (KestrelError,), threads: int | None = None,
              unit: str = "files") -> RayRun:
    """Run ``fn(*task.args)`` for every task on Ray (see the module docstring); ``on_result`` /
    ``on_failure`` (with one sentence naming the task) are called here, in this process, as each
    task ends, then ``after``. A failure of one task never stops the others. ``own_errors``:
    exceptions whose message is already a sentence for the analyst (passed on as they are).
    ``threads``: torch/OpenCV threads inside each task (None: the worker's own). Raises
    ClusterError (no Ray, cannot connect), Cancelled / KeyboardInterrupt (after cancelling the
    tasks that still run). Ray is shut down afterwards when this call started it."""
    ray, rex = import_ray()
    run = RayRun()
    started, r0 = False, time.perf_counter()
    if not ray.is_initialized():
        state.set_progress(0.0, f"connecting to Ray ({address})")
        try:
            if address == "local":
                ray.init(num_cpus=max(1, int(workers)), include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            else:
                check_reachable(address)
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"Cannot reach the Ray cluster at {address}: {e}") from e
        started = True
    run.start_s = time.perf_counter() - r0
    try:
        remote = ray.remote(num_cpus=1, max_retries=max(0, int(max_retries)))(_call if threads else fn)
        refs = {}
        for t in tasks:
            ref = remote.remote(fn, int(threads), t.args) if threads else remote.remote(*t.args)
            refs[ref] = t
        run.cpus = float(ray.cluster_resources().get("CPU", 0))
        pending: list = list(refs)
        try:
            _gather(ray, rex, refs, pending, state, on_result, on_failure, after, max_retries, own_errors, unit)
        except BaseException:  # cancel, Ctrl-C, a project error: stop what still runs on the cluster
            for r in pending:
                ray.cancel(r, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return run


def _call(fn: Callable[..., Any], threads: int, args: tuple) -> Any:
    """On a worker: ``fn(*args)`` with ``threads`` torch and OpenCV threads."""
    from models.loaded import limit_threads

    with limit_threads(threads, opencv=True):
        return fn(*args)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a mistyped HOST:PORT (or ray://HOST:PORT): ray.init would retry the
    connection for minutes. Other forms ("auto", a path) are left to Ray."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e.strerror or e})") from e


def _gather(ray: Any, rex: Any, refs: dict, pending: list, state: JobState, on_result, on_failure, after,
            max_retries: int, own_errors: tuple, unit: str) -> None:
    """Hand each result on as it arrives; ``pending`` is updated in place (the caller cancels it)."""
    total = sum(max(t.weight, 0.1) for t in refs.values()) or 1.0
    done_w = 0.0
    state.set_progress(0.0, f"0/{len(refs)} {unit} on Ray")
    while pending:
        check(state)
        ready, rest = ray.wait(pending, num_returns=1, timeout=RAY_POLL_S)
        pending[:] = rest
        for r in ready:
            t = refs[r]
            name = t.name or str(t.key)
            try:
                value = ray.get(r)
            except rex.RayTaskError as e:
                cause = getattr(e, "cause", None)
                on_failure(t, str(cause) if isinstance(cause, own_errors) else
                           f"{name} failed on a Ray worker: " + _one_line(
                               f"{type(cause).__name__}: {cause}" if cause is not None else str(e)))
            except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as e:
                tries = max(0, int(max_retries)) + 1
                on_failure(t, f"{name}: its Ray worker was lost on each of {tries} "
                              f"attempt{'s' if tries > 1 else ''} ({type(e).__name__})")
            except rex.TaskCancelledError:
                on_failure(t, f"{name}: cancelled on the cluster")
            except rex.RayError as e:
                on_failure(t, f"{name}: Ray could not run it: {_one_line(str(e))}")
            else:
                on_result(t, value)
            done_w += max(t.weight, 0.1)
            state.set_progress(done_w / total, f"{len(refs) - len(pending)}/{len(refs)} {unit} on Ray")
            if after is not None:
                after(t)


def _one_line(text: str, limit: int = 300) -> str:
    """The first line of a message (Ray's carry the worker's traceback after it), shortened."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 1] + "…"


# -- a folder job: local or on Ray -------------------------------------------------------------------

@dataclass
class FileOutcome:
    """One file of a folder job: ``done`` (computed and stored now), ``unchanged`` (stored before
    with the same settings and the same content: skipped), ``failed`` (``error`` says why),
    ``unreadable`` (FFmpeg cannot read it; ``error`` says why) or ``not media`` (a name without a
    media extension in a folder)."""

    path: str
    status: str = "failed"
    duration_s: float = 0.0  # media seconds the job covers in this file
    media_id: int | None = None
    error: str = ""
    lines: list[str] = field(default_factory=list)  # what storing it said (one line each)
    compute_s: float = 0.0  # wall time of its computation, where it ran
    where: str = ""  # host:pid that computed it

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class FolderJob:
    """A file to compute: ``fn(*args, state)`` (``args`` picklable: they travel to a Ray worker,
    where ``state`` is None) — or, run here, ``fn(*local_args, state)`` when ``local_args`` is
    given (e.g. the open project instead of its path)."""

    outcome: FileOutcome
    args: tuple
    local_args: tuple | None = None
    context: Any = None  # the caller's (what storing the result needs)


@dataclass
class FolderRun:
    files: list[FileOutcome] = field(default_factory=list)
    engine: str = "local"  # "local" | "ray"
    timings: dict[str, float] = field(default_factory=dict)  # wall_s, ray_start_s
    notes: list[str] = field(default_factory=list)

    def having(self, status: str) -> list[FileOutcome]:
        return [f for f in self.files if f.status == status]

    @property
    def media_s(self) -> float:
        """Media seconds computed in this run."""
        return sum(f.duration_s for f in self.having("done"))

    def summary(self, verb: str = "done") -> str:
        """``2 analysed, 1 unchanged (skipped), 0 failed, 1 unreadable, 0 not media; 0.011 h of media
        in 12.3 s (0.310× real time)``: wall time over the media seconds computed now."""
        wall, media = self.timings.get("wall_s", 0.0), self.media_s
        rt = f"{wall / media:.3f}× real time" if media > 0 else "no media computed"
        on = (f" on Ray ({self.timings.get('ray_cpus', 0):.0f} CPUs; {self.timings.get('ray_start_s', 0):.1f} s "
              "of it starting Ray)" if self.engine == "ray" else "")
        return (f"{len(self.having('done'))} {verb}, {len(self.having('unchanged'))} unchanged (skipped), "
                f"{len(self.having('failed'))} failed, {len(self.having('unreadable'))} unreadable, "
                f"{len(self.having('not media'))} not media; "
                f"{media / 3600:.3f} h of media in {wall:.1f} s{on} ({rt})")


def run_folder(fn: Callable[..., Any], jobs: Sequence[FolderJob], state: JobState, *,
               store: Callable[[FolderJob, Any], None], run: FolderRun, address: str | None = None,
               workers: int = 2, max_retries: int = 2, threads: int | None = None,
               own_errors: tuple[type[BaseException], ...] = (KestrelError,),
               on_cancel: Callable[[FolderJob], None] | None = None) -> FolderRun:
    """Compute every job (locally, or on Ray at ``address``) and ``store`` each result here as it
    comes; a job's failure is its outcome's ``error`` and the batch goes on. Progress is shared
    by media seconds (:func:`core.jobs.set_media_span` gets their sum); each finished outcome is
    the state's partial result. Cancel (or Ctrl+C) stops between files and, locally, inside one
    (``on_cancel`` is told which file was stopped): what was stored stays stored."""
    t0 = time.perf_counter()
    total = sum(max(j.outcome.duration_s, 0.1) for j in jobs) or 1.0
    set_media_span(state, sum(j.outcome.duration_s for j in jobs))

    def stored(job: FolderJob, value: Any) -> None:  # a project that cannot be written stops the batch
        store(job, value)  # it may say, in the outcome's error, that part of the result failed
        job.outcome.status = "failed" if job.outcome.error else "done"

    try:
        if address and jobs:
            run.engine = "ray"
            tasks = [Task(j, j.args, max(j.outcome.duration_s, 0.1), j.outcome.name) for j in jobs]

            def result(t: Task, value: Any) -> None:
                value, t.key.outcome.compute_s, t.key.outcome.where = value
                stored(t.key, value)

            def failure(t: Task, message: str) -> None:
                t.key.outcome.status, t.key.outcome.error = "failed", message

            ray_run = run_tasks(_timed, [Task(t.key, (fn, t.args), t.weight, t.name) for t in tasks],
                                address=address, state=state, on_result=result, on_failure=failure,
                                after=lambda t: state.set_partial_result(t.key.outcome), workers=workers,
                                max_retries=max_retries, own_errors=own_errors, threads=threads)
            run.timings["ray_start_s"], run.timings["ray_cpus"] = ray_run.start_s, ray_run.cpus
        else:
            done = 0.0
            for k, job in enumerate(jobs):
                check(state)
                w = max(job.outcome.duration_s, 0.1) / total
                sub = SubProgress(state, done, done + w, f"{k + 1}/{len(jobs)} {job.outcome.name[:20]}: ",
                                  forward=False)
                try:
                    value, job.outcome.compute_s, _here = _timed(
                        fn, job.local_args if job.local_args is not None else job.args, sub)
                except (Cancelled, KeyboardInterrupt):
                    if on_cancel is not None:
                        on_cancel(job)
                    raise
                except own_errors as e:
                    job.outcome.error = str(e) if job.outcome.name in str(e) else f"{job.outcome.name}: {e}"
                except Exception as e:  # a bug met on one file: one line here, its traceback in the log
                    where = log_traceback(e, f"{fn.__name__} on {job.outcome.path}")
                    job.outcome.error = (f"{job.outcome.name}: {describe(e)}"
                                         + (f" ({where})" if where else ""))
                else:
                    stored(job, value)
                done += w
                state.set_partial_result(job.outcome)
    finally:
        run.timings["wall_s"] = time.perf_counter() - t0
    state.set_progress(1.0, f"{len(run.having('done'))} of {len(jobs)} files done")
    return run


def _timed(fn: Callable[..., Any], args: tuple, state: JobState | None = None) -> tuple[Any, float, str]:
    """``fn(*args, state)`` with its wall time and where it ran (host:pid); on a Ray worker
    ``state`` is None and a :class:`HeadlessState` stands in."""
    c0 = time.perf_counter()
    value = fn(*args, state if state is not None else HeadlessState())
    return value, time.perf_counter() - c0, f"{socket.gethostname()}:{os.getpid()}"


def skipped_outcomes(skipped: Sequence[tuple[str, str]]) -> list[FileOutcome]:
    """:func:`find_media`'s skipped files as outcomes (``not media`` or ``unreadable``)."""
    return [FileOutcome(path, "not media" if reason == "not a media file" else "unreadable", error=reason)
            for path, reason in skipped]
