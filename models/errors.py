"""The one root of Kestrel's own errors.

It lives at the bottom of the dependency chain (``gui → core → models``) so that model,
media, project and job errors can all derive from it. ``str()`` of a :class:`KestrelError`
is a sentence for the analyst: the window shows it in one line, the command line prints it
after ``kestrel:``, and no traceback is shown for it. Anything else that escapes a job is a
bug: its traceback goes to the log file. ``core.errors`` is the place the rest of Kestrel
imports this from.
"""
from __future__ import annotations


class KestrelError(Exception):
    """An expected failure (bad file, missing model, damaged project…); ``str()`` says what
    happened and what to do."""
