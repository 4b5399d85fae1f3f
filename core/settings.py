"""User settings: a small versioned JSON file with explicit migrations.

Values, never widget indices or pickled objects. ``KESTREL_CONFIG_DIR`` moves the file
(tests use a fresh folder each).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

VERSION = 1
MAX_RECENT = 12
DEVICES = ("auto", "cpu", "cuda")

DEFAULTS: dict[str, Any] = {
    "recent_media": [],
    "recent_projects": [],
    "waveform_per_channel": False,
    "last_project": None,
    "model_paths": {},  # catalogue name -> local file/folder of a bring-your-own model
    "analysis_models": [],  # last choice in the analysis dialog (empty: the defaults)
    "analysis_fps": 2.0,
    "analysis_device": "auto",  # "auto" | "cpu" | "cuda": every model's device (models.devices)
    "last_stream": "",
    "chat_url": "",  # an OpenAI-compatible server; its key lives in the keyring or the environment
    "chat_model": "",
}

# version N -> N+1; each gets and returns the plain dict
MIGRATIONS: dict[int, Callable[[dict], dict]] = {
    # 0 is "no version field" (never shipped); it only gains the field.
    0: lambda d: {**d, "version": 1},
}


def config_dir() -> Path:
    d = os.environ.get("KESTREL_CONFIG_DIR")
    return Path(d) if d else Path.home() / ".config" / "kestrel"


def data_dir() -> Path:
    d = os.environ.get("KESTREL_DATA_DIR")
    return Path(d) if d else Path.home() / ".local" / "share" / "kestrel"


class Settings:
    def __init__(self, path: Path | None = None):
        self.path = path or config_dir() / "settings.json"
        self.values: dict[str, Any] = dict(DEFAULTS)
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("settings file %s unreadable (%s); using defaults", self.path, e)
            return
        v = raw.get("version", 0)
        if not isinstance(v, int) or v > VERSION:
            log.warning("settings file %s is from a newer Kestrel; using defaults", self.path)
            return
        while v < VERSION:
            raw = MIGRATIONS[v](raw)
            v += 1
        for k, default in DEFAULTS.items():
            if k in raw and isinstance(raw[k], type(default)) or (default is None and k in raw):
                self.values[k] = raw[k]
        if self.values["analysis_device"] not in DEVICES:
            log.warning("settings: analysis_device %r is not one of %s; using auto",
                        self.values["analysis_device"], ", ".join(DEVICES))
            self.values["analysis_device"] = "auto"

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": VERSION, **self.values}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("could not save settings to %s: %s", self.path, e)

    def get(self, key: str) -> Any:
        return self.values.get(key, DEFAULTS.get(key))

    def set(self, key: str, value: Any) -> None:
        if self.values.get(key) != value:
            self.values[key] = value
            self.save()

    def add_recent(self, key: str, path: str) -> None:
        items = [p for p in self.get(key) if p != path]
        self.set(key, [path] + items[: MAX_RECENT - 1])


def apply_device(pref: str) -> None:
    """Make ``pref`` (the ``analysis_device`` setting) the device every model of this process
    loads with: the analysis, anomaly, FOCUS, chat and tagging jobs alike."""
    from models.devices import set_preference

    set_preference(pref if pref in DEVICES else "auto")


def device_status(pref: str) -> tuple[str, str]:
    """The status bar's text for ``pref`` ("CPU", "CUDA: <card>", "CPU (CUDA asked: not
    available)") and a tooltip with each runtime's answer. Imports the runtimes: call it off
    the UI thread."""
    from models.devices import RUNTIMES, runtime_capability, summary

    lines = []
    for rt in RUNTIMES:
        can, why = runtime_capability(rt)
        lines.append(f"{rt}: {'CUDA' if can else 'CPU'} — {why}")
    return summary(pref if pref in DEVICES else "auto"), "\n".join(lines)
