#!/usr/bin/env python3
"""Plots a scripts/soak.py samples CSV as an SVG: RSS, open file descriptors and per-second p99 latency
over time, three panels sharing the time axis. Hand-written SVG, standard library only.

    scripts/soak-plot.py SAMPLES.csv OUT.svg [TITLE]
"""

import csv
import sys
from xml.sax.saxutils import escape

WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 900, 170, 70, 20, 40, 45


def nice_max(value):
    if value <= 0:
        return 1
    step = 10 ** (len(str(int(value))) - 1)
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * step:
            return m * step
    return 10 * step


def panel(out, index, rows, series, label, t_max):
    y0 = TOP + index * (PANEL_H + GAP)
    plot_w = WIDTH - LEFT - RIGHT
    values = [float(r[key]) for key, _, _ in series for r in rows if r.get(key) not in ("", None)]
    v_max = nice_max(max(values, default=1) * 1.1)
    out.append(f'<text x="{LEFT}" y="{y0 - 8}" font-size="13" font-weight="bold">{escape(label)}</text>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>')
    for i in range(5):
        v = v_max * i / 4
        y = y0 + PANEL_H - PANEL_H * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:g}</text>')
    for i in range(7):
        t = t_max * i / 6
        x = LEFT + plot_w * i / 6
        out.append(f'<text x="{x:.1f}" y="{y0 + PANEL_H + 14}" font-size="11" text-anchor="middle">{t:.0f} s</text>')
    legend_x = LEFT + plot_w - 10
    for n, (key, colour, name) in enumerate(series):
        points = []
        for r in rows:
            if r.get(key) in ("", None):
                continue
            x = LEFT + plot_w * float(r["t_s"]) / t_max
            y = y0 + PANEL_H - PANEL_H * float(r[key]) / v_max
            points.append(f"{x:.1f},{y:.1f}")
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{" ".join(points)}"/>')
        out.append(f'<text x="{legend_x}" y="{y0 + 16 + 14 * n}" font-size="11" fill="{colour}" '
                   f'text-anchor="end">{escape(name)}</text>')


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit("no samples")
    title = sys.argv[3] if len(sys.argv) > 3 else "forge-overlay soak"
    t_max = max(float(r["t_s"]) for r in rows)
    height = TOP + 3 * (PANEL_H + GAP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="20" font-size="15" text-anchor="middle">{escape(title)}</text>']
    panel(out, 0, rows, [("rss_mib", "#1f77b4", "VmRSS (MiB)")], "Resident set (MiB)", t_max)
    panel(out, 1, rows, [("fds", "#2ca02c", "open file descriptors")], "Open file descriptors", t_max)
    series = [("p99_ms", "#d62728", "p99, all calls but the spinner's"), ("p50_ms", "#ff7f0e", "p50, same calls")]
    if any(r.get("spin_p99_ms") for r in rows):
        series.append(("spin_p99_ms", "#9467bd", "p99, spinner (100 ms deadline)"))
    panel(out, 2, rows, series, "Latency per second (ms)", t_max)
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
