"""The figures as a table: on the terminal (rich) and in report.md, with ratios against the baseline."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .results import Results
from .stats import Summary, by_class, ratio

COLUMNS = (
    "endpoint", "model", "load", "offered r/s", "ok/shed/err/cut", "TTFT p50/p90/p99 ms", "ITL p50 ms",
    "e2e p50/p99 ms", "done r/s", "out tok/s",
)  # fmt: skip
RATIO_COLUMNS = ("TTFT p50 ratio", "TTFT p99 ratio", "done r/s ratio")


def _ms(*seconds: float | None) -> str:
    return "/".join(
        "-" if s is None else f"{s * 1000:.0f}" if s >= 0.1 else f"{s * 1000:.1f}" for s in seconds
    )


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(s: Summary) -> list[str]:
    return [
        s.endpoint, s.model, s.load, f"{s.offered_rps:.2f}", f"{s.ok}/{s.shed}/{s.errors}/{s.unfinished}",
        _ms(s.ttft_p50, s.ttft_p90, s.ttft_p99), _ms(s.itl_p50), _ms(s.e2e_p50, s.e2e_p99),
        f"{s.completed_rps:.2f}", f"{s.output_tps:.0f}",
    ]  # fmt: skip


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows; with several endpoints, each row also gets its ratios to the baseline's row
    at the same model and load (the baseline's own ratios are 1)."""
    loads = list(dict.fromkeys(c.load.name for c in results.cells))  # in the order they ran
    order = {name: i for i, name in enumerate(results.endpoints)}
    summaries = sorted(
        results.summaries(), key=lambda s: (s.model, loads.index(s.load), order.get(s.endpoint, 0))
    )
    compare = len(results.endpoints) > 1
    base = {(s.model, s.load): s for s in summaries if s.endpoint == results.endpoints[0]}
    rows = []
    for s in summaries:
        row = _row(s)
        if compare:
            b = base.get((s.model, s.load))
            row += [
                _x(ratio(s.ttft_p50, b.ttft_p50 if b else None)),
                _x(ratio(s.ttft_p99, b.ttft_p99 if b else None)),
                _x(ratio(s.completed_rps, b.completed_rps if b else None)),
            ]
        rows.append(row)
    header = list(COLUMNS) + (list(RATIO_COLUMNS) if compare else [])
    if len({s.model for s in summaries}) == 1:  # one model: say it once, in the title, not on every row
        header.pop(1)
        rows = [row[:1] + row[2:] for row in rows]
    return header, rows


def print_table(results: Results, console: Console | None = None) -> None:
    header, rows = table_rows(results)
    models = sorted({c.model for c in results.cells})
    table = Table(title=f"fluido bench: {', '.join(models)}", show_lines=False)
    for name in header:
        table.add_column(
            name, justify="left" if name in ("endpoint", "model", "load") else "right", no_wrap=True
        )
    for row in rows:
        table.add_row(*row)
    console = console or Console()
    console.print(table)
    for line in _notes(results):
        console.print(line)


def _notes(results: Results) -> list[str]:
    """Non-200 answers by status and code, and a warning when the generator itself fell behind."""
    notes = []
    for s in results.summaries():
        where = f"{s.endpoint} / {s.model} / {s.load}"
        if s.shed or s.errors or s.unfinished:
            parts = ["status " + ", ".join(f"{k}: {v}" for k, v in s.by_status.items())]
            parts.append("codes " + ", ".join(f"{k}: {v}" for k, v in s.by_error.items()))
            if s.shed:
                parts.append(f"shed answered in {_ms(s.shed_latency_p50, s.shed_latency_p99)} ms p50/p99")
                parts.append(f"{s.shed_with_retry_after} of {s.shed} shed with Retry-After")
            notes.append(f"{where}: " + "; ".join(parts))
        if s.lag_p99 is not None and s.lag_p99 > 0.01:
            notes.append(
                f"{where}: sends ran {_ms(s.lag_p99)} ms late at p99: the load generator was short of CPU"
            )
    return notes


def _class_table(results: Results) -> list[str]:
    """Per query class, when the run mixed several: TTFT of short questions under load is the point."""
    if len({r.query_class for c in results.cells for r in c.records}) < 2:
        return []
    lines = [
        "## By query class",
        "",
        "| endpoint | model | load | class | ok/shed/err+cut | TTFT p50/p99 ms | e2e p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in results.cells:
        for f in by_class(cell):
            where = f"| {cell.endpoint} | {cell.model} | {cell.load.name} | {f.query_class} "
            lines.append(
                where + f"| {f.ok}/{f.shed}/{f.errors} | {_ms(f.ttft_p50, f.ttft_p99)} | {_ms(f.e2e_p50)} |"
            )
    return [*lines, ""]


def write_markdown(results: Results, out: Path, plots: list[Path]) -> Path:
    header, rows = table_rows(results)
    cfg = results.config
    models = sorted({c.model for c in results.cells})
    lines = [
        f"# fluido bench: {', '.join(models)}",
        "",
        f"Endpoints: {', '.join(results.endpoints)} (ratios are against {results.endpoints[0]}). "
        f"Command: `{cfg.get('command', '')}`",
        "",
        "TTFT is the time to the first generated token (not the headers); ITL the time between token "
        "events; e2e the whole request; latencies over successful requests. 429 and 503 count as shed; 'cut' "
        "requests were still running when their load level ended (after the drain) and were abandoned.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    summaries = results.summaries()
    lags = [s.lag_p99 for s in summaries if s.lag_p99 is not None]
    lines += [
        f"Load generator: at most {max((s.client_cpu_share for s in summaries), default=0) * 100:.0f} % of "
        f"one core" + (f", sends at most {_ms(max(lags))} ms late (p99)." if lags else "."),
        "",
    ]
    lines += _class_table(results)
    notes = _notes(results)
    if notes:
        lines += ["## Non-200 answers and warnings", "", *(f"- {n}" for n in notes), ""]
    if plots:
        lines += ["## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
