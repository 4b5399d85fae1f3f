"""The device setting (auto, cpu, cuda): one resolver per runtime, honoured by the loaders, in each
run's provenance, and listed by ``main.py models``.

This machine has no GPU: the CUDA paths are checked with the runtimes' own questions answered by
fakes (torch.cuda.is_available, ctranslate2.get_cuda_device_count, onnxruntime's providers,
llama.cpp's offload flag) and the libraries' constructors recording what they were asked for.
Nothing here claims a measured GPU number. One test loads a real model with "auto" and checks that
it ran on the CPU and that its stored run says so.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

import main
from core.jobs import HeadlessState
from core.perception import ops
from core.perception.analysis import AnalysisRequest, analyze
from core.store.project import Project
from models import devices
from models.catalogue import ModelError, get_spec, load, load_catalogue
import projectkit


@pytest.fixture(autouse=True)
def fresh_preference(monkeypatch):
    """Each test starts from "auto" and no KESTREL_DEVICE, and leaves it so."""
    monkeypatch.delenv("KESTREL_DEVICE", raising=False)
    devices.set_preference("auto")
    yield
    devices.set_preference("auto")


def _run(p: Project, run_id: int):
    return next(r for r in p.list_runs() if r.id == run_id)


def _can(monkeypatch, *runtimes: str) -> None:
    """Say that these runtimes can use CUDA here, and every other one cannot (tests/gui uses it too)."""
    for rt in devices.RUNTIMES:
        answer = (True, f"{rt} CUDA (fake)") if rt in runtimes else (False, f"{rt} has no CUDA (fake)")
        monkeypatch.setitem(devices._ASK, rt, lambda a=answer: a)
    monkeypatch.setattr(devices, "_gpu_name", lambda rt: "Fake GPU" if rt in runtimes else "")


# -- the resolver -------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", devices.RUNTIMES)
def test_auto_takes_cuda_where_the_runtime_can_and_cpu_never_does(runtime, monkeypatch):
    _can(monkeypatch, runtime)
    auto = devices.resolve("auto", runtime)
    assert (auto.name, auto.kind, auto.note, auto.gpu) == ("cuda:0", "cuda", "", "Fake GPU")
    assert devices.resolve("cpu", runtime).name == "cpu"
    _can(monkeypatch)  # no runtime can
    auto, cuda = devices.resolve("auto", runtime), devices.resolve("cuda", runtime)
    assert (auto.name, auto.note) == ("cpu", "")  # auto on the CPU is what was asked: no note
    assert cuda.name == "cpu" and cuda.note == f"cuda asked, cpu used: {runtime} has no CUDA (fake)"
    assert cuda.provenance() == {"device": "cpu", "device_note": cuda.note}
    assert cuda.label() == f"CPU ({cuda.note})"


def test_each_runtime_gets_its_precision():
    gpu, cpu = devices.Device("cuda:0", "x"), devices.Device("cpu", "x")
    assert (gpu.compute_type, cpu.compute_type) == ("float16", "int8")
    assert gpu.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cpu.providers == ["CPUExecutionProvider"]
    assert (gpu.n_gpu_layers, cpu.n_gpu_layers) == (-1, 0)
    assert gpu.torch_dtype == cpu.torch_dtype == "float32"  # the same results on either


def test_the_preference_and_the_environment(monkeypatch):
    _can(monkeypatch, "torch")
    assert devices.resolve(None, "torch").name == "cuda:0"
    devices.set_preference("cpu")
    assert devices.resolve(None, "torch").name == "cpu"
    monkeypatch.setenv("KESTREL_DEVICE", "cuda")  # the environment wins over the setting
    assert devices.resolve(None, "torch").name == "cuda:0"
    with pytest.raises(ValueError):
        devices.set_preference("tpu")
    with pytest.raises(ModelError, match="tpu"):
        load("silero-vad", device="tpu")


def test_the_runtimes_are_asked_their_own_questions(monkeypatch):
    """With the libraries' answers faked, each runtime's question decides (not a table of guesses)."""
    import ctranslate2
    import llama_cpp
    import onnxruntime
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake H100")
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    for rt in ("torch", "ctranslate2", "onnxruntime", "llama.cpp"):
        assert devices.runtime_capability(rt)[0], rt
    assert devices.resolve("auto", "torch").label() == "CUDA: Fake H100"
    assert devices.summary("auto") == "CUDA: Fake H100"
    # the two that cannot, whatever torch says (this opencv wheel has no CUDA; LiteRT's Interpreter no delegate)
    assert devices.runtime_capability("opencv-dnn") == (False, "the opencv-python wheel is built without CUDA "
                                                               "(OpenCV DNN runs on the CPU)")
    assert not devices.runtime_capability("litert")[0]
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "cuBLAS" in devices.runtime_capability("ctranslate2")[1]
    assert "onnxruntime-gpu" in devices.runtime_capability("onnxruntime")[1]


def test_a_runtime_that_fails_when_asked_is_the_cpu_with_the_reason(monkeypatch):
    def broken():
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setitem(devices._ASK, "torch", broken)
    d = devices.resolve("cuda", "torch")
    assert d.name == "cpu" and "CUDA driver version is insufficient" in d.note


def test_this_machine_says_honestly_that_it_has_no_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert devices.summary("cuda") == "CPU (CUDA asked: not available)"
    assert devices.summary("auto") == devices.summary("cpu") == "CPU"


# -- the loaders honour it ------------------------------------------------------------------------

class _Recorder:
    """A library constructor that records what it was asked for (the loader around it is real)."""

    def __init__(self, *args, **kwargs):
        type(self).calls.append((args, kwargs))


def test_whisper_asks_float16_on_cuda_and_int8_on_the_cpu(monkeypatch):
    import ctranslate2
    import faster_whisper

    class FakeWhisper(_Recorder):
        calls: list = []
        model = type("M", (), {"is_multilingual": False})()

    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisper)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    gpu = load("whisper-tiny", device="cuda")
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    cpu = load("whisper-tiny", device="auto")
    (_, on_gpu), (_, on_cpu) = FakeWhisper.calls
    assert (on_gpu["device"], on_gpu["compute_type"]) == ("cuda", "float16")
    assert (on_cpu["device"], on_cpu["compute_type"]) == ("cpu", "int8")
    assert (gpu.device, gpu.device_info.name, cpu.device) == ("cuda:0", "cuda:0", "cpu")


def test_onnx_models_ask_for_the_cuda_provider_only_when_it_is_there(monkeypatch):
    import onnxruntime

    class FakeSession(_Recorder):
        calls: list = []

        def get_inputs(self):
            return [type("I", (), {"name": n})() for n in ("input", "h", "c")]

    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert load("silero-vad", device="auto").device == "cuda:0"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    vad = load("silero-vad", device="cuda")
    assert [kw["providers"] for _a, kw in FakeSession.calls] == [
        ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]]
    assert vad.device == "cpu" and vad.device_info.note.startswith("cuda asked, cpu used: this onnxruntime has no")


def test_llama_offloads_every_layer_only_on_a_build_that_can(monkeypatch, tmp_path):
    import llama_cpp

    from models.llm.local import LocalLLM

    class FakeLlama(_Recorder):
        calls: list = []

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert LocalLLM(model_path=gguf, device="auto").device == "cuda:0"
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    cpu = LocalLLM(model_path=gguf, device="cuda")
    assert [kw["n_gpu_layers"] for _a, kw in FakeLlama.calls] == [-1, 0]
    assert cpu.device == "cpu" and "CPU build" in cpu.device_info.note


def test_a_model_whose_runtime_cannot_runs_on_the_cpu_and_says_why(monkeypatch):
    _can(monkeypatch, "torch", "ctranslate2", "onnxruntime", "llama.cpp")  # a GPU machine, PyPI OpenCV
    monkeypatch.setitem(devices._ASK, "opencv-dnn", devices._opencv)
    ssd = load("ssd-mobilenet-v2-coco", device="cuda")
    assert ssd.device == "cpu"
    assert ssd.device_info.note == ("cuda asked, cpu used: the opencv-python wheel is built without CUDA "
                                    "(OpenCV DNN runs on the CPU)")


# -- provenance, and reuse unaffected by it --------------------------------------------------------

def test_a_run_records_its_device_and_is_reused_on_any_device(tmp_path, monkeypatch):
    _can(monkeypatch)
    devices.set_preference("cuda")  # the analyst asked for CUDA; SSD ran on the CPU
    out = projectkit.detector_output()
    req = projectkit._request()
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media(req.path, "sha256:abc", 100, projectkit.DURATION, "mp4", [])
        run_id = ops.store_analysis(p, mid, out, 0.5)
        params = _run(p, run_id).params
        assert params["device"] == "cpu"
        assert params["device_note"] == "cuda asked, cpu used: opencv-dnn has no CUDA (fake)"
        assert {k: v for k, v in params.items() if not k.startswith("device")} == out.params
        # the cache key is the model's inputs: the same run is found whatever device asks again
        assert ops.cached_analysis(p, mid, req, projectkit.DURATION) == {out.name: run_id}
        assert ops.cached_analysis(p, mid, replace(req, device="cpu"), projectkit.DURATION) == {out.name: run_id}
        assert ops.cached_analysis(p, mid, replace(req, fps=5.0), projectkit.DURATION) == {}  # inputs still count
        assert p.find_run("analysis/detect", out.name, out.version, {**out.params, "device": "cuda:0"}, mid).id == run_id


def test_a_real_model_on_auto_runs_on_this_machines_device_and_its_run_says_so(media_dir, tmp_path):
    """Silero VAD for real, through the analysis job, stored: "auto" here is the CPU (no CUDA provider)."""
    can, _why = devices.runtime_capability("onnxruntime")
    path = media_dir / "clip.mp4"
    req = AnalysisRequest(str(path), models=("silero-vad",), device="auto")
    res = analyze(req, HeadlessState())
    out = res.outputs["silero-vad"]
    assert out.error is None and out.device == ("cuda:0" if can else "cpu")
    with Project.create(tmp_path / "p.kestrel") as p:
        from core.media.decode import probe

        info = probe(str(path))
        mid = ops.register_media(p, info)
        run_id = ops.store_analysis(p, mid, out, 1 / req.fps)
        assert _run(p, run_id).params["device"] == out.device
        assert "device_note" not in _run(p, run_id).params  # auto on the CPU: nothing was refused
        assert ops.cached_analysis(p, mid, req, info.duration_s) == {"silero-vad": run_id}


# -- `main.py models` ------------------------------------------------------------------------------

def test_models_lists_every_model_with_gpu_yes_or_no_and_why(capsys, monkeypatch):
    _can(monkeypatch, "torch")
    assert main.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for spec in load_catalogue().values():
        i = next(k for k, ln in enumerate(lines) if ln.startswith(spec.name + " "))
        gpu = next(ln for ln in lines[i + 1:] if "GPU:" in ln).strip()
        rt = devices.runtime_of(spec)
        if rt == "torch":
            assert gpu == "GPU: yes — torch CUDA (fake) [torch]", spec.name
        else:
            assert gpu.startswith("GPU: no — ") and gpu.endswith(f"[{rt}]") and len(gpu) > 20, spec.name


def test_models_says_when_a_runtime_is_not_installed(monkeypatch):
    monkeypatch.setattr(devices, "_installed", lambda rt: rt != "llama.cpp")
    assert devices.capability(get_spec("qwen2.5-0.5b-chat")) == (False, "llama-cpp-python is not installed")


def test_a_cuda_load_that_fails_is_one_error_that_says_to_use_the_cpu(monkeypatch):
    import ctranslate2
    import faster_whisper

    class DriverTooOld:
        def __init__(self, *args, device="cpu", **kwargs):
            if device == "cuda":
                raise RuntimeError("CUDA failed with error CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(faster_whisper, "WhisperModel", DriverTooOld)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    with pytest.raises(ModelError) as e:
        load("whisper-tiny", device="cuda")
    msg = str(e.value)
    assert "driver version is insufficient" in msg and msg.endswith("run it on the CPU (--device cpu, or "
                                                                   "'run on: CPU' in Analyse Media).")
    assert "\n" not in msg


def test_provenance_names_the_device_a_backend_reports():
    spec = get_spec("yolo-user")
    assert devices.recorded(spec, "0", "auto") == {"device": "cuda:0"}  # ultralytics' name for the first GPU
    assert devices.recorded(spec, "cuda", "cuda") == {"device": "cuda:0"}
    assert devices.recorded(spec, "cpu", "auto") == {"device": "cpu"}
    assert devices.recorded(spec, "cpu", "cuda")["device_note"].startswith("cuda asked, cpu used: ")


def test_the_setting_keeps_its_key_and_refuses_a_device_it_does_not_know(tmp_path):
    import json

    from core.settings import Settings, apply_device

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "analysis_device": "cuda"}))
    assert Settings(path).get("analysis_device") == "cuda"
    path.write_text(json.dumps({"version": 1, "analysis_device": "tpu"}))
    assert Settings(path).get("analysis_device") == "auto"
    apply_device("cpu")
    assert devices.preference() == "cpu"


def test_a_run_of_several_models_records_each_ones_device_outside_its_cache_key(tmp_path, monkeypatch):
    from models.catalogue import provenance_of

    _can(monkeypatch, "torch")
    devices.set_preference("cuda")
    prov = provenance_of(["ssd-mobilenet-v2-coco", "mtcnn-faces", None, "not-a-model", "mtcnn-faces"])
    assert prov["device"] == "cuda:0" and prov["devices"] == {"ssd-mobilenet-v2-coco": "cpu", "mtcnn-faces": "cuda:0"}
    assert prov["device_note"] == "ssd-mobilenet-v2-coco: cuda asked, cpu used: opencv-dnn has no CUDA (fake)"
    devices.set_preference("auto")
    _can(monkeypatch)
    assert provenance_of(["mtcnn-faces"]) == {"device": "cpu", "devices": {"mtcnn-faces": "cpu"}}
    assert provenance_of(["gpt-4o (a server)"]) == {}  # not Kestrel's to know
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = p.add_media("/v.mp4", "sha256:abc", 100, 10.0, "mp4", [])
        run = p.record_run("focus", "embedded", "1", {"k": 16, **prov}, mid, 0.0, 1.0)
        assert p.find_run("focus", "embedded", "1", {"k": 16}, mid).id == run
        assert p.find_run("focus", "embedded", "1", {"k": 8}, mid) is None
