"""The overview's chart, drawn on the server: executions per minute by status over the last
hour as stacked bars in an inline SVG. No chart library and no script (the CSP allows none
inline): the template draws the rectangles computed here, and console.css colours them by
class. Each bar has a <title> (what a pointer or a screen reader gets), and the page has the
same numbers as a table for those who want them."""

from __future__ import annotations

from dataclasses import dataclass

from consumer.overview import Minute

# Bottom to top; statuses outside this order (none today) are stacked last.
ORDER = ("completed", "failed", "timeout", "cancelled", "running", "pending")
WIDTH = 720
HEIGHT = 200
LEFT = 40  # room for the y axis labels
BOTTOM = 20  # room for the x axis labels
TOP = 8


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    status: str


@dataclass(frozen=True, slots=True)
class Bar:
    minute: Minute
    x: float
    w: float
    rects: list[Rect]
    label: str  # "14:05 UTC: 12 completed, 1 failed"


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    plot_left: float
    plot_bottom: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    peak: int
    total: int
    statuses: list[str]  # those present, in stacking order (the legend)


def nice_ceiling(n: int) -> int:
    """The y axis top: 1, 2, 5, 10, 20, 50, ... at least n."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= n:
                return step * m
        step *= 10


def draw(minutes: list[Minute]) -> Chart:
    peak = max((m.total for m in minutes), default=0)
    top = nice_ceiling(max(peak, 1))
    plot_w = WIDTH - LEFT
    plot_h = HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(minutes), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    present: set[str] = set()
    for i, minute in enumerate(minutes):
        x = LEFT + i * slot + gap / 2
        y = float(HEIGHT - BOTTOM)
        rects = []
        statuses = [s for s in ORDER if minute.counts.get(s)] + \
            sorted(s for s in minute.counts if s not in ORDER and minute.counts[s])
        for status in statuses:
            h = minute.counts[status] / top * plot_h
            y -= h
            rects.append(Rect(round(x, 2), round(y, 2), round(slot - gap, 2), round(h, 2),
                              status))
            present.add(status)
        parts = ", ".join(f"{minute.counts[s]} {s}" for s in statuses) or "none"
        bars.append(Bar(minute, round(x, 2), round(slot - gap, 2), rects,
                        f"{minute.start:%H:%M} UTC: {parts}"))
    y_ticks = [Tick(round(HEIGHT - BOTTOM - f * plot_h, 2), str(round(top * f)))
               for f in (0, 0.5, 1) if f == 0 or top * f == int(top * f)]
    # every 15 minutes back from the minute in progress, relative (no zone to explain)
    last = len(minutes) - 1
    x_ticks = [Tick(round(LEFT + (i + 0.5) * slot, 2),
                    "now" if i == last else f"−{last - i} min")
               for i in range(last, -1, -15)][::-1]
    ordered = [s for s in ORDER if s in present] + sorted(present - set(ORDER))
    return Chart(WIDTH, HEIGHT, LEFT, HEIGHT - BOTTOM, bars, y_ticks, x_ticks, peak,
                 sum(m.total for m in minutes), ordered)
