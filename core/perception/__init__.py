"""Perception: what was seen and heard in a file, computed and stored in one place.

- :mod:`.analysis`: the perception job (``analyze``): the chosen models over a file or a range,
  partial tracks as it goes, ``tracks_for`` to turn a model's output into timeline tracks;
- :mod:`.ops`: storing and reusing the results in a project (runs, tracks), and the other
  media operations the window and the commands share (probe, frame index, waveform);
- :mod:`.overlay`: the boxes the player draws at the playhead;
- :mod:`.cli`: the ``analyze`` command, the same job without a window.

In the window the same capability is the Detections panel and the Analyse dialog
(``gui/panels/detections.py``) run by ``gui/analysis_controller.py``.
"""
