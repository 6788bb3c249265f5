"""A static HTML report of the reporting tables: per source and tenant, the KPIs over the period, their
daily trend, outcome mix, top intents, agent KPIs (first response, CSAT), status time and freshness.

Charts are inline SVG drawn here, so the file opens anywhere, offline, with no
JavaScript.  Reads only the ``reporting`` schema (what a reader role may see).

Usage: ``python -m sandbox.report --dsn postgresql://… --out report.html``
"""

from __future__ import annotations

import argparse
import html
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg

COLOURS = {"botslovers": "#1f77b4", "a8": "#ff7f0e", "ultimate": "#2ca02c", "unless": "#9467bd",
           "bot_handled": "#2ca02c", "escalated": "#d62728", "failed_escalation": "#ff7f0e", "unknown": "#7f7f7f",
           "online": "#2ca02c", "break": "#ff7f0e", "training": "#1f77b4", "inactive": "#7f7f7f",
           "ending_shift": "#9467bd", "offline": "#c7c7c7"}


def line_chart(title: str, series: dict[str, list[tuple[str, float]]], width: int = 640, height: int = 240) -> str:
    """One line per series over shared x labels; y is a rate in [0, 1]."""
    labels = sorted({x for points in series.values() for x, _ in points})
    if not labels:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    left, bottom, top, right = 40, 30, 10, 110
    plot_w, plot_h = width - left - right, height - top - bottom
    x_of = {x: left + (plot_w * i / max(len(labels) - 1, 1)) for i, x in enumerate(labels)}
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>']
    for tick in (0, 0.5, 1):
        y = top + plot_h * (1 - tick)
        parts.append(f'<text x="{left - 5}" y="{y + 4}" font-size="10" text-anchor="end">{tick:.0%}</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#eee"/>')
    for x in labels:
        parts.append(f'<text x="{x_of[x]}" y="{height - 10}" font-size="10" text-anchor="middle">{x[5:]}</text>')
    for n, (name, points) in enumerate(sorted(series.items())):
        colour = COLOURS.get(name, "#333")
        coords = " ".join(f"{x_of[x]:.1f},{top + plot_h * (1 - v):.1f}" for x, v in sorted(points))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts.append(f'<text x="{left + plot_w + 10}" y="{top + 14 * (n + 1)}" font-size="11" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    return (f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' role='img' "
            f"aria-label='{html.escape(title)}'>{''.join(parts)}</svg>")


def stacked_bars(title: str, bars: dict[str, dict[str, float]], unit: str, width: int = 640) -> str:
    """One horizontal bar per key, split by category."""
    if not bars:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    row_h, left, legend_w = 22, 150, 120
    plot_w = width - left - legend_w
    height = row_h * len(bars) + 10
    parts, categories = [], sorted({c for parts_ in bars.values() for c in parts_})
    for i, (label, values) in enumerate(sorted(bars.items())):
        total = sum(values.values()) or 1
        x, y = left, 5 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">{html.escape(label)}</text>')
        for category in categories:
            w = plot_w * values.get(category, 0) / total
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
                             f'fill="{COLOURS.get(category, "#333")}"><title>{html.escape(category)}: '
                             f'{values[category]:.1f} {unit}</title></rect>')
                x += w
    for n, category in enumerate(categories):
        parts.append(f'<text x="{width - legend_w + 10}" y="{14 * (n + 1)}" font-size="11" '
                     f'fill="{COLOURS.get(category, "#333")}">{html.escape(category)}</text>')
    height = max(height, 14 * len(categories) + 10)
    return (f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' role='img' "
            f"aria-label='{html.escape(title)}'>{''.join(parts)}</svg>")


#: Period totals per source and tenant, every rate from the summed counts (as reporting.bot_kpis_by_period).
TENANT_TOTALS = """
SELECT source, tenant, min(conversation_date), max(conversation_date), sum(total_conversations),
       100.0 * sum(bot_handled_conversations) / nullif(sum(total_conversations), 0),
       100.0 * sum(escalated_conversations) / nullif(sum(total_conversations), 0),
       100.0 * sum(deflected_conversations) / nullif(sum(total_conversations), 0),
       100.0 * (sum(visitor_messages) - sum(not_understood_messages)) / nullif(sum(visitor_messages), 0),
       sum(unknown_outcome_conversations)
FROM reporting.daily_bot_kpis GROUP BY 1, 2 ORDER BY 1, 2"""
#: The five most frequent first meaningful intents of each source and tenant over the period.
TOP_INTENTS = """
SELECT source, tenant, first_meaningful_intent, conversations, bot_handled_pct FROM (
    SELECT source, tenant, first_meaningful_intent, sum(total_conversations) AS conversations,
           100.0 * sum(bot_handled_conversations) / sum(total_conversations) AS bot_handled_pct,
           row_number() OVER (PARTITION BY source, tenant
                              ORDER BY sum(total_conversations) DESC, first_meaningful_intent) AS rank
    FROM reporting.intent_metrics GROUP BY 1, 2, 3) ranked
WHERE rank <= 5 ORDER BY 1, 2, 4 DESC, 3"""
#: Per agent over the period: means from the summed counts (medians do not re-aggregate).
AGENT_TOTALS = """
SELECT source, tenant, agent_id, sum(chats_joined), sum(handle_seconds) / 3600.0,
       sum(first_response_seconds) / nullif(sum(first_responses), 0), sum(resolved), sum(timeouts),
       sum(csat_rating_sum)::numeric / nullif(sum(csat_ratings), 0),
       100.0 * sum(csat_ratings_4_plus) / nullif(sum(csat_ratings), 0), sum(csat_ratings)
FROM reporting.agent_daily_kpis GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
FRESHNESS = """
SELECT source, tenant, latest_landed_day, current_date - latest_landed_day, last_successful_load
FROM reporting.source_freshness ORDER BY 1, 2"""


def table(title: str, head: list[str], rows: list[tuple], digits: int = 1) -> str:
    """An HTML table; numbers rounded to ``digits``, NULL shown as an empty cell."""
    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, (float, Decimal)):
            return f"{float(value):,.{digits}f}"
        return html.escape(str(value))

    if not rows:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (f"<h3>{html.escape(title)}</h3><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"
            f"{body}</table>")


def build_report(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        kpis = conn.execute(
            "SELECT source, conversation_date::text, sum(bot_handled_conversations)::numeric / "
            "nullif(sum(total_conversations), 0), sum(escalated_conversations)::numeric / "
            "nullif(sum(total_conversations), 0) FROM reporting.daily_bot_kpis GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        outcomes = conn.execute("SELECT source, outcome, count(*) FROM reporting.conversations GROUP BY 1, 2"
                                ).fetchall()
        status = conn.execute("SELECT source || ' ' || tenant || ' ' || agent_id, status, sum(seconds) / 3600.0 "
                              "FROM reporting.agent_status_daily GROUP BY 1, 2").fetchall()
        tenants, intents = conn.execute(TENANT_TOTALS).fetchall(), conn.execute(TOP_INTENTS).fetchall()
        agents, freshness = conn.execute(AGENT_TOTALS).fetchall(), conn.execute(FRESHNESS).fetchall()
        daily = conn.execute(
            "SELECT conversation_date, source, tenant, total_conversations, 100 * bot_handled_rate, "
            "100 * escalation_rate, 100 * failed_escalation_rate, 100 * deflection_rate, 100 * automation_rate, "
            "100 * messages_understood_rate FROM reporting.daily_bot_kpis ORDER BY 2, 3, 1").fetchall()
    bot_handled, escalation = defaultdict(list), defaultdict(list)
    for source, day, handled, escalated in kpis:
        bot_handled[source].append((day, float(handled or 0)))
        escalation[source].append((day, float(escalated or 0)))
    mix: dict[str, dict[str, float]] = defaultdict(dict)
    for source, outcome, n in outcomes:
        mix[source][outcome] = n
    hours: dict[str, dict[str, float]] = defaultdict(dict)
    for agent, state, h in status:
        hours[agent][state] = float(h)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>chat-ingest report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>chat-ingest: chatbot and live-chat KPIs</h1>
<p>From the <code>reporting</code> schema. Rates over several days or tenants are computed from the
summed counts, never by averaging rates. Definitions: the <code>COMMENT ON</code> of each column, and the
README's KPI table.</p>
{table("Freshness per source and tenant", ["source", "tenant", "latest day with rows", "days behind today",
                                           "last successful load"], freshness)}
{table("Per source and tenant, whole period", ["source", "tenant", "first day", "last day", "conversations",
       "bot handled %", "escalation %", "deflection %", "messages understood %", "unknown outcome"], tenants)}
{line_chart("Bot-handled rate per day and source", bot_handled)}
{line_chart("Escalation rate per day and source", escalation)}
{stacked_bars("Outcome mix per source (conversations)", mix, "conversations")}
{table("Top first meaningful intents per source and tenant", ["source", "tenant", "intent", "conversations",
                                                               "bot handled %"], intents)}
{table("Agent KPIs per source, tenant and agent, whole period", ["source", "tenant", "agent", "chats joined",
       "handle hours", "mean first response s", "resolved", "timeouts", "CSAT (1-5)", "CSAT 4+ %", "ratings"],
       agents, digits=2)}
{stacked_bars("Agent status time (Botslovers and A8: source, tenant, agent; hours)", hours, "h")}
{table("daily_bot_kpis", ["day", "source", "tenant", "conversations", "bot handled %", "escalation %",
                          "failed escalation %", "deflection %", "automation %", "understood %"], daily)}
</body></html>"""


def write_report(dsn: str, out: Path) -> Path:
    out.write_text(build_report(dsn), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    print(write_report(a.dsn, a.out))


if __name__ == "__main__":
    main()
