"""Where a model runs: the one resolver of the device setting (auto, cpu, cuda) per runtime.

Kestrel's models run on six runtimes, and only some of them can use a GPU on a given machine:

==============  ===================================================================  =============
runtime         CUDA when                                                            models
==============  ===================================================================  =============
torch           ``torch.cuda.is_available()``                                        MTCNN, MiniLM,
                                                                                     a user's YOLO,
                                                                                     DETR, CLIP...
ctranslate2     ``ctranslate2.get_cuda_device_count() > 0`` (float16; int8 on CPU)   Whisper
onnxruntime     ``CUDAExecutionProvider`` offered (the ``gpu`` extra: onnxruntime-gpu)  Silero VAD, OCR
llama.cpp       ``llama_cpp.llama_supports_gpu_offload()`` (a CUDA build)            the chat LLMs
opencv-dnn      ``cv2.cuda.getCudaEnabledDeviceCount() > 0`` (never the PyPI wheel)  SSD
litert          never: Kestrel's Interpreter path has no GPU delegate in the wheel   EfficientNet,
                                                                                     BirdNET
==============  ===================================================================  =============

:func:`resolve` turns a preference and a runtime into a :class:`Device` (its name, and the
runtime's precision: CTranslate2's compute type, ONNX Runtime's providers, llama.cpp's
offloaded layers). ``cuda`` asked for a model whose runtime cannot is never silent: the model
runs on the CPU and :attr:`Device.note` says "cuda asked, cpu used: <why>", which goes into the
run's provenance. Nothing here loads weights; a runtime is imported only to ask it.

The preference is one setting for every model (``analysis_device`` in the window's settings,
``--device`` on the command line): :func:`set_preference` sets it for the process;
``KESTREL_DEVICE`` (cpu/cuda) in the environment wins over both.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PREFERENCES = ("auto", "cpu", "cuda")
RUNTIMES = ("torch", "ctranslate2", "onnxruntime", "llama.cpp", "opencv-dnn", "litert")

# backend module -> runtime; a backend not named here runs on torch
_RUNTIME_OF = {
    "models.backends.asr": "ctranslate2",
    "models.backends.vad": "onnxruntime",
    "models.backends.ocr": "onnxruntime",
    "models.llm.local": "llama.cpp",
    "models.backends.ssd": "opencv-dnn",
    "models.backends.tags": "litert",
    "models.backends.birdnet": "litert",
    "models.llm.openai_compat": "server",
}
# the Python module each runtime is asked through, and its PyPI name
_MODULE = {"torch": ("torch", "torch"), "ctranslate2": ("ctranslate2", "ctranslate2"),
           "onnxruntime": ("onnxruntime", "onnxruntime"), "llama.cpp": ("llama_cpp", "llama-cpp-python"),
           "opencv-dnn": ("cv2", "opencv-python-headless"), "litert": ("ai_edge_litert", "ai-edge-litert")}

_preference = "auto"


@dataclass(frozen=True)
class Device:
    """Where one model runs and at which precision."""

    name: str  # "cpu" | "cuda:0"
    runtime: str
    asked: str = "auto"  # the preference it was resolved from
    note: str = ""  # why the CPU when CUDA was asked for ("" when it got what it asked)
    gpu: str = ""  # the card's name, when the runtime tells it

    @property
    def kind(self) -> str:
        """"cuda" or "cpu": what a backend's library takes."""
        return "cuda" if self.name.startswith("cuda") else "cpu"

    @property
    def compute_type(self) -> str:
        """CTranslate2: float16 on a GPU, int8 on the CPU (what Kestrel ran before, unchanged)."""
        return "float16" if self.kind == "cuda" else "int8"

    @property
    def torch_dtype(self) -> str:
        """Kestrel's torch backends keep float32 on both: the same results on either device."""
        return "float32"

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime's execution providers, best first."""
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.kind == "cuda" else ["CPUExecutionProvider"]

    @property
    def n_gpu_layers(self) -> int:
        """llama.cpp: every layer offloaded on a GPU (-1), none on the CPU."""
        return -1 if self.kind == "cuda" else 0

    def provenance(self) -> dict[str, str]:
        """What a run stores about its device (never part of a cache key)."""
        return {"device": self.name, **({"device_note": self.note} if self.note else {})}

    def label(self) -> str:
        """One line for people: "CUDA: <card>", "CPU", "CPU (cuda asked, cpu used: ...)"."""
        if self.kind == "cuda":
            return f"CUDA: {self.gpu}" if self.gpu else "CUDA"
        return f"CPU ({self.note})" if self.note else "CPU"


def set_preference(pref: str | None) -> None:
    """The process's device preference (the setting, or ``--device``); None leaves it."""
    global _preference
    if pref is None:
        return
    if pref not in PREFERENCES:
        raise ValueError(f"device must be one of {', '.join(PREFERENCES)}, not {pref!r}")
    _preference = pref


def preference() -> str:
    """The preference in force: ``KESTREL_DEVICE`` when set to one, else :func:`set_preference`'s."""
    env = os.environ.get("KESTREL_DEVICE", "")
    return env if env in PREFERENCES else _preference


def runtime_of(spec: Any) -> str:
    """The runtime a catalogue entry's backend runs on (``spec.cls`` is ``module:Class``)."""
    return _RUNTIME_OF.get(str(spec.cls).partition(":")[0], "torch")


def _installed(runtime: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULE[runtime][0]) is not None
    except (ImportError, ValueError):
        return False


def runtime_capability(runtime: str) -> tuple[bool, str]:
    """``(can use CUDA here, why)`` for a runtime, asked of the installed library itself."""
    if runtime == "server":
        return False, "runs wherever its server runs, not in Kestrel"
    if runtime not in _MODULE:
        return False, f"unknown runtime {runtime!r}"
    if not _installed(runtime):
        return False, f"{_MODULE[runtime][1]} is not installed"
    try:
        return _ASK[runtime]()
    except Exception as e:  # a broken driver or library: the CPU, with the reason
        log.warning("asking %s about CUDA failed: %s", runtime, e)
        return False, f"{runtime} could not be asked about CUDA ({type(e).__name__}: {e})"


def _torch() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, f"torch CUDA ({torch.cuda.get_device_name(0)})"
    if getattr(torch.version, "cuda", None) is None:
        return False, "this torch is a CPU build"
    return False, f"torch (CUDA {torch.version.cuda}) sees no CUDA device"


def _ctranslate2() -> tuple[bool, str]:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        return True, "CTranslate2 CUDA, float16"
    return False, ("CTranslate2 sees no CUDA device (its Linux wheel carries CUDA; it also needs the "
                   "cuBLAS 12 and cuDNN 9 libraries at run time)")


def _onnxruntime() -> tuple[bool, str]:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return True, "ONNX Runtime CUDAExecutionProvider"
    return False, ("this onnxruntime has no CUDAExecutionProvider (install the gpu extra: "
                   "onnxruntime-gpu in place of onnxruntime)")


def _llama() -> tuple[bool, str]:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        return True, "llama.cpp GPU offload"
    return False, "this llama-cpp-python is a CPU build (no GPU offload); a CUDA build needs CMAKE_ARGS=-DGGML_CUDA=on"


def _opencv() -> tuple[bool, str]:
    import cv2

    if getattr(cv2, "cuda", None) is not None and cv2.cuda.getCudaEnabledDeviceCount() > 0:
        return True, "OpenCV DNN CUDA backend"
    return False, "the opencv-python wheel is built without CUDA (OpenCV DNN runs on the CPU)"


def _litert() -> tuple[bool, str]:
    return False, ("LiteRT's GPU delegate is not in the Linux wheel for the Interpreter Kestrel uses "
                   "(its WebGPU accelerator serves only the CompiledModel API)")


_ASK = {"torch": _torch, "ctranslate2": _ctranslate2, "onnxruntime": _onnxruntime, "llama.cpp": _llama,
        "opencv-dnn": _opencv, "litert": _litert}


def capability(spec: Any) -> tuple[bool, str]:
    """``(can this model use CUDA here, why)``: its runtime's answer, or its catalogue pin."""
    can, why = runtime_capability(runtime_of(spec))
    if can and getattr(spec, "device", "auto") == "cpu":
        return False, "its catalogue entry pins it to the CPU"
    return can, why


def _gpu_name(runtime: str) -> str:
    if runtime == "torch" or (_installed("torch") and runtime != "server"):
        try:
            import torch

            if torch.cuda.is_available():
                return str(torch.cuda.get_device_name(0))
        except Exception:  # the name is a courtesy; the device works without it
            return ""
    return ""


def resolve(pref: str | None, runtime: str, *, spec: Any = None) -> Device:
    """The device a model of ``runtime`` runs on when ``pref`` (auto/cpu/cuda; None: the
    process's preference) is asked: cuda where the runtime can, else the CPU with a note when
    CUDA was asked for."""
    pref = pref or preference()
    if pref == "cuda:0":
        pref = "cuda"
    if pref not in PREFERENCES:
        raise ValueError(f"device must be one of {', '.join(PREFERENCES)}, not {pref!r}")
    if pref == "cpu":
        return Device("cpu", runtime, pref)
    can, why = capability(spec) if spec is not None else runtime_capability(runtime)
    if can:
        return Device("cuda:0", runtime, pref, gpu=_gpu_name(runtime))
    note = f"cuda asked, cpu used: {why}" if pref == "cuda" else ""
    if note:
        log.warning("%s", note)
    return Device("cpu", runtime, pref, note)


def for_spec(spec: Any, pref: str | None = None) -> Device:
    """:func:`resolve` for a catalogue entry."""
    return resolve(pref, runtime_of(spec), spec=spec)


def any_cuda() -> tuple[bool, str]:
    """Whether any installed runtime can use CUDA here, and the first one's reason."""
    reasons = []
    for rt in RUNTIMES:
        can, why = runtime_capability(rt)
        if can:
            return True, why
        reasons.append(f"{rt}: {why}")
    return False, "; ".join(reasons)


def summary(pref: str | None = None) -> str:
    """The status bar's line for a preference: "CPU", "CUDA: <card>", "CPU (CUDA asked: not available)"."""
    pref = pref or preference()
    if pref == "cpu":
        return "CPU"
    can, _why = any_cuda()
    if can:
        name = _gpu_name("torch")
        return f"CUDA: {name}" if name else "CUDA"
    return "CPU (CUDA asked: not available)" if pref == "cuda" else "CPU"


def recorded(spec: Any, used: str, pref: str | None = None) -> dict[str, str]:
    """A run's device provenance from the device its model reports (``used``): the name, and
    when CUDA was asked for (``pref``, else the process's preference) but the CPU used, why."""
    name = "cuda:0" if str(used).startswith("cuda") or str(used) == "0" else "cpu"  # "0": ultralytics
    asked = pref or preference()
    if name == "cpu" and asked == "cuda":
        return Device("cpu", runtime_of(spec), asked, f"cuda asked, cpu used: {capability(spec)[1]}").provenance()
    return {"device": name}
