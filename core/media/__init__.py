"""Media: reading files and live sources, Qt-free.

:mod:`.decode` (probing, frame-accurate video decoding, thumbnails), :mod:`.audio` (audio
decoding), :mod:`.waveform` (peak pyramids and sample windows), :mod:`.spectrum` (the audio
features' shared basics: framing, mel bands, resampling), :mod:`.live` (cameras and streams,
the ring buffer and the live reader job), :mod:`.check` (sanity limits on what a file claims),
:mod:`.samples` (fetching sample media).
"""
