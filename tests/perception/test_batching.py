"""Frames batched per model in the analysis job (core.perception.batching): the real SSD and
MTCNN give the same detections at 1 and at N frames a call on the CPU; around the models (fakes),
a model on a CUDA device gets its own larger batches, in file order, with partials per call."""
from __future__ import annotations

from dataclasses import replace

import pytest

import mediagen
from core.jobs import Cancelled, HeadlessState
from core.perception.analysis import AnalysisRequest, analyze
from core.perception.batching import GPU_BATCH, batch_sizes, slices
from models import catalogue
from models.catalogue import ModelSpec
from models.types import Detection


# -- the real models on the CPU ------------------------------------------------------------

def _rows(out):
    return [(t, [(getattr(d, "label", "face"), d.score, d.box, getattr(d, "track_id", None)) for d in dets])
            for t, dets in out.frames]


def _same(a, b):
    assert [t for t, _ in a] == [t for t, _ in b]
    for (_t, da), (_u, db) in zip(a, b):
        assert [(lab, tid) for lab, _s, _b, tid in da] == [(lab, tid) for lab, _s, _b, tid in db]
        for (_l, sa, ba, _i), (_m, sb, bb, _j) in zip(da, db):
            assert sa == pytest.approx(sb, abs=1e-6)
            assert ba == pytest.approx(bb, abs=1e-4)


def test_real_ssd_and_mtcnn_give_the_same_detections_at_batch_1_and_n(bus_clip):
    models = ("ssd-mobilenet-v2-coco", "mtcnn-faces")
    req = AnalysisRequest(str(bus_clip), models=models, fps=2.0, end=2.5, device="cpu", confirm=False)
    one = analyze(replace(req, batch=1), HeadlessState())
    many = analyze(replace(req, batch=3), HeadlessState())
    for name in models:
        a, b = one.outputs[name], many.outputs[name]
        assert a.error is None and b.error is None
        assert len(a.frames) == 5 and sum(len(d) for _t, d in a.frames) >= 5  # people and faces found
        _same(_rows(a), _rows(b))
    ids = {d.track_id for _t, dets in one.outputs["ssd-mobilenet-v2-coco"].frames for d in dets}
    assert ids - {None}  # the tracker ran: the ids compared above are real


# -- around the models: a fake that says which device it is on and records its calls ---------

MADE: dict[str, "CallRecorder"] = {}


class CallRecorder:
    """One detection per frame, at a box drawn from the generated clip's frame number."""

    classes = ("bar",)

    def __init__(self, spec, where, device, **options):
        self.device = "cuda:0" if spec.name.startswith("gpu") else "cpu"
        self.batch_size = 8
        self.calls: list[int] = []
        MADE[spec.name] = self

    def detect(self, images):
        self.calls.append(len(images))
        out = []
        for img in images:
            i = float(mediagen.decode_frame_index(img))
            out.append([Detection((i, 10.0, i + 50.0, 60.0), "bar", 0.9, 0)])
        return out


@pytest.fixture
def recorders(monkeypatch):
    MADE.clear()
    specs = {**catalogue.load_catalogue()}
    for name in ("gpu-bar", "cpu-bar"):
        specs[name] = ModelSpec(name=name, title=name, task="detect", cls=f"{__name__}:CallRecorder",
                                weights={"package": "numpy", "module": "numpy", "files": []}, version="t1")
    monkeypatch.setattr(catalogue, "load_catalogue", lambda: specs)
    return MADE


def test_a_model_on_cuda_gets_its_own_batches_in_file_order(recorders, media_dir):
    partials = []
    st = HeadlessState(on_partial=partials.append)
    req = AnalysisRequest(str(media_dir / "clip.mp4"), models=("gpu-bar", "cpu-bar"), fps=10.0, batch=4,
                          gpu_batch=12, confirm=False)
    res = analyze(req, st)  # 3 s at 10 fps: 30 frames
    gpu, cpu = recorders["gpu-bar"], recorders["cpu-bar"]
    assert gpu.calls == [12, 12, 6] and cpu.calls == [4, 4, 4] * 2 + [4, 2]
    assert gpu.batch_size == 12 and cpu.batch_size == 8  # widened on CUDA only
    a, b = res.outputs["gpu-bar"], res.outputs["cpu-bar"]
    assert [t for t, _ in a.frames] == [t for t, _ in b.frames] == pytest.approx([k / 10 for k in range(30)])
    assert _rows(a) == _rows(b)  # the batch never changes what a model found, nor its track ids
    assert [len(p.frames) for p in partials if p.model == "gpu-bar"] == [12, 12, 6]
    assert [len(p.frames) for p in partials if p.model == "cpu-bar"] == [4, 4, 4] * 2 + [4, 2]
    assert st.progress == 1.0 and st.text == "done"


def test_cancel_between_batches(recorders, media_dir):
    # cancelled after the CPU model's first call in the first read (the GPU model's 16 frames done)
    st = HeadlessState(on_partial=lambda p: p.model == "cpu-bar" and st.cancel())
    req = AnalysisRequest(str(media_dir / "clip.mp4"), models=("gpu-bar", "cpu-bar"), fps=10.0, confirm=False)
    with pytest.raises(Cancelled):
        analyze(req, st)
    assert recorders["gpu-bar"].calls == [GPU_BATCH] and recorders["cpu-bar"].calls == [4]


def test_sizes_and_slices():
    class M:
        def __init__(self, device, own=None):
            self.device = device
            if own is not None:
                self.batch_size = own

    gpu, cpu, bare = M("cuda", 8), M("cpu", 8), M("cuda:1")
    assert batch_sizes({"g": gpu, "c": cpu, "b": bare}, 4, 16) == {"g": 16, "c": 4, "b": 16}
    assert gpu.batch_size == 16 and cpu.batch_size == 8 and not hasattr(bare, "batch_size")
    assert batch_sizes({"c": cpu}, 0) == {"c": 1}
    assert slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)] and slices(0, 3) == []


# -- bench/gpu.py's core, on the CPU ------------------------------------------------------------

def test_gpu_bench_measures_a_model_on_the_cpu_and_says_why_not_cuda(sample):
    from bench import gpu
    from models.catalogue import get_spec
    from models.devices import capability

    inputs = gpu.load_inputs(sample("chaplin"), 2, 1.0, 4)
    assert len(inputs.frames) == 2 and inputs.audio_s == pytest.approx(1.0, abs=0.01)
    ssd = get_spec("ssd-mobilenet-v2-coco")
    fig = gpu.measure(ssd, "cpu", inputs)
    assert fig.device == "cpu" and fig.work == 2 and fig.unit == "frames/s" and fig.rate > 0
    with pytest.raises(RuntimeError, match="cuda asked, the backend runs on cpu"):
        gpu.measure(ssd, "cuda", inputs)  # OpenCV DNN stays on the CPU: never a CUDA figure
    said: list[str] = []
    rows = gpu.model_rows(inputs, only=("ssd-mobilenet-v2-coco", "silero-vad"), say=said.append)
    assert [r.name for r in rows] == ["silero-vad", "ssd-mobilenet-v2-coco"] and len(said) == 2
    for row, line in zip(rows, said):
        assert row.cpu is not None and row.cpu.rate > 0 and line.startswith(row.name)
        can, why = capability(get_spec(row.name))
        assert (f"CUDA/CPU ×{row.ratio:.2f}" in line) if can else (f"cuda: not available ({why})" in line)
    assert rows[0].cpu.unit == "audio s/s" and rows[0].cpu.work == pytest.approx(1.0, abs=0.01)
    assert "cores; GPU: " in gpu.machine_line()
