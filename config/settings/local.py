"""`make run` on a laptop: the base settings with debug tools allowed."""

from __future__ import annotations

from config.settings.base import *  # noqa: F403
