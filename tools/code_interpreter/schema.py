from __future__ import annotations

from typing import Literal

from core.validation import Input


class CodeInterpreterTool(Input):
    type: Literal["code_interpreter"]
