from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from core.validation import Input


class RankingOptions(Input):
    ranker: Literal["auto", "default_2024_08_21"] | None = None
    score_threshold: Annotated[float, Field(ge=0, le=1)]


class FileSearchOptions(Input):
    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptions | None = None


class FileSearchTool(Input):
    type: Literal["file_search"]
    file_search: FileSearchOptions | None = None
