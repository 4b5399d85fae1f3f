"""Frames per model call in the analysis job: how many each model takes, and the slices.

The job reads frames in file order and hands each visual model its own slices of them. On the
CPU every model takes the request's ``batch`` (4 frames a call, what the job has always used),
so CPU results do not change; SSD-MobileNet (OpenCV DNN) and MTCNN (torch) give the same boxes
and scores at 1 and at N frames a call (tests/perception/test_batching.py). A model loaded on a
CUDA device takes ``gpu_batch`` frames a call (16 by default): a GPU is only busy with many
frames at once, and the job reads as many frames as its largest batch. Which device a model is
on is what the loaded backend says (its ``device``); models/ decides it.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

GPU_BATCH = 16  # frames per call for a model on a CUDA device


def on_cuda(model: Any) -> bool:
    """Whether a loaded backend runs on a CUDA device ("cuda", "cuda:0", a torch.device)."""
    return str(getattr(model, "device", "cpu") or "cpu").startswith("cuda")


def batch_size(model: Any, cpu_batch: int, gpu_batch: int = GPU_BATCH) -> int:
    """Frames per call for ``model``: ``gpu_batch`` on a CUDA device, else ``cpu_batch``."""
    return max(1, int(gpu_batch if on_cuda(model) else cpu_batch))


def batch_sizes(models: dict[str, Any], cpu_batch: int, gpu_batch: int = GPU_BATCH) -> dict[str, int]:
    """Each loaded model's frames per call. A backend on CUDA that splits its calls into chunks
    of its own ``batch_size`` (MTCNN, YOLO, DETR: 4–8, sized for the CPU) is widened to take the
    whole batch in one pass; on the CPU nothing about a backend changes."""
    sizes = {}
    for name, model in models.items():
        n = batch_size(model, cpu_batch, gpu_batch)
        own = getattr(model, "batch_size", None)
        if on_cuda(model) and isinstance(own, int) and own < n:
            model.batch_size = n
        sizes[name] = n
    if any(on_cuda(m) for m in models.values()):
        log.info("frames per call: %s", ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return sizes


def slices(n: int, size: int) -> list[slice]:
    """``range(n)`` in consecutive slices of at most ``size``, in order."""
    size = max(1, int(size))
    return [slice(a, min(n, a + size)) for a in range(0, n, size)]
