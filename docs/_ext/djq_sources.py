"""The rows of the reference's generated tables, read from django_q's code.

No Sphinx needed, so the tests use it too (tests/unit/test_docs_examples.py).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import djq_meanings


def settings_rows() -> list[list[str]]:
    """[key, default, accepts, meaning] for every key django_q.conf validates."""
    from django_q import conf  # after django.setup() in docs/conf.py: conf reads settings

    defaults = {f.name: f.default for f in fields(conf.Config) if f.default is not MISSING}
    keys = list(conf._RULES)
    missing = [k for k in keys if k not in djq_meanings.MEANINGS]
    stale = [k for k in djq_meanings.MEANINGS if k not in keys]
    if missing or stale:
        raise ValueError(f"docs/_ext/djq_meanings.py: keys without a meaning {missing}, meanings without a key {stale}")
    rows = []
    for key in keys:
        default = djq_meanings.DEFAULTS.get(key)
        if default is None:
            default = f"`{defaults[key]!r}`" if key in defaults else "—"
            if defaults.get(key, MISSING) is None:
                default = "—"
        rows.append([f"`{key}`", default, conf._RULES[key][1], djq_meanings.MEANINGS[key]])
    return rows


def metric_rows() -> list[list[str]]:
    """[name, type, help] of every metric family in django_q/metrics.py."""
    from django_q import metrics

    source = Path(metrics.__file__).read_text()
    rows = [[f"`django_q_tasks_{key}_total`", "counter", text] for key, text in metrics.COUNTERS]
    for match in re.finditer(r'(Counter|Gauge|Histogram)MetricFamily\(\s*"(django_q_[a-z_]+)",\s*"([^"]+)"', source):
        kind, name, text = match.groups()
        if name.startswith("django_q_tasks_"):
            continue
        suffix = "_total" if kind == "Counter" else ""
        rows.append([f"`{name}{suffix}`", kind.lower(), text])
    return rows
