"""The embedded PostgreSQL's start-up advice: the launcher says when large
shared buffers are not in huge pages (README, Tuning), and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.stack.postgres import EmbeddedPostgres


@pytest.mark.parametrize(
    ("reply", "hinted"),
    [
        # 6 GB of buffers in ordinary pages: say how many to reserve.
        ("off|3176|6442450944", True),
        # The kernel had them: PostgreSQL's huge_pages=try took them.
        ("on|3176|6442450944", False),
        # A laptop's 256 MB: the TLB covers it, nothing to say.
        ("off|138|268435456", False),
        # A platform without huge pages (PostgreSQL says -1): nothing to do.
        ("off|-1|6442450944", False),
    ],
)
def test_huge_pages_are_advised_for_large_buffers_only(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reply: str,
    hinted: bool,
) -> None:
    server = EmbeddedPostgres(tmp_path)
    asked: list[str] = []

    def psql(sql: str, database: str = "postgres") -> str:
        asked.append(sql)
        return reply

    monkeypatch.setattr(server, "psql", psql)
    server._hint_huge_pages()
    err = capsys.readouterr().err
    assert "huge_pages_status" in asked[0]
    if hinted:
        assert "vm.nr_hugepages=3176" in err
    else:
        assert err == ""
