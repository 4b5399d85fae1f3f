"""Archive tagging: shots, per-shot features, and (elsewhere) the MMAE latent and tags.

Shots (:mod:`core.tagging.shots`) are the unit of tagging; :mod:`core.tagging.features`
describes each shot per modality (visual, audio, text), any of which may be missing.
Importing this package is free: models and decoders load inside the functions that use them.
"""
from __future__ import annotations

from core.errors import KestrelError


class TaggingError(KestrelError):
    """A file cannot be tagged; str() is a clear sentence for the analyst."""
