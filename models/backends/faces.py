"""Face detection with MTCNN (facenet-pytorch), whose weights ship inside its wheel.

Why MTCNN: it is the face detector that arrives with a pip install (three tiny nets, ~2 MB),
runs in ~0.1–0.2 s a frame on two CPU cores, and gives five landmarks per face (eyes, nose,
mouth corners), which later steps use to align faces. facenet-pytorch is installed with
``--no-deps`` because its pins (torch<2.3, numpy<2) are stale; it works with current ones.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.backends.ssd import clip_box, fit_within, image_batch
from models.catalogue import ModelError, ModelSpec
from models.types import Face

log = logging.getLogger(__name__)


class MTCNNFaces:
    """``FaceDetector``: boxes, scores and five landmarks per face, in the input image's pixels.

    Options: ``score`` (final-stage minimum, default ``spec.thresholds["score"]``, else 0.9:
    MTCNN's own 0.7 lets shirt folds and lamps through), ``min_face_size`` (pixels, 20),
    ``max_side`` (larger frames are shrunk to this before detection: the image pyramid of an
    8000-pixel frame needs gigabytes, and faces that small to find are rare), ``batch_size``
    (same-sized images per pass).
    """

    def __init__(self, spec: ModelSpec, where: str, device: str = "cpu", *, score: float | None = None,
                 min_face_size: int = 20, max_side: int = 2048, batch_size: int = 8) -> None:
        import torch
        from facenet_pytorch.models.mtcnn import MTCNN

        folder = Path(where)
        self.spec = spec
        self.device = device
        self.score = float(score if score is not None else spec.thresholds.get("score", 0.9))
        self.max_side = int(max_side)
        self.batch_size = max(1, int(batch_size))
        try:
            # MTCNN reads pnet/rnet/onet.pt from its own package folder, which is `where`.
            self._mtcnn = MTCNN(keep_all=True, select_largest=False, min_face_size=int(min_face_size),
                                device=torch.device(device))
        except (OSError, RuntimeError) as e:
            raise ModelError(f"{spec.title}: the MTCNN weights in {folder} cannot be read ({e}); reinstall: "
                             f"pip install --no-deps --force-reinstall {spec.weights.get('package', '')}") from e
        self._mtcnn.eval()

    def faces(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per image, best first."""
        imgs = image_batch(images)
        # MTCNN batches only same-sized images; frames of one video are, so group them.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(imgs):
            groups.setdefault(img.shape, []).append(i)
        results: dict[int, list[Face]] = {}
        for shape, members in groups.items():
            h, w = shape[:2]
            for k in range(0, len(members), self.batch_size):
                idx = members[k:k + self.batch_size]
                fitted = [fit_within(imgs[i], self.max_side) for i in idx]
                scale = fitted[0][1]
                boxes, probs, points = self._mtcnn.detect(np.stack([f[0] for f in fitted]), landmarks=True)
                for i, b, p, pt in zip(idx, boxes, probs, points):
                    results[i] = self._parse(b, p, pt, w, h, scale)
        return [results[i] for i in range(len(imgs))]

    def _parse(self, boxes, probs, points, w: int, h: int, scale: float) -> list[Face]:
        if boxes is None:
            return []
        faces = []
        for box, p, pts in zip(boxes, probs, points):
            if p is None or float(p) < self.score:
                continue
            b = clip_box(np.asarray(box, dtype=float) / scale, w, h)
            if b[2] > b[0] and b[3] > b[1]:
                lm = tuple((float(x) / scale, float(y) / scale) for x, y in np.asarray(pts, dtype=float))
                faces.append(Face(box=b, score=float(p), landmarks=lm))
        return sorted(faces, key=lambda f: -f.score)

