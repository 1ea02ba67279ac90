"""The repository's usage over time as an inline SVG (server-rendered, no script): the bytes
its points stand for (logical) against the bytes stored, one polyline each."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from surety.core.units import format_size

__all__ = ["usage_chart"]

W, H, PAD = 640, 220, 48


def usage_chart(usage: list[dict[str, Any]]) -> str:
    if not usage:
        return '<p class="muted">no usage recorded yet (the service records it after each run)</p>'
    times = [datetime.fromisoformat(u["at"]).timestamp() for u in usage]
    top = max(max(u["logical"], u["stored"]) for u in usage) or 1
    t0, span = times[0], (times[-1] - times[0]) or 1.0

    def point(t: float, v: int) -> str:
        x = PAD + (t - t0) / span * (W - 2 * PAD) if len(times) > 1 else W / 2
        y = H - PAD / 2 - v / top * (H - PAD)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for key, color in (("logical", "#2c6fbb"), ("stored", "#d9822b")):
        pts = " ".join(point(t, u[key]) for t, u in zip(times, usage, strict=True))
        lines.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2.5" points="{pts}"/>'
            + "".join(
                f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{color}"/>'
                for p in pts.split()
            )
        )
    first, last = usage[0]["at"][:16].replace("T", " "), usage[-1]["at"][:16].replace("T", " ")
    return (
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="usage over time: logical vs stored">'
        f'<line x1="{PAD}" y1="{H - PAD / 2}" x2="{W - PAD}" y2="{H - PAD / 2}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD / 2}" x2="{PAD}" y2="{H - PAD / 2}" stroke="#999"/>'
        f'<text x="4" y="{PAD / 2 + 4}" font-size="12">{escape(format_size(top))}</text>'
        f'<text x="4" y="{H - PAD / 2}" font-size="12">0</text>'
        f'<text x="{PAD}" y="{H - 6}" font-size="12">{escape(first)}</text>'
        f'<text x="{W - PAD}" y="{H - 6}" font-size="12" text-anchor="end">{escape(last)}</text>'
        + "".join(lines)
        + f'<text x="{W - PAD}" y="16" font-size="13" text-anchor="end">'
        '<tspan fill="#2c6fbb">&#9632; logical</tspan> '
        '<tspan fill="#d9822b">&#9632; stored</tspan></text></svg>'
    )
