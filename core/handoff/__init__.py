"""Hand-off: Kestrel's work in the formats analysts' other tools read, and back (Qt-free).

Detections and tracks (COCO, MOT Challenge, CVAT for video, Label Studio), transcripts (SRT,
WebVTT with speakers), chat conversations (Markdown), evidence packages and MP4 chapters.
:mod:`core.handoff.base` holds the contract every format module follows and the registry.
"""
