"""qmonitor's plain tables (what it prints without a terminal) read back cell for cell."""

from __future__ import annotations

import re

from django_q.management.commands.qmonitor import Sheet, plain


def parse(text: str) -> list[tuple[str, list[list[str]]]]:
    return [(lines[0], [re.split(r" {2,}", line.strip()) for line in lines[1:]])
            for lines in (block.splitlines() for block in text.strip("\n").split("\n\n"))]


def test_cells_come_back_whatever_spaces_or_blanks_they_hold():
    sheet = Sheet("Workers", ("Cluster", "Task", "Progress"),
                  [("abc", "idle", ""), ("abcdef", "a  long   name", "3/10 (30%) row  8")])
    text = plain([sheet, Sheet("queue q · 12:00:00")])
    assert parse(text) == [
        ("Workers", [["Cluster", "Task", "Progress"], ["abc", "idle", "-"], ["abcdef", "a long name",
                                                                           "3/10 (30%) row 8"]]),
        ("queue q · 12:00:00", []),
    ]
    header, first, _ = text.splitlines()[1:4]
    assert header.index("Task") == first.index("idle")  # columns aligned
