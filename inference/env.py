"""Settings read from ``TERRALENS_*`` environment variables by the inference core, validated
once where they are read (the app's own settings are in :mod:`app.settings`)."""

from __future__ import annotations

import math
import os

from inference.errors import InvalidRequestError


def seconds_env(name: str, default: float) -> float:
    """The finite positive number of seconds in environment variable ``name``, else ``default``.

    Raises:
        InvalidRequestError: the variable is set to anything but a finite number above 0.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(
            f"{name} must be a finite number of seconds above 0, got {text!r}"
        )
    return value
