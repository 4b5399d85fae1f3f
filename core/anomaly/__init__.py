"""Audio-visual anomaly detection for recorded files (and, window by window, for live sources).

The pass (:func:`core.anomaly.pipeline.detect_anomalies`) is:

1. **features** per time window (:mod:`.features`): detections per class, track entries and
   exits, box motion and frame-difference energy from the picture; log-mel spectrum,
   loudness, onsets, voice activity and speech from the sound. ``WindowFeaturizer.push`` is
   the one code path, fed by the file pass and by a live source alike.
2. **the fusion network** (:mod:`models.nn.fusion`, trained by :mod:`.train`) reconstructs a
   masked window from its recent context with bidirectional cross-modal attention; its
   error, as a robust z-score against the normal footage, says "this does not look or sound
   like the normal scene".
3. **interpretable detectors** (:mod:`.detectors`) say *why*: a new object class, a crowd
   jump, a sudden loud sound, speech where there is usually none, a frozen scene.
4. **score** (:mod:`.score`) combines them with documented weights that the analyst's
   confirm/dismiss feedback adjusts, and **events** (:mod:`.events`) are its thresholded,
   merged segments, each with the cue and modality that raised it.

Nothing here imports torch or Qt at import time: the network is loaded only when a model is
trained or scored, so the GUI can import this package freely.
"""
from __future__ import annotations

from core.errors import KestrelError

__all__ = ["AnomalyError", "NotEnoughNormalData"]


class AnomalyError(KestrelError):
    """The anomaly pass cannot go on; ``str()`` is a sentence for the analyst."""


class NotEnoughNormalData(AnomalyError):
    """Too little normal footage to train the network; the detectors still run."""
