"""The command line's shared output helpers."""

from __future__ import annotations

import pytest

from server.cli_common import table


def test_a_table_cell_an_agent_wrote_is_neither_markup_nor_escape_sequences(capsys: pytest.CaptureFixture[str],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # as on a terminal: colour on, so markup would be rendered
    hostile = "\x1b[1A\x1b[2K[bold red]HALTED[/bold red]\u202e"  # a strategy name an agent chose
    table(["AGENT", "STRATEGY"], [("agent-1", hostile)])
    out = capsys.readouterr().out
    assert "[bold red]HALTED[/bold red]" in out  # shown as the text it is
    assert "\x1b[1A" not in out and "\x1b[2K" not in out and "\u202e" not in out
    assert "\x1b[1;31m" not in out  # rich did not style the agent's words
