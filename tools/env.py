"""Switches read from the environment of the process that runs tooliqa."""

from __future__ import annotations

import os

__all__ = ["env_flag"]


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to ``1``, ``true`` or ``yes``
    (any case, surrounding white space ignored)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
