"""`make dashboards`: the Services dashboard's panels drawn from a real Prometheus to a PNG,
so that the panels can be looked at without Grafana.

    python -m monitoring.render [--prometheus URL] [--minutes N] [--out PATH]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from local.config import REPO, StackSettings

from monitoring.dashboard import RATE, ROWS, Panel

COLUMNS = 3
DEFAULT_OUT = REPO / ".local" / "dashboards" / "services.png"


def legend_of(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def series_of(
    prometheus: str, panel: Panel, start: float, end: float, step_s: int
) -> list[tuple[str, list[float], list[float]]]:
    """(legend, times in minutes before the end, values) of every series of the panel."""
    found = []
    for query in panel.queries:
        answer = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={
                "query": query.expr.replace(RATE, "1m"),
                "start": start,
                "end": end,
                "step": step_s,
            },
            timeout=30,
        ).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"{panel.title}: {answer}")
        for result in answer["data"]["result"]:
            times = [(float(t) - end) / 60 for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            found.append((legend_of(query.legend, result["metric"]), times, values))
    return found


def render(prometheus: str, minutes: int, out: Path) -> list[str]:
    """Draw every panel; return the titles of panels that had no data."""
    end = time.time()
    start = end - minutes * 60
    step_s = max(5, minutes * 60 // 200)
    lines = sum((len(row.panels) + COLUMNS - 1) // COLUMNS for row in ROWS)
    figure, axes = plt.subplots(lines, COLUMNS, figsize=(6 * COLUMNS, 3.2 * lines), squeeze=False)
    empty = []
    line = 0
    for row in ROWS:
        for index, panel in enumerate(row.panels):
            axis = axes[line + index // COLUMNS][index % COLUMNS]
            drawn = series_of(prometheus, panel, start, end, step_s)
            for legend, times, values in drawn:
                axis.plot(times, values, label=legend or panel.title, linewidth=1.2)
            if drawn:
                axis.legend(fontsize=7, loc="upper left")
            else:
                empty.append(f"{row.title}: {panel.title}")
                axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
            axis.set_title(f"{row.title} · {panel.title}", fontsize=9)
            axis.set_xlabel("minutes ago", fontsize=7)
            axis.set_ylabel(panel.unit, fontsize=7)
            axis.tick_params(labelsize=7)
        used = len(row.panels)
        rows_used = (used + COLUMNS - 1) // COLUMNS
        for spare in range(used, rows_used * COLUMNS):
            axes[line + spare // COLUMNS][spare % COLUMNS].axis("off")
        line += rows_used
    figure.suptitle(f"jobflow · Services · last {minutes} minutes · {prometheus}", fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)
    return empty


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m monitoring.render")
    parser.add_argument("--prometheus", default=StackSettings().prometheus_url)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    arguments = parser.parse_args()
    empty = render(arguments.prometheus, arguments.minutes, arguments.out)
    print(f"written to {arguments.out}")
    for title in empty:
        print(f"no data: {title}")


if __name__ == "__main__":
    main()
