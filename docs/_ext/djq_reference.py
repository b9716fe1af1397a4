"""Reference tables drawn from django_q's own code, so that the docs cannot drift from it.

Directives (used from the Markdown pages as ```{djq-settings}``` and so on):

- `djq-settings`: every Q_CLUSTER key `django_q.conf` accepts, with its default
  (the `Config` dataclass), the values it takes (conf's validation rules) and
  its meaning (`djq_meanings.MEANINGS`). A key without a meaning, or a
  meaning without a key, fails the build.
- `djq-unneeded-settings`: the django-q / django-q2 keys accepted and ignored
  (`django_q.oldsettings.UNNEEDED`), and the brokers refused (`DROPPED_BROKERS`).
- `djq-command NAME`: a management command's `--help`, from its own parser.
- `djq-metrics`: every metric family the metrics view can yield, read from
  `django_q/metrics.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from djq_sources import metric_rows, settings_rows

_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> list[nodes.Node]:
    """Text with `code` spans as literal nodes."""
    out: list[nodes.Node] = []
    for i, part in enumerate(_CODE.split(text)):
        if part:
            out.append(nodes.literal(part, part) if i % 2 else nodes.Text(part))
    return out


def table(header: list[str], rows: list[list[str]], widths: list[int]) -> nodes.table:
    """A docutils table of text cells (`code` spans kept)."""
    group = nodes.tgroup(cols=len(header))
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head, body = nodes.thead(), nodes.tbody()
    for target, cells in ((head, [header]), (body, rows)):
        for cells_row in cells:
            row = nodes.row()
            for cell in cells_row:
                entry = nodes.entry()
                entry += nodes.paragraph("", "", *_inline(cell))
                row += entry
            target += row
    group += head
    group += body
    return nodes.table("", group)


class SettingsTable(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        try:
            rows = settings_rows()
        except ValueError as exc:
            raise self.error(str(exc)) from None
        return [table(["key", "default", "takes", "meaning"], rows, [12, 12, 24, 52])]


class UnneededTable(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        from django_q import oldsettings

        ignored = [[f"`{k}`", "ignored, warning `django_q.W001`", why] for k, why in oldsettings.UNNEEDED.items()]
        refused = [[f"`{k}`", "refused, error `django_q.E002`", why] for k, why in oldsettings.DROPPED_BROKERS.items()]
        return [table(["key", "here", "why"], ignored + refused, [16, 22, 62])]


class CommandHelp(SphinxDirective):
    """The `--help` of the management command named as the directive's argument."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from django.core.management import load_command_class  # after django.setup() in docs/conf.py

        name = self.arguments[0]
        command = load_command_class("django_q", name)
        text = command.create_parser("manage.py", name).format_help()
        return [nodes.literal_block(text, text, language="text")]


class MetricsTable(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        return [table(["metric", "type", "what"], metric_rows(), [34, 10, 56])]


def setup(app):
    app.add_directive("djq-settings", SettingsTable)
    app.add_directive("djq-unneeded-settings", UnneededTable)
    app.add_directive("djq-command", CommandHelp)
    app.add_directive("djq-metrics", MetricsTable)
    return {"parallel_read_safe": True, "version": "1"}
