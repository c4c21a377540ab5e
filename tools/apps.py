from __future__ import annotations

import importlib.util
from importlib import import_module

from django.apps import AppConfig

# Plugin folders whose ``runtime`` module registers a server-side tool
# (tools/runtime.py). A folder without one has nothing to run on our side.
SERVER_TOOL_FOLDERS = ("file_search", "code_interpreter")


class ToolsConfig(AppConfig):
    name = "tools"
    verbose_name = "Tools, files and vector stores"

    def ready(self) -> None:
        for folder in SERVER_TOOL_FOLDERS:
            module = f"tools.{folder}.runtime"
            if importlib.util.find_spec(module) is not None:
                import_module(module)
