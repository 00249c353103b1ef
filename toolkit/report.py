"""Figures the reliability tests measure, shown as a Markdown table at the end of the run.

Tests add rows to the session's `Figures` (the `figures` fixture in conftest.py);
at the end of the session the table is written to `reliability-report.md` under
the pytest basetemp and printed in the terminal summary (from every xdist worker).
"""

from __future__ import annotations

from typing import Any

REPORT_FILE = "reliability-report.md"


class Figures:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.notes: list[str] = []

    def add(self, scenario: str, figure: str, value: Any) -> None:
        self.rows.append((scenario, figure, format_value(value)))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def markdown(self) -> str:
        lines = [
            "## Reliability of the generated service",
            "",
            "| Scenario | Figure | Value |",
            "| --- | --- | --- |",
            *(f"| {scenario} | {figure} | {value} |" for scenario, figure, value in self.rows),
        ]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {format_value(item)}" for key, item in value.items())
    if value is None:
        return "-"
    return str(value).replace("|", "\\|")
