"""The anomaly pass on real footage with events planted at known times.

Planted (all real media, re-encoded with PyAV to 480×270 at 12 fps):
- "chaplin scene": the real Chaplin clip looped to 58 s (a steady scene: people, music);
  the real bus photo clip spliced in at 33 s (a class the scene never shows), pygame's real
  boom.wav mixed in at 44 s and punch.wav at 52 s. Normal footage: 0–28 s.
- "sintel + bus": the first 52 s of the real Sintel trailer with the bus clip spliced in at
  22 s. Normal footage: 0–20 s. A trailer is a hard "scene": its own later shots (birds, a
  bed…) are genuinely new too, and count here as false alarms.
- quiet: the same Chaplin scene with nothing planted.

An event hits a planted one when its start is within ±1 s of the planted time. Precision and
recall over the planted events are printed (run with -s to see them).
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from core.anomaly.cli import parse_range, summary_line
from core.anomaly.pipeline import AnomalyRequest, detect_anomalies, run_anomalies
from core.cli import command
from core.jobs import HeadlessState
from core.store.project import Project
from mediagen import write_av

cmd_anomalies = command("anomalies")  # the command as main.py runs it

SIZE, FPS, RATE = (480, 270), 12, 48000
CHAPLIN_PLANTS = [(33.0, "bus"), (44.0, "boom"), (52.0, "punch")]
SINTEL_PLANTS = [(22.0, "bus")]


def _audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        out = [o.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0]) for o in rs.resample(f)]
        out += [o.to_ndarray().reshape(-1) for o in rs.resample(None)]
    return np.concatenate(out).astype(np.float32)


def _frames(path: Path, size: tuple[int, int], limit_s: float | None = None) -> list[np.ndarray]:
    out, nxt = [], 0.0
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            if f.time is None or f.time + 1e-6 < nxt:
                continue
            if limit_s is not None and f.time >= limit_s:
                break
            out.append(f.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            nxt += 1 / FPS
    return out


def plant(out: Path, base: Path, seconds: float, *, bus: Path | None = None, bus_at: float = 0.0,
          sounds: tuple[tuple[Path, float], ...] = ()) -> Path:
    """``base`` (looped) for ``seconds``, the bus clip over the picture from ``bus_at``, and
    each (wav, time) mixed into the sound at 0.9 of full scale."""
    src = _frames(base, SIZE, seconds)
    video = [src[k % len(src)] for k in range(int(seconds * FPS))]
    if bus is not None:
        for j, img in enumerate(_frames(bus, (640, 864))):  # landscape crop: the bus and the people
            video[int(round(bus_at * FPS)) + j] = cv2.resize(img[200:560], SIZE, interpolation=cv2.INTER_AREA)
    audio = np.resize(_audio(base), int(seconds * RATE)).astype(np.float32)
    for wav, at in sounds:
        s = _audio(wav)
        s = 0.9 * s / max(1e-6, float(np.abs(s).max()))
        i = int(at * RATE)
        audio[i:i + len(s)] += s[:len(audio) - i]
    audio = np.clip(audio, -1, 1)
    write_av(out, video, audio, fps=FPS, rate=RATE, size=SIZE)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory, sample, bus_clip) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("planted")
    chaplin = sample("chaplin")
    return {
        "chaplin": plant(d / "chaplin_planted.mp4", chaplin, 58, bus=bus_clip, bus_at=33,
                         sounds=((sample("boom_wav"), 44.0), (sample("punch_wav"), 52.0))),
        "quiet": plant(d / "chaplin_quiet.mp4", chaplin, 58),
        "sintel": plant(d / "sintel_bus.mp4", sample("sintel"), 52, bus=bus_clip, bus_at=22),
    }


class Recorder(HeadlessState):
    """Keeps every progress value and partial result, as the GUI would receive them."""

    def __init__(self):
        self.got: list = []
        super().__init__(on_partial=self.got.append)
        self.seen: list[float] = []

    def set_progress(self, fraction, text=""):
        super().set_progress(fraction, text)
        self.seen.append(self.progress)


@pytest.fixture(scope="module")
def results(clips, module_project):
    out = {}
    for name, normal in (("chaplin", (0, 28)), ("quiet", (0, 28)), ("sintel", (0, 20))):
        state = Recorder()
        out[name] = run_anomalies(module_project, str(clips[name]), state, normal=normal)
        out[name].state = state
        print(f"\n{name}: {len(out[name].events)} events, compute {out[name].compute_s:.1f} s "
              f"({out[name].timings})")
        for e in out[name].events:
            print("   ", summary_line(e))
    return out


def _hits(events, plants) -> tuple[set[int], set[int]]:
    """(indices of events that hit a planted time, indices of planted times that were hit)."""
    ev, pl = set(), set()
    for i, e in enumerate(events):
        for j, (t, _what) in enumerate(plants):
            if abs(e.start - t) <= 1.0:
                ev.add(i)
                pl.add(j)
    return ev, pl


def test_planted_events_are_found_at_their_time(results):
    total_ev = total_hit_ev = total_pl = total_hit_pl = 0
    for name, plants in (("chaplin", CHAPLIN_PLANTS), ("sintel", SINTEL_PLANTS)):
        events = results[name].events
        ev, pl = _hits(events, plants)
        total_ev, total_hit_ev = total_ev + len(events), total_hit_ev + len(ev)
        total_pl, total_hit_pl = total_pl + len(plants), total_hit_pl + len(pl)
        print(f"\n{name}: precision {len(ev)}/{len(events)}, recall {len(pl)}/{len(plants)}; "
              f"missed: {[w for j, (_t, w) in enumerate(plants) if j not in pl]}")
    precision, recall = total_hit_ev / max(1, total_ev), total_hit_pl / total_pl
    print(f"\noverall over the planted events: precision {precision:.2f}, recall {recall:.2f}")
    chaplin = results["chaplin"].events
    top = sorted(chaplin, key=lambda e: -e.peak)[:len(CHAPLIN_PLANTS)]
    assert all(abs(e.start - t) <= 1.0 for e in top for t in [min((p[0] for p in CHAPLIN_PLANTS),
                                                                 key=lambda x: abs(x - e.start))])
    by_time = {w: next((e for e in chaplin if abs(e.start - t) <= 1.0), None) for t, w in CHAPLIN_PLANTS}
    assert by_time["bus"] is not None and by_time["bus"].cues[0] == "new_class" and by_time["bus"].modality == "video"
    assert "bus" in by_time["bus"].label
    assert by_time["boom"] is not None and by_time["boom"].modality == "audio"
    assert "loud_sound" in by_time["boom"].cues
    assert by_time["boom"].thumbnail is not None and by_time["boom"].thumbnail.shape[2] == 3
    sintel_bus = [e for e in results["sintel"].events if abs(e.start - 22.0) <= 1.0]
    assert sintel_bus and "bus" in sintel_bus[0].label
    assert recall >= 0.99 and precision >= 0.4


def test_partial_results_and_progress_while_it_runs(results):
    r = results["chaplin"]
    parts = r.state.got
    assert len(parts) >= 2  # the curve grows while the file is still being read
    times = np.concatenate([p.times for p in parts])
    np.testing.assert_allclose(times, r.curve.times)
    np.testing.assert_allclose(np.concatenate([p.scores for p in parts]), r.curve.score, atol=1e-5)
    assert all(b >= a for a, b in zip(r.state.seen, r.state.seen[1:], strict=False)) and r.state.seen[-1] == 1.0


def test_a_quiet_real_clip_gives_few_false_alarms(results):
    r = results["quiet"]
    minutes = len(r.curve.times) * r.curve.window_s / 60
    print(f"\nquiet clip: {len(r.events)} events in {minutes:.1f} min")
    assert len(r.events) <= 1
    assert float(np.mean(r.curve.score < r.threshold)) > 0.97


def test_results_are_stored_and_the_cli_reuses_them(results, clips, module_project, tmp_path, capsys):
    from core.perception import ops
    from core.anomaly.events import load_events

    media = module_project.find_media(str(Path(clips["chaplin"]).resolve()))
    tracks = {(t.kind, t.name): t for t in ops.load_tracks(module_project, media.id)}
    assert len(tracks[("anomaly", "score")].items) == 58
    assert [round(i.start) for i in tracks[("anomaly-events", "events")].items] == \
        [round(e.start) for e in results["chaplin"].events]
    assert [e.id for e in load_events(module_project, media.id)] == [e.id for e in results["chaplin"].events]
    kinds = {r.kind for r in module_project.list_runs(media.id)}
    assert {"anomaly/features", "anomaly/model", "anomaly/score"} <= kinds
    rc = cmd_anomalies([str(clips["chaplin"]), "--normal", "0-28", "--project", str(module_project.path),
                        "--export", str(tmp_path / "out"), "--clips", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "features reused" in err and "model reused" in err
    lines = [ln for ln in out.splitlines() if "score " in ln and "–" in ln]
    assert len(lines) == len(results["chaplin"].events) and "00:33.00–" in out
    assert (tmp_path / "out" / "events.csv").exists() and len(list((tmp_path / "out").glob("*.mp4"))) == 1
    assert parse_range("0:10-1:00") == (10.0, 60.0) and parse_range("none") is None


def test_no_audio_too_little_normal_footage_and_stored_detections(sample, tmp_path):
    from core.perception import ops
    from core.perception.analysis import AnalysisRequest, analyze
    from core.media.decode import probe

    path = str(sample("bikes"))  # real, 10 s, no audio track
    r = detect_anomalies(AnomalyRequest(path, normal=(0, 5)), HeadlessState())
    notes = " ".join(r.notes)
    assert "vision only" in notes and "Only 5 s of normal footage" in notes and r.model is None
    assert not r.features.has_audio and len(r.curve.times) == 10
    assert all(e.modality == "video" for e in r.events)
    # perception already ran at the window rate (1 fps): its detections are reused, not recomputed
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = ops.register_media(p, probe(path))
        out = analyze(AnalysisRequest(path, models=("ssd-mobilenet-v2-coco",), fps=1.0), HeadlessState())
        ops.store_analysis(p, mid, out.outputs["ssd-mobilenet-v2-coco"], 1.0)
        again = detect_anomalies(AnomalyRequest(path, normal=(0, 5), project=p, media_id=mid), HeadlessState())
    assert any("detections reused from the stored ssd-mobilenet-v2-coco run" in n for n in again.notes)
    for col in ("det_total", "n:person", "track_enter"):
        np.testing.assert_array_equal(again.features.col(col), r.features.col(col))


def test_live_monitor_alerts_at_the_planted_times(results, clips):
    """The chaplin clip read by core.media.live.LiveSource (as fast as it decodes) through the live
    monitor, with the model and baseline the file pass made: alerts open within ±1 s of the
    planted bus and boom, from the same code as the file pass."""
    from core.anomaly.events import LiveMonitor
    from core.anomaly.features import FeatureConfig
    from core.media.live import LiveSource

    r = results["chaplin"]
    mon = LiveMonitor.create(FeatureConfig(), model=r.model, baseline=r.baseline)
    assert mon.status == "anomaly network and detectors" and not mon.notes
    alerts = []
    for chunk in LiveSource(str(clips["chaplin"]), realtime=False).chunks():
        alerts += [e.start for kind, e in mon.feed(chunk) if kind == "opened"]
    print(f"\nlive alerts at {alerts}; file events at {[e.start for e in r.events]}")
    for t, what in CHAPLIN_PLANTS[:2]:
        assert any(abs(a - t) <= 1.0 for a in alerts), what
    live = np.array([s for _t, s in mon.scores])
    k = min(len(live), len(r.curve.score))
    assert np.corrcoef(live[:k], r.curve.score[:k])[0, 1] > 0.8  # the same scene, scored alike
    learning = LiveMonitor.create(FeatureConfig())
    assert learning.status.startswith("learning the scene")
