"""Dynamic experts inside the anomaly network (issue 8, anomaly half): the layer type chosen by
configuration, recorded in the checkpoint and the runs, a non-default mixture reloaded in a
fresh process from what the checkpoint stored, the experts spent per modality over time as a
timeline track, the pipeline's reuse/retrain rule, and bad configurations refused early.

One short real clip (the Chaplin scene, 26 s, pygame's boom mixed in at 21 s), features
computed once and reused from the project; short training (30 steps) keeps it fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from core.perception import ops
from core.anomaly import AnomalyError
from core.anomaly.cli import experts_from_flags, parse_expert_options
from core.anomaly.pipeline import EXPERTS_KIND, AnomalyRequest, detect_anomalies, experts_tracks, run_anomalies
from core.anomaly.train import MODEL_KIND, load_stored_model
from core.cli import command
from core.jobs import HeadlessState
from core.store.project import Project
from core.timeline import kind_of
from models.nn import fusion
from models.nn.experts import ExpertCollapseWarning, ExpertsConfig
from test_anomaly_real import Recorder, plant

cmd_anomalies = command("anomalies")  # the command as main.py runs it

ROOT = Path(__file__).resolve().parents[2]
FAST = fusion.TrainParams(steps=30, batch=16)
NORMAL = (0.0, 18.0)
WINDOWS = 26
# not the default shape: the checkpoint's FFN name is hashed (anyexperts-xxxxxxxx)
DYNAMIC = ExpertsConfig(kind="dynamic", budget=1.5, k_min=1, k_max=4, rho_max=0.25)


@pytest.fixture(autouse=True)
def _quiet_collapse():
    # 30 training steps are too few for the balancing loss to spread the load; the warning
    # itself is tested in tests/models/test_experts.py
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExpertCollapseWarning)
        yield


@pytest.fixture(scope="module")
def clip(tmp_path_factory, sample) -> Path:
    d = tmp_path_factory.mktemp("experts")
    return plant(d / "chaplin_boom.mp4", sample("chaplin"), WINDOWS, sounds=((sample("boom_wav"), 21.0),))


@pytest.fixture(scope="module")
def dynamic(clip, module_project):
    state = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExpertCollapseWarning)
        res = run_anomalies(module_project, str(clip), state, normal=NORMAL, ffn="anyexperts", experts=DYNAMIC,
                            train=FAST)
    res.state = state
    return res


def _track(project, media_id, kind, name):
    return next((t for t in ops.load_tracks(project, media_id) if t.key == (kind, name)), None)


def test_dynamic_experts_score_and_record_their_config(dynamic, module_project):
    r = dynamic
    assert r.model is not None and r.model_trained
    assert np.isfinite(r.curve.score).all() and len(r.curve.score) == WINDOWS
    assert all(np.isfinite(r.curve.z[m]).all() for m in ("video", "audio"))
    # provenance: the layer type (hashed name of a non-default shape) and its whole config
    assert r.model.ffn.startswith("anyexperts-") and r.model.config["net"]["ffn"] == r.model.ffn
    assert r.model.experts == DYNAMIC.to_dict()
    runs = [x for x in module_project.list_runs(r.media_id) if x.kind == MODEL_KIND]
    assert runs[-1].params["ffn"] == r.model.ffn and runs[-1].params["experts"] == DYNAMIC.to_dict()
    score_run = [x for x in module_project.list_runs(r.media_id) if x.kind == "anomaly/score"][-1]
    assert score_run.params["experts"]["budget"] == 1.5
    assert any("real experts per token" in n for n in r.notes)


def test_experts_spent_per_modality_over_time(dynamic, module_project):
    r = dynamic
    assert set(r.experts) == {"video", "audio"}
    for m, spent in r.experts.items():
        assert spent.shape == (WINDOWS,) and np.isfinite(spent).all()
        assert spent.min() >= DYNAMIC.k_min and spent.max() <= DYNAMIC.k_max, m
        tr = _track(module_project, r.media_id, EXPERTS_KIND, m)
        assert tr is not None and len(tr.items) == WINDOWS  # one value per window, stored with the run
        np.testing.assert_allclose([it.data["real"] for it in tr.items], spent, atol=1e-3)
        np.testing.assert_allclose([it.start for it in tr.items], r.curve.times)
        assert all(0.0 <= it.confidence <= 1.0 for it in tr.items) and tr.meta["scale"] == DYNAMIC.k_max
        assert tr.meta["floor"] == DYNAMIC.k_min  # drawn on K_min..K_max
        np.testing.assert_allclose([it.confidence for it in tr.items],
                                   (spent - DYNAMIC.k_min) / (DYNAMIC.k_max - DYNAMIC.k_min), atol=1e-3)
    # the budget binds: some windows got more real experts than others somewhere
    assert max(float(np.ptp(v)) for v in r.experts.values()) > 0
    # partial results carry them too, window for window
    parts = [p for p in r.state.got if p.experts]
    assert parts and sum(len(p.experts["video"]) for p in parts) == sum(len(p.times) for p in parts)
    assert kind_of(EXPERTS_KIND).style == "curve"


def test_a_non_default_mixture_reloads_in_a_fresh_process(dynamic, module_project):
    """Nothing in the new process ever built an anyexperts-xxxxxxxx factory: the checkpoint's
    stored experts config must rebuild it, and the scores must be the same."""
    r = dynamic
    code = f"""
import json, sys, warnings
sys.path.insert(0, {str(ROOT)!r})
warnings.simplefilter("ignore")
from models.nn import fusion
assert {r.model.ffn!r} not in fusion.ffn_names()
from core.anomaly.features import FeatureConfig, load_features
from core.anomaly.train import load_stored_model
from core.store.project import Project
p = Project.open({str(module_project.path)!r}, read_only=True)
m = load_stored_model(p, {r.media_id})
fs = load_features(p, {r.media_id}, FeatureConfig(), {r.features.params["start"]}, {r.features.params["end"]})
z = m.zscores(fs)
print(json.dumps({{"ffn": m.ffn, "video": list(map(float, z["video"])),
                  "experts": list(map(float, z["experts_audio"]))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ffn"] == r.model.ffn
    np.testing.assert_allclose(got["video"], r.curve.z["video"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["experts"], r.experts["audio"], atol=1e-6)


def test_the_pipeline_reuses_the_stored_model_for_the_same_request(dynamic, clip, module_project):
    again = detect_anomalies(AnomalyRequest(str(clip), normal=NORMAL, project=module_project, media_id=dynamic.media_id,
                                            ffn="anyexperts", experts=DYNAMIC.to_dict(), train=FAST,
                                            thumbnails=False), HeadlessState())
    assert not again.model_trained and any("anomaly model reused" in n for n in again.notes)
    assert "features reused from the project" in again.notes
    np.testing.assert_allclose(again.curve.score, dynamic.curve.score, atol=1e-6)
    for m in ("video", "audio"):
        np.testing.assert_allclose(again.experts[m], dynamic.experts[m])


def test_another_layer_type_or_expert_setting_retrains(dynamic, clip, module_project):
    mid = dynamic.media_id

    def run(**kw):
        return detect_anomalies(AnomalyRequest(str(clip), normal=NORMAL, project=module_project, media_id=mid,
                                               train=FAST, thumbnails=False, **kw), HeadlessState())

    topk = run(ffn="moe-topk")
    assert topk.model_trained and topk.model.ffn == "moe-topk" and topk.model.experts["k"] == 2
    why = next(n for n in topk.notes if "training a new model" in n)
    assert f"uses {dynamic.model.ffn!r} feed-forward blocks, 'moe-topk' were asked for" in why
    for spent in topk.experts.values():  # a fixed top-2 mixture spends 2 real experts on every token
        np.testing.assert_array_equal(spent, 2.0)
    # same shape, another training-only setting: the stored experts were trained otherwise
    other = run(ffn="anyexperts", experts={**DYNAMIC.to_dict(), "balance_weight": 2.0})
    assert other.model_trained and other.model.ffn == dynamic.model.ffn
    assert any("experts were trained with other settings (balance_weight)" in n for n in other.notes)
    # asking for another factory explicitly: the checkpoint refuses to load into it, clearly
    with pytest.raises(fusion.CheckpointError, match=r"trained with 'anyexperts-[0-9a-f]{8}'.*'moe-topk' blocks"):
        load_stored_model(module_project, mid, ffn_factory=fusion.ffn_factory("moe-topk"))
    dense = run(ffn="dense", ffn_factory=fusion.dense_ffn)
    assert dense.model_trained and dense.experts == {}
    assert any("stored anomaly model cannot be used" in n and "'dense' blocks were asked for" in n
               for n in dense.notes)
    assert experts_tracks(dense.curve, dense.model) == []


def test_a_dense_pass_removes_stale_experts_tracks(tmp_path, clip, sample):
    with Project.create(tmp_path / "p.kestrel") as p:
        r = run_anomalies(p, str(clip), HeadlessState(), normal=NORMAL, ffn="dynamic", train=FAST, thumbnails=False)
        assert r.model.ffn == "anyexperts" and _track(p, r.media_id, EXPERTS_KIND, "video") is not None
        d = run_anomalies(p, str(clip), HeadlessState(), normal=NORMAL, train=FAST, thumbnails=False)
        assert d.model.ffn == "dense" and d.model.experts is None and d.experts == {}
        assert not [t for t in ops.load_tracks(p, r.media_id) if t.kind == EXPERTS_KIND]


def test_bad_expert_configurations_are_refused_before_any_work(clip, capsys):
    with pytest.raises(AnomalyError, match=r"budget of 0\.5 slots per token is below K_min=1"):
        AnomalyRequest(str(clip), ffn="anyexperts", experts={"budget": 0.5})
    with pytest.raises(AnomalyError, match="disagree"):
        AnomalyRequest(str(clip), ffn="moe-topk", experts=DYNAMIC)
    with pytest.raises(AnomalyError, match="not a set of ExpertsConfig fields|unknown expert config field"):
        AnomalyRequest(str(clip), ffn="anyexperts", experts={"budgett": 2})
    with pytest.raises(AnomalyError, match="Unknown feed-forward type 'moe-someday'"):
        AnomalyRequest(str(clip), ffn="moe-someday")
    req = AnomalyRequest(str(clip), ffn="topk", experts={"k": 1})  # the CLI's words, a dict
    assert req.experts == ExpertsConfig(kind="topk", k=1)
    assert AnomalyRequest(str(clip)).experts is None  # dense: fusion's own block
    # the CLI refuses it with the sentence, before decoding anything
    with pytest.raises(SystemExit) as ex:
        cmd_anomalies([str(clip), "--experts", "dynamic", "--expert", "budget=0.5", "--expert", "k_min=1"])
    assert ex.value.code == 2 and "below K_min=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cmd_anomalies([str(clip), "--expert", "budget=2"])  # settings without a mixture
    assert "need --experts topk or --experts dynamic" in capsys.readouterr().err
    assert parse_expert_options(["budget=1.5", "k-max=3", "virtual=zero,copy"]) == \
        {"budget": 1.5, "k_max": 3, "virtual": ["zero", "copy"]}
    assert experts_from_flags("dynamic", ["budget=1.5"]) == ExpertsConfig(kind="dynamic", budget=1.5)
    assert experts_from_flags("topk", []) == ExpertsConfig(kind="topk") and experts_from_flags("dense", []) is None


def test_a_stored_experts_config_that_does_not_match_its_network_is_refused():
    rng = np.random.default_rng(0)
    v, a = rng.standard_normal((40, 5)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    from models.nn.experts import make_ffn_factory

    factory = make_ffn_factory(DYNAMIC)
    cfg = fusion.FusionConfig(video_dim=5, audio_dim=3, dim=16, heads=2, layers=1, hidden=32, context=4,
                              ffn=factory.ffn_name)
    net = fusion.build_model(cfg, factory, seed=0)
    good = {"net": cfg.to_dict(), "experts": factory.config}
    back = fusion.from_bytes(fusion.to_bytes(net, good), good)
    np.testing.assert_allclose(fusion.reconstruction_errors(back, v, a)[0],
                               fusion.reconstruction_errors(net, v, a)[0], rtol=1e-5, atol=1e-6)
    bad = {"net": cfg.to_dict(), "experts": {**factory.config, "n_experts": 6}}
    with pytest.raises(fusion.CheckpointError, match="describes 'anyexperts-[0-9a-f]{8}' blocks"):
        fusion.from_bytes(fusion.to_bytes(net, bad), bad)
    broken = {"net": cfg.to_dict(), "experts": {**factory.config, "budget": 0.1}}
    with pytest.raises(fusion.CheckpointError, match="expert configuration is invalid"):
        fusion.from_bytes(fusion.to_bytes(net, broken), broken)
