"""The optional audio-encoder features of the fusion network (``FeatureConfig.audio_embed``, off by
default): a user's Wav2Vec2 / HuBERT folder feeds ``emb:NNN`` columns to the network's audio token.

These tests prove the PLUMBING only, never quality: the encoder is a tiny randomly initialised
Wav2Vec2Model (tests/modelkit.py), so its features are random numbers; what is checked is that
they reach the feature rows window by window (file and live alike), the network trains on them,
the stored features are keyed by them, and a missing folder is a note, not a crash.
"""
from __future__ import annotations

import numpy as np
import pytest

import modelkit
from bench.anomaly import build_scene
from core.anomaly.features import FeatureConfig, WindowFeaturizer, WindowInput, load_features
from core.jobs import HeadlessState


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    return modelkit.tiny_audio_encoder(tmp_path_factory.mktemp("w2v") / "wav2vec2", "wav2vec2")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path, _ = build_scene(tmp_path_factory.mktemp("embed") / "desert.mp4", "desert", 22.0,
                          (("loud sound", 19.0, 0.0),))
    return path


def test_encoder_features_reach_the_network_and_key_the_stored_features(encoder_folder, clip, tmp_path):
    from core.anomaly.pipeline import run_anomalies
    from core.store.project import Project

    cfg = FeatureConfig(detector=None, audio_embed="wav2vec2-user", audio_embed_path=str(encoder_folder))
    with modelkit.no_network(), Project.create(tmp_path / "p.kestrel") as p:
        r = run_anomalies(p, str(clip), HeadlessState(), normal=(0, 16), features=cfg)
        emb = [c for c in r.features.columns if c.startswith("emb:")]
        assert emb == [f"emb:{i:03d}" for i in range(16)]
        x = np.stack([r.features.col(c) for c in emb], axis=1)
        assert np.isfinite(x).all() and len(np.unique(x.round(5), axis=0)) == len(x)  # a row per window
        assert r.model is not None and set(emb) <= set(r.model.config["columns"]["audio"])
        assert any("audio features: wav2vec2-user (16 dimensions" in n for n in r.notes)
        assert len(r.curve.times) == 22
        mid = r.media_id
        end = r.features.params["end"]
        assert load_features(p, mid, cfg, 0.0, end) is not None
        assert load_features(p, mid, FeatureConfig(detector=None), 0.0, end) is None  # other features
    # the live featurizer embeds each window's own audio
    from models.loaded import held
    enc = held("wav2vec2-user", user_path=str(encoder_folder))
    wf = WindowFeaturizer(cfg, has_video=False, has_audio=True, embedder=enc)
    rng = np.random.default_rng(0)
    row = wf.push(WindowInput(0.0, 1.0, audio=rng.normal(0, 0.1, 16000).astype(np.float32)))
    i = wf.columns.index("emb:000")
    assert np.abs(row[i:i + 16]).sum() > 0


def test_a_missing_encoder_folder_is_a_note_and_no_columns(clip, tmp_path):
    from core.anomaly.pipeline import AnomalyRequest, detect_anomalies

    cfg = FeatureConfig(detector=None, audio_embed="wav2vec2-user", audio_embed_path=str(tmp_path / "nowhere"))
    r = detect_anomalies(AnomalyRequest(str(clip), normal=(0, 16), features=cfg, use_network=False), HeadlessState())
    assert not any(c.startswith("emb:") for c in r.features.columns)
    assert any("audio encoder unavailable" in n for n in r.notes)
    assert FeatureConfig().audio_embed is None and "audio_embed" not in FeatureConfig().params()
