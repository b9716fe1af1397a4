"""The targets of issue #21 item 2, each a row marked met / not met from this run's medians.

Every comparison uses figures of the same run (peers interleaved with ours),
so a busy machine moves both sides; the absolute targets (p99 <= 5 ms, first
task <= 0.25 s, PSS <= 60 MiB) do not have that protection.
"""

from __future__ import annotations

from systems import DB_PEERS, OURS, Target, is_baseline

OURS_REDIS = Target(OURS).label
OURS_PG = Target(OURS, "orm", "postgres").label
HUEY = Target("huey").label
DB_PEERS_PG = [Target(p, "db", "postgres").label for p, dbs in DB_PEERS.items() if "postgres" in dbs]


def _median(summary: dict, key: str, label: str) -> float | None:
    return summary.get(key, {}).get("targets", {}).get(label, {}).get("median")


def _cut(summary: dict, key: str, label: str) -> str:
    """A mark for a median over a run cut short (enqueue cap or drain deadline): its rate covers what it did."""
    return "*" if summary.get(key, {}).get("targets", {}).get(label, {}).get("partial_runs") else ""


def _sizes(summary: dict, base: str) -> list[int]:
    return sorted(int(k.partition("@")[2]) for k in summary if k.partition("@")[0] == base and "@" in k)


def _row(target: str, ours: float | None, against: str, bound: float | None, higher: bool) -> dict:
    """`ours` must be >= bound (higher) or <= bound; met is None when a figure is missing."""
    met = None if ours is None or bound is None else (ours >= bound if higher else ours <= bound)
    return {"target": target, "ours": ours, "against": against, "bound": bound, "met": met}


def evaluate(summary: dict) -> list[dict]:
    rows = []
    for n in _sizes(summary, "W2"):
        key = f"W2@{n}"
        peers = {label: row["median"] for label, row in summary[key]["targets"].items()
                 if label.endswith(" redis") and not is_baseline(label.split()[0])}
        best = max(peers, key=peers.get) if peers else None
        rows.append(_row(f"W2 Redis, N={n:,}: >= 1.5x the best peer", _median(summary, key, OURS_REDIS),
                         f"1.5 x {best} {peers[best]:,.0f}{_cut(summary, key, best)}" if best else "no peer measured",
                         1.5 * peers[best] if best else None, True))
    huey_w1 = _median(summary, "W1", HUEY)
    rows.append(_row("W1 single calls >= Huey", _median(summary, "W1", OURS_REDIS),
                     f"{HUEY} {huey_w1:,.0f}" if huey_w1 else "Huey not measured", huey_w1, True))
    huey_p50 = _median(summary, "W3-p50", HUEY)
    rows.append(_row("W3 p50 <= Huey's (ms)", _median(summary, "W3-p50", OURS_REDIS),
                     f"{HUEY} {huey_p50:.2f}" if huey_p50 else "Huey not measured", huey_p50, False))
    rows.append(_row("W3 p99 <= 5 ms", _median(summary, "W3-p99", OURS_REDIS), "5 ms", 5.0, False))
    rows.append(_row("first task <= 0.25 s after start (W2, Redis)", _median(summary, "W4s-start", OURS_REDIS),
                     "0.25 s", 0.25, False))
    rows.append(_row("idle PSS <= 60 MiB, 2 workers", _median(summary, "W4-idle-pss", OURS_REDIS), "60 MiB",
                     60.0, False))
    for peer in DB_PEERS_PG:
        for n in _sizes(summary, "W2-orm"):
            theirs = _median(summary, f"W2-orm@{n}", peer)
            rows.append(_row(f"database broker W2 on PostgreSQL, N={n:,}: >= 5x {peer.split()[0]}",
                             _median(summary, f"W2-orm@{n}", OURS_PG),
                             f"5 x {theirs:,.0f}{_cut(summary, f'W2-orm@{n}', peer)}" if theirs
                             else f"{peer} not measured",
                             5 * theirs if theirs else None, True))
        theirs = _median(summary, "W3-p50", peer)
        rows.append(_row(f"database broker W3 p50 on PostgreSQL: <= 1/5 of {peer.split()[0]}'s (ms)",
                         _median(summary, "W3-p50", OURS_PG),
                         f"{theirs:.1f} / 5" if theirs else f"{peer} not measured",
                         theirs / 5 if theirs else None, False))
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'target (issue #21, item 2)':<72} {'ours':>10}  {'against':<34} result", "-" * 128]
    for r in rows:
        ours = "-" if r["ours"] is None else (f"{r['ours']:,.0f}" if abs(r["ours"]) >= 100 else f"{r['ours']:.2f}")
        result = {True: "met", False: "NOT MET", None: "not measured"}[r["met"]]
        lines.append(f"{r['target']:<72} {ours:>10}  {r['against']:<34} {result}")
    lines.append("* the peer's median comes from a run cut short: its rate is over the tasks it did in the time allowed")
    return "\n".join(lines)
