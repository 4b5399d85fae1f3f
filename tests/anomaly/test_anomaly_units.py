"""Anomaly pipeline units: the fusion network's contract (bidirectional attention, swappable
FFN blocks, pickle-free checkpoints that refuse another FFN type), features (NaN, live-style
windows), events and feedback, cancel safety, export. Synthetic feature rows stand in for
media here; tests/anomaly/test_anomaly_real.py runs the whole thing on real footage."""
from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.anomaly import NotEnoughNormalData
from core.anomaly.detectors import Baseline
from core.anomaly.events import (AnomalyEvent, EventBuilder, Reason, current_weights, find_events, load_events,
                                 set_feedback, store_events, weights_from_feedback)
from core.anomaly.features import (FeatureConfig, FeatureSet, WindowFeaturizer, audio_columns, sanitize,
                                   video_columns)
from core.anomaly.score import DEFAULT_WEIGHTS, OnlineScorer, score_features, sensitivity_threshold
from core.anomaly.train import MODEL_KEY, TrainRequest, load_stored_model, store_model, train_model
from core.jobs import Cancelled, HeadlessState
from core.store.project import Project
from models.nn import fusion
from models.types import Detection
from projectkit import CancelAfter

ROOT = Path(__file__).resolve().parents[2]
FAST = fusion.TrainParams(steps=25, batch=16)


def synthetic(n: int = 60, seed: int = 0, start: float = 0.0) -> FeatureSet:
    """Rows that look like a calm scene: a person or two, steady sound, a slow loudness cycle."""
    rng = np.random.default_rng(seed)
    cols = video_columns(("person", "bus")) + audio_columns(32)
    fs = np.zeros((n, len(cols)), np.float32)
    ix = {c: i for i, c in enumerate(cols)}
    people = rng.integers(1, 3, n)
    fs[:, ix["n:person"]] = fs[:, ix["det_total"]] = people
    fs[:, ix["p:person"]] = 0.8
    fs[:, ix["frame_diff"]] = 0.03 + 0.005 * rng.standard_normal(n)
    fs[:, ix["frame_diff_max"]] = fs[:, ix["frame_diff"]] * 1.5
    fs[:, ix["brightness"]] = 0.4
    level = -25 + 3 * np.sin(np.arange(n) / 5) + rng.standard_normal(n)
    fs[:, ix["rms_db"]] = level
    fs[:, ix["rms_db_max"]] = level + 6
    fs[:, ix["onset_mean"]], fs[:, ix["onset_max"]] = 1.0, 3.0
    fs[:, ix["mel:00"]:ix["mel:00"] + 32] = level[:, None] - np.linspace(0, 30, 32)[None] + rng.standard_normal((n, 32))
    return FeatureSet(start + np.arange(n, dtype=float), fs, cols, 1.0, True, True)


@pytest.fixture(scope="module")
def trained() -> fusion.FusionConfig:
    return train_model(TrainRequest(synthetic(), (0, 40), params=FAST), HeadlessState())


# -- the network ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cross", [True, False])
def test_cross_modal_attention_is_bidirectional(cross):
    torch = pytest.importorskip("torch")
    net = fusion.build_model(fusion.FusionConfig(video_dim=5, audio_dim=7, cross=cross), seed=1)
    net.eval()
    v = torch.randn(2, 8, 5, requires_grad=True)
    a = torch.randn(2, 8, 7, requires_grad=True)
    last = torch.zeros(2, 8, dtype=torch.bool)
    last[:, -1] = True
    pad = torch.zeros_like(last)
    rv, ra = net(v, a, last, last, pad)
    # video output ← audio input, and audio output ← video input (None: not in the graph at all)
    g_a = torch.autograd.grad(rv[:, -1].sum(), a, retain_graph=True, allow_unused=True)[0]
    g_v = torch.autograd.grad(ra[:, -1].sum(), v, allow_unused=True)[0]
    flow = [0.0 if g is None else float(g.abs().sum()) for g in (g_a, g_v)]
    if cross:
        assert flow[0] > 0 and flow[1] > 0
    else:  # the control: without cross-attention nothing flows between modalities
        assert flow == [0.0, 0.0]


class WideFFN:
    """A second FFN type (3 layers), standing in for the later mixture-of-experts."""

    def __new__(cls, dim: int, hidden: int):
        from torch import nn
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, dim))


def test_ffn_factory_swap_and_checkpoint_refused_for_another_type(tmp_path):
    fusion.register_ffn("wide3", WideFFN)
    model = train_model(TrainRequest(synthetic(), (0, 40), ffn="wide3", params=FAST), HeadlessState())
    assert model.config["net"]["ffn"] == "wide3"
    blk = model.net.blocks[0]
    assert len(blk.ffn_v) == 5 and len(blk.ffn_a) == 5  # the factory's modules are in the blocks
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        store_model(p, mid, model)
        arr, meta = p.get_array(mid, MODEL_KEY)
        assert arr.dtype == np.uint8 and meta["net"]["ffn"] == "wide3"
        head = json.loads(arr[8:8 + int.from_bytes(arr[:8].tobytes(), "little")].tobytes())
        assert "__metadata__" in head  # safetensors, not a pickle
        again = load_stored_model(p, mid)  # by name from the registry: same outputs
        fs = synthetic(seed=3)
        np.testing.assert_allclose(again.zscores(fs)["video"], model.zscores(fs)["video"], rtol=1e-5, atol=1e-5)
        with pytest.raises(fusion.CheckpointError, match=r"trained with 'wide3'.*'dense' blocks"):
            load_stored_model(p, mid, ffn_factory=fusion.dense_ffn)
    bad = {**model.config, "net": {**model.config["net"], "ffn": "dense"}}
    with pytest.raises(fusion.CheckpointError, match="do not belong together|does not fit"):
        fusion.from_bytes(model.weights, bad)
    with pytest.raises(fusion.CheckpointError, match="does not have"):
        fusion.from_bytes(model.weights, {**model.config, "net": {**model.config["net"], "ffn": "moe-later"}})


def test_training_is_deterministic(trained):
    again = train_model(TrainRequest(synthetic(), (0, 40), params=FAST), HeadlessState())
    a, b = trained.net.state_dict(), again.net.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_too_little_normal_footage_is_refused_clearly():
    with pytest.raises(NotEnoughNormalData, match=r"Only 8 s of normal footage.*detectors alone"):
        train_model(TrainRequest(synthetic(), (0, 8), params=FAST), HeadlessState())


def test_cancel_halfway_keeps_the_previous_model(tmp_path, trained):
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        store_model(p, mid, trained)
        runs = len(p.list_runs())
        st = CancelAfter(0.5)  # cancels itself halfway
        with pytest.raises(Cancelled):
            train_model(TrainRequest(synthetic(seed=9), (0, 40), params=fusion.TrainParams(steps=200)), st)
        assert 0.5 <= st.progress < 0.93  # it stopped in the middle of training
        kept = load_stored_model(p, mid)
        assert kept.weights == trained.weights and kept.config == trained.config
        assert len(p.list_runs()) == runs


# -- features ----------------------------------------------------------------------------------

def test_nan_and_inf_features_are_sanitised_with_a_warning(caplog, trained):
    fs = synthetic()
    vals = fs.values.copy()
    vals[5, 0], vals[7, 3], vals[9, -1] = np.nan, np.inf, -np.inf
    with caplog.at_level(logging.WARNING):
        bad = FeatureSet(fs.times, vals, fs.columns, 1.0, True, True)
    assert np.isfinite(bad.values).all() and any("non-finite" in n for n in bad.notes)
    assert "non-finite" in caplog.text
    z = trained.zscores(bad)
    assert np.isfinite(z["video"]).all() and np.isfinite(z["audio"]).all()
    clean, msg = sanitize(fs.values, fs.columns)
    assert msg is None and clean is fs.values


def test_window_featurizer_live_style_windows(caplog):
    """Windows pushed one by one, as a live source would: 48 kHz stereo audio with a bang,
    frames, and detections with track ids."""
    cfg = FeatureConfig(window_s=0.5)
    wf = WindowFeaturizer(cfg, classes=("person", "bus"))
    rng = np.random.default_rng(0)
    from core.anomaly.features import WindowInput
    rows = []
    for k in range(8):
        t = k * 0.5
        audio = 0.01 * rng.standard_normal((2, 24000)).astype(np.float32)
        if k == 5:
            audio[:, 6000:9000] += 0.8 * np.sin(np.arange(3000) / 3.0)
        frames = [np.full((90, 160, 3), 60 + (100 if k == 6 else 0), np.uint8)] * 2
        dets = [Detection((10, 10, 40, 80), "person", 0.9, 1, track_id=1)]
        if k >= 4:
            dets.append(Detection((60, 20, 150, 80), "bus", 0.8, 6, track_id=2))
        rows.append(wf.push(WindowInput(t, t + 0.5, frames, dets, audio=audio, audio_rate=48000)))
    fs = FeatureSet(np.arange(8) * 0.5, np.vstack(rows), wf.columns, 0.5, True, True)
    assert fs.col("track_enter")[4] == 1 and fs.col("track_enter")[5] == 0 and fs.col("n:bus")[4] == 1
    assert fs.col("rms_db_max")[5] > fs.col("rms_db_max")[4] + 20
    assert fs.col("onset_max")[5] > 3 * fs.col("onset_max")[4]
    assert fs.col("frame_diff_max")[6] > 0.3 and fs.col("frame_diff_max")[3] == 0
    nan_audio = np.full(8000, np.nan, np.float32)
    with caplog.at_level(logging.WARNING):
        row = wf.push(WindowInput(4.0, 4.5, audio=nan_audio, audio_rate=16000))
    assert np.isfinite(row).all() and "non-finite audio" in caplog.text


def test_window_length_is_checked():
    with pytest.raises(ValueError, match="between 0.5 and 1.0"):
        FeatureConfig(window_s=2.0)


def test_core_anomaly_imports_without_torch():
    code = ("import sys, core.anomaly.pipeline, core.anomaly.cli, core.anomaly.export, models.nn.fusion; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-800:]


# -- scoring, events, feedback -----------------------------------------------------------------

def test_online_scorer_gives_the_file_scores(trained):
    fs = synthetic(70, seed=4)
    vals = fs.values.copy()
    vals[50, fs.columns.index("n:bus")], vals[50, fs.columns.index("p:bus")] = 1, 0.95
    fs = FeatureSet(fs.times, vals, fs.columns, 1.0, True, True)
    base = Baseline.from_features(fs, fs.inside(0, 40))
    whole = score_features(fs, base, trained)
    live = OnlineScorer(fs.columns, 1.0, base, trained)
    got = [live.push(t, r).score for t, r in zip(fs.times, fs.values, strict=True)]
    np.testing.assert_allclose(got, whole.score, atol=1e-5)
    assert whole.top_cue(50) == "new_class" and whole.score[50] >= sensitivity_threshold(0.5)


def _curve(scores, cue="loud_sound"):
    fs = synthetic(len(scores))
    base = Baseline.from_features(fs, fs.inside(0, 10))
    c = score_features(fs, base)
    c.score = np.asarray(scores, float)
    c.contrib = {cue: np.asarray(scores, float)}
    c.reasons = {cue: ["bang" if s else "" for s in scores]}
    return c


def test_events_merge_gaps_and_follow_sensitivity():
    s = [0, 0, .9, .2, .7, 0, 0, 0, .6, 0, 0, 0, .3, 0]
    ev = find_events(_curve(s), sensitivity_threshold(0.5))
    assert [(e.start, e.end, round(e.peak, 2)) for e in ev] == [(2, 5, 0.9), (8, 9, 0.6)]
    assert ev[0].reasons[0] == Reason("loud_sound", "audio", 0.9, "bang", 2.0) and ev[0].modality == "audio"
    counts = [len(find_events(_curve(s), sensitivity_threshold(x))) for x in (0.0, 0.5, 1.0)]
    assert counts == sorted(counts) and counts[-1] == 3
    b = EventBuilder(0.5, 1.0)
    assert [k for k, _ in b.push(0, 0.9, {"loud_sound": 0.9}, {})] == ["opened"]  # alerts at the first window


def test_feedback_is_stored_and_moves_the_cue_weights(tmp_path):
    assert weights_from_feedback([{"verdict": "confirmed", "cues": ["loud_sound"]}])["loud_sound"] == \
        pytest.approx(min(1.5, DEFAULT_WEIGHTS["loud_sound"] * 1.25))
    curve = _curve([0, .9, 0, 0, 0, .8, 0])
    events = find_events(curve, 0.55)
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "h", 1, 60.0, "mp4", [])
        events[0].thumbnail = np.zeros((9, 16, 3), np.uint8)
        events[1].thumbnail = np.full((9, 16, 3), 7, np.uint8)
        store_events(p, mid, curve, events, None)
        w0 = current_weights(p)["loud_sound"]
        w = set_feedback(p, mid, events[0], "dismissed")
        assert w["loud_sound"] == pytest.approx(w0 * 0.8)
        w = set_feedback(p, mid, events[0], "confirmed")  # a later verdict replaces the earlier one
        assert w["loud_sound"] == pytest.approx(w0 * 1.25)
        back = load_events(p, mid)
        assert [e.feedback for e in back] == ["confirmed", None]
        assert back[1].thumbnail.mean() == 7
        tracks = {t.kind: t for t in p.load_tracks(mid)}
        assert len(tracks["anomaly"].items) == 7 and tracks["anomaly-events"].items[0].data["cues"] == ["loud_sound"]
        assert current_weights(p)["loud_sound"] == pytest.approx(w0 * 1.25)


# -- export -------------------------------------------------------------------------------------

def test_export_csv_json_and_clip(tmp_path, media_dir):
    from core.anomaly.export import export_clip, export_events_csv, export_events_json
    from core.media.decode import probe

    ev = [AnomalyEvent(1.0, 1.5, 0.8, 1.0, [Reason("loud_sound", "audio", 0.8, "a bang, loud", 1.0)])]
    rows = list(csv.DictReader(open(export_events_csv(ev, tmp_path / "e.csv"), encoding="utf-8")))
    assert rows[0]["cues"] == "loud_sound" and rows[0]["start"] == "1.000"
    doc = json.loads(export_events_json(ev, tmp_path / "e.json", {"media": "x"}).read_text())
    assert doc["events"][0]["reasons"][0]["text"] == "a bang, loud" and doc["meta"]["media"] == "x"
    out = export_clip(media_dir / "clip.mp4", 1.0, 1.5, tmp_path / "clip.mp4", pad=0.5)
    info = probe(out)
    assert info.has_video and info.has_audio and abs(info.duration_s - 1.5) < 0.2
    assert not list(tmp_path.glob(".*part*"))
