"""Figures: collect the runs, summarize (median, min-max, ratio to ours), print one table, write JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import targets
from systems import OURS, is_baseline


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    higher_is_better: bool


FIGURES = [
    Figure("W1", "W1 enqueue, single calls", "tasks/s", True),
    Figure("W1-bulk", "W1 enqueue, bulk path", "tasks/s", True),
    Figure("W2", "W2 drain, Redis broker", "tasks/s", True),  # W2@<N>: one figure per N
    Figure("W2-orm", "W2 drain, database broker", "tasks/s", True),
    Figure("W1-orm", "W1 enqueue, database broker", "tasks/s", True),
    Figure("W2b", "W2b drain, every result stored", "tasks/s", True),
    Figure("W4s-start", "W4s start-up, first task, Redis", "s", False),
    Figure("W4s-start-orm", "W4s start-up, first task, database", "s", False),
    Figure("W3-p50", "W3 latency p50", "ms", False),
    Figure("W3-p90", "W3 latency p90", "ms", False),
    Figure("W3-p99", "W3 latency p99", "ms", False),
    Figure("W4-idle", "W4 RSS, idle 3 s after start", "MiB", False),
    Figure("W4-idle-pss", "W4 PSS, idle (shared pages split)", "MiB", False),
    Figure("W4-after", "W4 RSS, after W2", "MiB", False),
    Figure("W5-lost", "W5 tasks lost", "tasks", False),
    Figure("W5-twice", "W5 tasks run twice", "tasks", False),
    Figure("W5-killed-at", "W5 ran before the SIGKILL", "tasks", True),
    Figure("W5-recovery", "W5 recovery, kill to all run", "s", False),  # nan: a task never ran
    Figure("W6", "W6 drain, 100,000 tasks", "tasks/s", True),
    Figure("W6-rss", "W6 peak RSS", "MiB", False),
    Figure("W6-rss-end", "W6 RSS at the end", "MiB", False),
]
BY_KEY = {f.key: f for f in FIGURES}


def figure(key: str) -> Figure:
    """The figure of a key; W2@5000 is W2's at N = 5,000."""
    base, _, n = key.partition("@")
    fig = BY_KEY[base]
    return Figure(key, f"{fig.title}, N={int(n):,}", fig.unit, fig.higher_is_better) if n else fig


def keys_in_order(keys) -> list[str]:
    """FIGURES order, each N of a figure in ascending order."""
    rank = {f.key: i for i, f in enumerate(FIGURES)}
    return sorted(keys, key=lambda k: (rank[k.partition("@")[0]], int(k.partition("@")[2] or 0)))


class Results:
    """figure key -> target label -> list of values, plus a note per run that did not complete."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}
        self.partial: dict[str, dict[str, list[str]]] = {}
        self.ours_of: dict[str, str] = {}
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.settings: dict[str, dict[str, str]] = {}  # what -> target label -> setting, printed under the table

    def add(self, key: str, label: str, ours_label: str, value: float, partial: str | None = None) -> None:
        self.values.setdefault(key, {}).setdefault(label, []).append(value)
        self.ours_of[label] = ours_label
        if partial:
            self.partial.setdefault(key, {}).setdefault(label, []).append(partial)

    def summary(self) -> dict:
        out: dict = {}
        for key in keys_in_order(self.values):
            fig, rows = figure(key), self.values[key]
            entry: dict = {"title": fig.title, "unit": fig.unit, "higher_is_better": fig.higher_is_better, "targets": {}}
            for label, runs in rows.items():
                row = {"runs": runs, "median": statistics.median(runs), "min": min(runs), "max": max(runs)}
                ours = rows.get(self.ours_of.get(label, ""))
                if ours and not label.startswith(OURS + " "):
                    ours_median = statistics.median(ours)
                    same = ours_median and ours_median == ours_median and row["median"] == row["median"]  # nan: never
                    row["ratio_to_ours"] = row["median"] / ours_median if same else None
                partial = self.partial.get(fig.key, {}).get(label)
                if partial:
                    row["partial_runs"] = partial
                entry["targets"][label] = row
            out[fig.key] = entry
        return out

    def table(self) -> str:
        lines = [
            f"{'figure':<34} {'target':<30} {'median':>10} {'min-max':>21}  {'peer/ours':>9}",
            "-" * 110,
        ]
        for key, entry in self.summary().items():
            first = True
            for label, row in sorted(entry["targets"].items(), key=lambda kv: order(kv[0])):
                ratio = row.get("ratio_to_ours")
                mark = "*" if row.get("partial_runs") else ""
                title = f"{entry['title']} ({entry['unit']})" if first else ""
                lines.append(
                    f"{title:<34.34} {label:<30} {fmt(row['median']) + mark:>10} "
                    f"{fmt(row['min']) + ' - ' + fmt(row['max']):>21}  {'' if ratio is None else f'{ratio:.2f}x':>9}"
                )
                first = False
        for what, rows in self.settings.items():
            lines.append("")
            lines.append(f"{what}:")
            lines += [f"  {label:<30} {setting}" for label, setting in sorted(rows.items(), key=lambda kv: order(kv[0]))]
        lines.append("")
        lines.append("* a run was cut short (enqueue cap or drain deadline): its rate is over the tasks it did")
        lines.append("peer/ours: the peer's median divided by ours (same broker and database)")
        if any(is_baseline(label.split()[0]) for rows in self.values.values() for label in rows):
            lines.append(f"{OURS}@<commit>: this package as it was at that commit (--baseline), run exactly as ours")
        return "\n".join(lines)

    def overview(self) -> str:
        """One row per target, one column per headline figure (medians): W1, W2 at each N, start-up, idle PSS, W3, W5."""
        summary = self.summary()
        lines = []
        for kind, w1, w2, start in (("Redis", "W1", "W2", "W4s-start"), ("database", "W1-orm", "W2-orm", "W4s-start-orm")):
            columns = [(w1, "W1 /s")]
            columns += [(k, f"W2 {int(k.partition('@')[2]):,} /s") for k in keys_in_order(summary)
                        if k.partition("@")[0] == w2 and "@" in k]
            columns += [(start, "first task s"), ("W4-idle-pss", "idle PSS MiB"), ("W3-p50", "W3 p50 ms"),
                        ("W3-p99", "W3 p99 ms"), ("W5-lost", "W5 lost"), ("W5-twice", "W5 twice"),
                        ("W5-recovery", "W5 recovery s")]
            labels = sorted({label for key, _ in columns[:-6] for label in summary.get(key, {}).get("targets", {})},
                            key=order)
            if not labels:
                continue
            lines.append(f"{kind + ' (medians)':<30}" + "".join(f"{title:>14}" for _, title in columns))
            for label in labels:
                cells = [summary.get(key, {}).get("targets", {}).get(label, {}).get("median") for key, _ in columns]
                lines.append(f"{label:<30}" + "".join(f"{cell(key, c):>14}" for (key, _), c in zip(columns, cells)))
            lines.append("")
        if lines:
            lines.append("W5 recovery: from the SIGKILL (the restart follows at once) to every task run at least once")
        return "\n".join(lines)

    def targets(self) -> list[dict]:
        """Issue #21 item 2: each target met or not, from this run's medians."""
        return targets.evaluate(self.summary())

    def targets_table(self) -> str:
        return targets.table(self.targets())

    def write(self, path: Path, meta: dict) -> None:
        doc = {"meta": meta, "figures": self.summary(), "targets": self.targets(), "settings": self.settings,
               "notes": self.notes, "errors": self.errors}
        path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def order(label: str) -> tuple:
    """Table order: ours, each row followed by the --baseline commit's on the same broker and database; then the peers."""
    system, _, where = label.partition(" ")
    if system == OURS or is_baseline(system):
        return (0, where, system != OURS)
    return (1, label, False)


def cell(key: str, value: float | None) -> str:
    """An overview cell: '-' not measured; a W5 recovery that never came (a task was lost) is 'never'."""
    if value is None:
        return "-"
    if key == "W5-recovery" and value != value:
        return "never"
    return fmt(value)


def fmt(value: float) -> str:
    if value != value:
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
