"""scferry's own warning and error classes, and the one way a choice made for the user is
announced and recorded.

``ScferryWarning`` is what every announced choice and silent fallback raises, so users (and the R
bridge) can filter or catch them: ``warnings.simplefilter("ignore", scferry.ScferryWarning)``.
"""
from __future__ import annotations

import warnings
from typing import Any


class ScferryWarning(UserWarning):
    """A choice scferry made for the user, or a fallback it took; the message says how to
    make the choice explicit or avoid the fallback."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded: empty, not a scferry model, corrupted, incomplete,
    inconsistent with its method, or written by a newer scferry."""


def announce(message: str, stacklevel: int = 2) -> None:
    """Warn with :class:`ScferryWarning` (the caller's caller is blamed by default)."""
    warnings.warn(message, ScferryWarning, stacklevel=stacklevel + 1)


def record_choice(choices: dict, key: str, value: Any, reason: str, message: str | None = None,
                  stacklevel: int = 2) -> None:
    """Record a choice made for the user in ``choices`` (JSON-friendly: value and reason) and,
    when ``message`` is given, announce it."""
    choices[key] = {"value": value, "reason": reason}
    if message is not None:
        announce(message, stacklevel=stacklevel + 1)
