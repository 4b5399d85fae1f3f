"""The multimodal autoencoder (models/nn/mmae.py) on synthetic shots with a known structure:
4 latent clusters generate 3 modalities through different random linear maps (+ noise,
offsets and wildly different feature scales), and a quarter of the modalities are missing at
random (NaN rows, presence masks). Checks that it learns, that the latent recovers the
clusters, that one modality alone finds the right shots, that missing data is safe, and the
checkpoint/cancel/determinism contract."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.nn import fusion

from models.nn import mmae

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("visual", "audio", "text")
DIMS = (24, 16, 12)
K = 4
CFG = mmae.MMAEConfig(dict(zip(NAMES, DIMS)), latent=16)
PARAMS = mmae.TrainParams(epochs=25, seed=0)


def synth(n: int, seed: int, pmiss: float = 0.25):
    """(data, masks, cluster labels). The generating maps are fixed; ``seed`` draws the shots."""
    g = np.random.default_rng(1234)
    centers = g.standard_normal((K, 6)) * 2.0
    maps = [g.standard_normal((6, d)) / np.sqrt(6) for d in DIMS]
    offsets = [g.standard_normal(d) * 2 for d in DIMS]
    scales = [10 ** g.uniform(-1, 2, d) for d in DIMS]
    r = np.random.default_rng(seed)
    y = r.integers(0, K, n)
    z = centers[y] + r.standard_normal((n, 6))
    pres = r.random((n, len(NAMES))) >= pmiss
    none = ~pres.any(axis=1)
    pres[none, r.integers(0, len(NAMES), none.sum())] = True
    data, masks = {}, {}
    for i, (name, w, o, s) in enumerate(zip(NAMES, maps, offsets, scales)):
        x = ((z @ w + 1.5 * r.standard_normal((n, w.shape[1])) + o) * s).astype(np.float32)
        x[~pres[:, i]] = np.nan
        data[name], masks[name] = x, pres[:, i].copy()
    return data, masks, y


@pytest.fixture(scope="module")
def train():
    return synth(300, seed=0)


@pytest.fixture(scope="module")
def test():
    return synth(200, seed=1)


@pytest.fixture(scope="module")
def trained(train):
    pytest.importorskip("torch")
    net = mmae.build(CFG, seed=0)
    hist = mmae.fit(net, train[0], train[1], PARAMS)
    return net, hist


def _ari(latent, y) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    return float(adjusted_rand_score(y, KMeans(K, n_init=10, random_state=0).fit_predict(latent)))


# -- house rules and small contracts --------------------------------------------------------

def test_importing_is_free_of_torch():
    code = "import sys, models.nn.mmae; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_config_round_trip_and_validation():
    d = CFG.to_dict()
    assert d["modalities"] == [["visual", 24], ["audio", 16], ["text", 12]] and d["arch"] == mmae.ARCH
    again = mmae.MMAEConfig.from_dict(json.loads(json.dumps(d, sort_keys=True)))
    assert again == CFG and again.names == NAMES and hash(again) == hash(CFG)
    with pytest.raises(ValueError, match="at least one modality"):
        mmae.MMAEConfig({})
    with pytest.raises(ValueError, match="invalid modality name"):
        mmae.MMAEConfig({"a.b": 3})
    with pytest.raises(ValueError, match="at least one feature"):
        mmae.MMAEConfig({"text": 0})
    with pytest.raises(mmae.CheckpointError, match="layout version"):
        mmae.MMAEConfig.from_dict({**d, "arch_version": 99})


def test_too_little_data_says_what_happens_instead():
    assert mmae.too_little_data(mmae.MIN_SHOTS) is None
    msg = mmae.too_little_data(10)
    assert "10 shots" in msg and "not trained" in msg and "per-modality features" in msg
    data, masks, _ = synth(20, seed=5)
    with pytest.raises(mmae.NotEnoughData, match="per-modality features"):
        mmae.fit(mmae.build(CFG, seed=0), data, masks, PARAMS)


# -- learning -------------------------------------------------------------------------------

def test_loss_decreases_and_held_out_reconstruction_beats_the_mean(trained, train, test):
    net, hist = trained
    assert len(hist["loss"]) == PARAMS.epochs and np.all(np.isfinite(hist["loss"]))
    assert hist["final_loss"] < 0.5 * hist["first_loss"], hist
    data, masks, _ = test
    full = mmae.reconstruct(net, data, masks)
    from_text = mmae.reconstruct(net, {"text": data["text"]}, {"text": masks["text"]}, on_empty="nan")
    for name in NAMES:
        m = masks[name]
        x = data[name][m].astype(np.float64)
        mean = np.nanmean(train[0][name], axis=0)
        base = np.mean((x - mean) ** 2)  # predicting the training mean, in original units
        rec = np.mean((full[name][m] - x) ** 2)
        assert rec < 0.5 * base, (name, rec, base)
        if name != "text":  # cross-modal: this modality from the shot's text alone
            both = m & masks["text"]
            cross = np.mean((from_text[name][both] - data[name][both]) ** 2)
            assert cross < 0.8 * np.mean((data[name][both] - mean) ** 2), (name, cross)
    err = mmae.reconstruction_errors(net, data, masks)
    for name in NAMES:
        assert np.isnan(err[name][~masks[name]]).all() and np.isfinite(err[name][masks[name]]).all()
        assert np.mean(err[name][masks[name]]) < 0.5  # normalised units: the mean predictor scores ~1


def test_latent_recovers_the_generating_clusters_and_compares_with_pca(trained, train, test):
    from sklearn.decomposition import PCA
    net, _ = trained
    data, masks, y = test
    ari_mmae = _ari(mmae.encode(net, data, masks), y)

    def concat(d, m):  # the linear baseline: standardised features side by side, missing -> mean
        cols = []
        for name in NAMES:
            ref = train[0][name]
            z = (d[name] - np.nanmean(ref, axis=0)) / np.nanstd(ref, axis=0)
            cols.append(np.where(m[name][:, None], np.nan_to_num(z), 0.0))
        return np.concatenate(cols, axis=1)

    pca = PCA(CFG.latent, random_state=0).fit(concat(*train[:2]))
    ari_pca = _ari(pca.transform(concat(data, masks)), y)
    print(f"\nARI on held-out shots: MMAE {ari_mmae:.3f}, PCA({CFG.latent}) of concatenated features {ari_pca:.3f}")
    assert ari_mmae > 0.8
    assert ari_mmae > ari_pca - 0.1


def _text_retrieval(net, data, masks, y):
    """Text-only encodings searched against the full latents: (same shot top-1, top-5, same cluster top-1)."""
    bank = mmae.encode(net, data, masks)
    rows = np.flatnonzero(masks["text"])
    q = mmae.encode(net, {"text": data["text"][rows]})
    idx, sim = mmae.cosine_nearest(q, bank, k=5)
    assert np.all(np.diff(sim, axis=1) <= 1e-12)
    return (float(np.mean(idx[:, 0] == rows)), float(np.mean((idx == rows[:, None]).any(axis=1))),
            float(np.mean(y[idx[:, 0]] == y[rows])))


def test_cross_modal_search_from_text_alone(trained, test):
    net, _ = trained
    data, masks, y = test
    top1, top5, cluster = _text_retrieval(net, data, masks, y)
    n = len(y)
    print(f"\ntext-only -> full latent: same shot top-1 {top1:.2f} (chance {1 / n:.3f}), top-5 {top5:.2f}, "
          f"same cluster top-1 {cluster:.2f} (chance ~{1 / K:.2f})")
    assert cluster > 0.85
    assert top5 > 0.5 and top1 > 0.3
    # any single modality maps into the same space, not only text
    vis = np.flatnonzero(masks["visual"])
    idx, _ = mmae.cosine_nearest(mmae.encode(net, {"visual": data["visual"][vis]}), mmae.encode(net, data, masks), 1)
    assert np.mean(y[idx[:, 0]] == y[vis]) > 0.85


def test_modality_dropout_is_what_makes_single_modalities_land_right():
    """The ablation, on an archive where every shot has all three modalities (so only modality
    dropout ever shows the encoder a lone modality): a shot's text-only latent points the same
    way as its full latent, and each modality is predicted from the others, clearly better
    with dropout than without."""
    train, test_ = synth(200, seed=0, pmiss=0.0), synth(200, seed=1, pmiss=0.0)
    out = {}
    for p in (0.5, 0.0):
        net = mmae.build(CFG, seed=0)
        mmae.fit(net, train[0], train[1], mmae.TrainParams(epochs=20, seed=0, modality_dropout=p))
        full, text = mmae.encode(net, test_[0]), mmae.encode(net, {"text": test_[0]["text"]})
        cos = np.sum(full * text, axis=1) / np.linalg.norm(full, axis=1) / np.linalg.norm(text, axis=1)
        loo = mmae.reconstruction_errors(net, test_[0], leave_out=True)
        out[p] = (float(cos.mean()), float(np.mean([np.mean(v) for v in loo.values()])))
    print(f"\ntext-only vs full latent cosine / leave-one-modality-out error: with modality dropout "
          f"{out[0.5][0]:.2f} / {out[0.5][1]:.3f}, without {out[0.0][0]:.2f} / {out[0.0][1]:.3f}")
    assert out[0.5][0] > out[0.0][0] + 0.05
    assert out[0.5][1] < 0.95 * out[0.0][1]


# -- missing and hostile data ---------------------------------------------------------------

def test_missing_modalities_never_make_nan_and_empty_shots_are_explicit(trained, test):
    net, _ = trained
    data, masks, _ = test
    d = {k: v[:20].copy() for k, v in data.items()}
    d["visual"][3, :5] = np.nan  # a few bad values: zeroed, the row still counts
    d["audio"][4, 2] = np.inf
    d["audio"][5] = 1e30  # absurd but finite: clipped, stays finite
    lat = mmae.encode(net, d)  # no masks: presence is "row has a finite value"
    assert np.isfinite(lat).all()
    assert np.isfinite(mmae.encode(net, d, {k: v[:20] for k, v in masks.items()})).all()
    assert np.isfinite(mmae.encode(net, {"audio": d["audio"]}, on_empty="nan")[masks["audio"][:20]]).all()
    for name, r in mmae.reconstruct(net, d).items():
        assert np.isfinite(r).all(), name
    # a shot with nothing usable: a clear error by default, a NaN row on request
    for v in d.values():
        v[7] = np.nan
    with pytest.raises(mmae.NoModalityError, match=r"1 shot\(s\) have no usable modality.*: 7\."):
        mmae.encode(net, d)
    lat2 = mmae.encode(net, d, on_empty="nan")
    assert np.isnan(lat2[7]).all() and np.isfinite(np.delete(lat2, 7, axis=0)).all()
    np.testing.assert_allclose(np.delete(lat2, 7, axis=0), np.delete(lat, 7, axis=0), atol=1e-6)
    assert all(np.isnan(e[7]) for e in mmae.reconstruction_errors(net, d).values())
    # masks say absent: data there is ignored entirely, whatever it holds
    m = {k: np.ones(20, bool) for k in NAMES}
    m["text"][0] = False
    d2 = {k: np.nan_to_num(v, nan=0.0) for k, v in d.items()}
    d2["text"][0] = 1e6
    a = mmae.encode(net, d2, m, on_empty="nan")[0]
    d2["text"][0] = -5.0
    np.testing.assert_array_equal(a, mmae.encode(net, d2, m, on_empty="nan")[0])
    leave = mmae.reconstruction_errors(net, {"text": d2["text"]}, leave_out=True)["text"]
    assert np.isnan(leave).all()  # nothing else to judge text from


def test_bad_inputs_are_refused_clearly(trained):
    net, _ = trained
    with pytest.raises(ValueError, match="unknown modalities"):
        mmae.encode(net, {"smell": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"expects \[N, 12\]"):
        mmae.encode(net, {"text": np.zeros((2, 5))})
    with pytest.raises(ValueError, match="disagree on the number of shots"):
        mmae.encode(net, {"text": np.zeros((2, 12)), "audio": np.zeros((3, 16))})


def test_training_copes_with_nan_rows_and_missing_masks():
    data, masks, _ = synth(60, seed=4, pmiss=0.4)
    data["audio"][0, :3] = np.inf
    net = mmae.build(mmae.MMAEConfig({"visual": 24, "audio": 16, "text": 12}, latent=8, width=16, hidden=32), seed=0)
    hist = mmae.fit(net, data, None, mmae.TrainParams(epochs=3, seed=0))  # presence inferred from NaN rows
    assert np.isfinite(hist["loss"]).all() and hist["present"]["audio"] == int(masks["audio"].sum())
    for name in NAMES:
        assert np.isfinite(getattr(net, f"mean_{NAMES.index(name)}").numpy()).all()
    assert np.isfinite(mmae.encode(net, data)).all()


# -- FFN blocks, checkpoints, cancel, determinism ------------------------------------------

class WideFFN:
    """A second FFN type (3 layers), standing in for a mixture-of-experts."""

    def __new__(cls, dim: int, hidden: int):
        from torch import nn
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.ReLU(),
                             nn.Linear(dim, dim))


def _aux_ffn(dim: int, hidden: int):
    """An FFN with an aux_loss (as a mixture-of-experts' balance loss would be): pulls ``gate`` to 0."""
    import torch
    from torch import nn

    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(dim, dim)
            self.gate = nn.Parameter(torch.ones(()))
            self.aux_loss = None

        def forward(self, x):
            self.aux_loss = self.gate ** 2
            return self.lin(x)

    return Aux()


SMALL = mmae.MMAEConfig({"visual": 24, "audio": 16, "text": 12}, latent=8, width=16, hidden=32)
FAST = mmae.TrainParams(epochs=3, seed=3)


def test_ffn_blocks_come_from_the_shared_registry_and_aux_loss_trains():
    fusion.register_ffn("mmae-test-wide3", WideFFN)
    fusion.register_ffn("mmae-test-aux", _aux_ffn)
    net = mmae.build(mmae.MMAEConfig(SMALL.dims, latent=8, width=16, hidden=32, ffn="mmae-test-wide3"), seed=0)
    assert len(net.encoders[0].blocks[0].ffn) == 5 and len(net.decoders[2].blocks[1].ffn) == 5
    aux_cfg = mmae.MMAEConfig(SMALL.dims, latent=8, width=16, hidden=32, ffn="mmae-test-aux")
    data, masks, _ = synth(60, seed=2)
    gates = {}
    for w in (1.0, 0.0):  # only aux_loss reaches the gates: they move with it and stay without it
        net = mmae.build(aux_cfg, seed=0)
        mmae.fit(net, data, masks, mmae.TrainParams(epochs=4, seed=0, weight_decay=0.0, aux_weight=w))
        gates[w] = [float(m.gate.detach()) for m in net.modules() if hasattr(m, "gate")]
    assert len(gates[1.0]) == 2 * 3 * 2  # every block of every encoder and decoder
    assert max(gates[1.0]) < 0.999 and gates[0.0] == [1.0] * 12
    with pytest.raises(mmae.CheckpointError, match="config says"):
        mmae.build(aux_cfg, ffn_factory=fusion.dense_ffn)


def test_checkpoint_round_trip_and_refusals(trained, test):
    net, _ = trained
    data, masks, _ = test
    blob = mmae.to_bytes(net, {"media": [1, 2], "features": "v1"})
    head = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])
    assert "__metadata__" in head and mmae.META_KEY in head["__metadata__"]  # safetensors, not a pickle
    info = mmae.checkpoint_info(blob)
    assert info["provenance"] == {"media": [1, 2], "features": "v1"} and info["net"]["ffn"] == "dense"
    assert info["train"]["shots"] == 300 and info["train"]["params"]["modality_dropout"] == 0.5
    again = mmae.from_bytes(blob)
    assert again.provenance["media"] == [1, 2]
    np.testing.assert_array_equal(mmae.encode(again, data, masks), mmae.encode(net, data, masks))
    np.testing.assert_array_equal(mmae.from_bytes(blob, fusion.dense_ffn).mean_0.numpy(), net.mean_0.numpy())
    fusion.register_ffn("mmae-test-wide3", WideFFN)
    with pytest.raises(mmae.CheckpointError, match=r"trained with 'dense'.*'mmae-test-wide3' blocks"):
        mmae.from_bytes(blob, WideFFN)

    from safetensors.torch import load, save

    def rewrite(**changes):
        meta = {**info, "net": {**info["net"], **changes}}
        return save(load(blob), metadata={mmae.META_KEY: json.dumps(meta)})

    with pytest.raises(mmae.CheckpointError, match="does not fit"):  # weights say dense, config says wide
        mmae.from_bytes(rewrite(ffn="mmae-test-wide3"))
    with pytest.raises(mmae.CheckpointError, match="does not have"):
        mmae.from_bytes(rewrite(ffn="moe-someday"))
    with pytest.raises(mmae.CheckpointError, match="does not fit"):
        mmae.from_bytes(rewrite(modalities=[["visual", 24], ["audio", 16], ["text", 13]]))
    with pytest.raises(mmae.CheckpointError, match="does not fit"):  # same modalities, other order
        mmae.from_bytes(rewrite(modalities=[["audio", 16], ["visual", 24], ["text", 12]]))
    with pytest.raises(mmae.CheckpointError, match="damaged|not a multimodal"):
        mmae.from_bytes(blob[:100])
    with pytest.raises(mmae.CheckpointError, match="not a multimodal"):
        mmae.from_bytes(save(load(blob), metadata={"other": "{}"}))


def test_a_mixture_checkpoint_keeps_its_expert_settings():
    """A dynamic-experts MMAE is rebuilt with the budget it was trained at; a header whose
    settings were changed, or that lacks them, is refused rather than run at other settings."""
    from safetensors.torch import load, save

    from models.nn.experts import ExpertsConfig, make_ffn_factory

    factory = make_ffn_factory(ExpertsConfig(kind="dynamic", budget=1.7, n_experts=4))
    data, masks, _ = synth(60, seed=2)
    net = mmae.build(mmae.MMAEConfig(SMALL.dims, latent=8, width=16, hidden=32, ffn=factory.ffn_name), seed=0,
                     ffn_factory=factory)
    mmae.fit(net, data, masks, mmae.TrainParams(epochs=3, seed=0))
    blob = mmae.to_bytes(net)
    info = mmae.checkpoint_info(blob)
    assert info["experts"]["budget"] == 1.7 and info["net"]["ffn"].startswith("anyexperts-")
    again = mmae.from_bytes(blob)
    assert again.encoders[0].blocks[0].ffn.cfg.budget == 1.7
    np.testing.assert_array_equal(mmae.encode(again, data, masks), mmae.encode(net, data, masks))

    def rewrite(experts):
        return save(load(blob), metadata={mmae.META_KEY: json.dumps({**info, "experts": experts})})

    with pytest.raises(mmae.CheckpointError, match="expert configuration describes"):
        mmae.from_bytes(rewrite({**info["experts"], "budget": 2.0}))
    default = mmae.to_bytes(mmae.build(mmae.MMAEConfig(SMALL.dims, latent=8, width=16, hidden=32,
                                                       ffn="anyexperts"), seed=0))
    bare = {**mmae.checkpoint_info(default), "experts": None}
    with pytest.raises(mmae.CheckpointError, match="saved without their expert settings"):
        mmae.from_bytes(save(load(default), metadata={mmae.META_KEY: json.dumps(bare)}))


def test_cancel_leaves_the_net_exactly_as_it_was():
    data, masks, _ = synth(60, seed=2)
    net = mmae.build(SMALL, seed=0)
    mmae.fit(net, data, masks, FAST)  # a previous good training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    info_before = dict(net.train_info)
    seen, calls = [], [0]

    class Stop(Exception):
        pass

    def check():
        calls[0] += 1
        if calls[0] > 7:
            raise Stop()

    with pytest.raises(Stop):
        mmae.fit(net, *synth(80, seed=9)[:2], mmae.TrainParams(epochs=10, seed=1),
                 progress=lambda f, msg: seen.append((f, msg)), check=check)
    assert seen and seen[-1][0] < 1.0 and all(isinstance(m, str) for _, m in seen)
    after = net.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    assert net.train_info == info_before and not net.training


def test_training_is_deterministic_and_seeded():
    data, masks, _ = synth(60, seed=2)
    runs, progress = [], []
    for seed in (3, 3, 4):
        net = mmae.build(SMALL, seed=0)
        fractions: list[float] = []
        mmae.fit(net, data, masks, mmae.TrainParams(epochs=3, seed=seed), progress=lambda f, m: fractions.append(f))
        runs.append(net.state_dict())
        progress.append(fractions)
    assert all(np.array_equal(runs[0][k].numpy(), runs[1][k].numpy()) for k in runs[0])
    assert not all(np.array_equal(runs[0][k].numpy(), runs[2][k].numpy()) for k in runs[0])
    assert progress[0] == sorted(progress[0]) and progress[0][0] == 0.0 and progress[0][-1] == 1.0
