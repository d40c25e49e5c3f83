"""Server-side SVG charts, drawn by this service (nothing loaded from elsewhere); each page also shows the
numbers as a table.

Two sizes: "wide" (720 × 320) for screens of a laptop, "narrow" (340 wide) for phones, so that text drawn
at 12–13 units stays at least 11 px once the image is fitted to a 360 px screen. Series are labelled
where they end and drawn with different dashes and markers, so no reading depends on colour alone.
"""

from html import escape

from cancel_flow.reasons import REASONS

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
INK, MUTED, GRID = "#1b1f24", "#57606a", "#d0d7de"
SIZES = {"wide": (720, 320), "narrow": (340, 300)}
SAVES_COLOUR, CANCELS_COLOUR = "#1a7f37", "#b42318"


def _text(x, y, words, size=12, anchor="start", weight="400", fill=INK) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" fill="{fill}" '
            f'text-anchor="{anchor}">{escape(str(words))}</text>')


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" font-family="{FONT}"><title>{escape(title)}</title>'
            f'<rect width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>")


def _nice_top(value: int) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step * 4:
            return step * 4
    return -(-value // 10000) * 10000


def weekly_trend_svg(weeks: list[dict], color: str, size: str = "wide") -> str:
    """Sessions, saves and cancels per week; weeks only partly inside the range are shaded and marked."""
    width, height = SIZES.get(size, SIZES["wide"])
    narrow = size == "narrow"
    left, right, top, bottom = 30, (80 if narrow else 96), 30, 52
    plot_w, plot_h = width - left - right, height - top - bottom
    title = "Sessions, saves and cancels per week"
    body = [_text(left, 18, title, 13, weight="600")]
    peak = max([1] + [max(w["sessions"], w["saves"], w["cancels"]) for w in weeks])
    ceiling = _nice_top(peak)
    count = max(len(weeks), 1)
    step = plot_w / max(count - 1, 1)

    def x_of(index):
        return left + (index * step if count > 1 else plot_w / 2)

    def y_of(value):
        return top + plot_h - value / ceiling * plot_h

    for tick in range(5):
        value = ceiling * tick // 4
        y = y_of(value)
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>')
        body.append(_text(left - 6, y + 4, value, 12, "end", fill=MUTED))
    for index, week in enumerate(weeks):
        if week.get("days", 7) < 7:
            half = step / 2 if count > 1 else plot_w / 2
            x0, x1 = max(left, x_of(index) - half), min(left + plot_w, x_of(index) + half)
            body.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_h}" fill="#eaeef2"/>')
            at_end = index == count - 1 and count > 1
            body.append(_text(x1 - 2 if at_end else x0 + 2, top + 14, f"{week['days']} d", 12, "end" if at_end else "start", fill=MUTED))
    # Week labels, as many as fit without touching (about 48 units each), the last one always.
    room = 48
    shown = [i for i in range(count) if i == count - 1 or x_of(count - 1) - x_of(i) >= room]
    kept, last_x = [], None
    for index in shown:
        if last_x is None or x_of(index) - last_x >= room or index == count - 1:
            if index == count - 1 and kept and x_of(index) - x_of(kept[-1]) < room:
                kept.pop()
            kept.append(index)
            last_x = x_of(index)
    for index in kept:
        body.append(_text(x_of(index), top + plot_h + 18, weeks[index]["week"].strftime("%d %b"), 12, "middle", fill=MUTED))
    series = (("Sessions", "sessions", color, "", "circle"), ("Saves", "saves", SAVES_COLOUR, "6 3", "square"),
              ("Cancels", "cancels", CANCELS_COLOUR, "2 3", "triangle"))
    ends = []
    for name, key, colour, dash, marker in series:
        points = [(x_of(i), y_of(w[key])) for i, w in enumerate(weeks)]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"{dashes}/>')
        for x, y in points:
            body.append(_marker(marker, x, y, colour))
        ends.append([points[-1][1], name, colour, weeks[-1][key]])
    # Labels where the lines end, pushed apart so they never overlap, and kept inside the plot's height.
    ends.sort()
    for i in range(1, len(ends)):
        ends[i][0] = max(ends[i][0], ends[i - 1][0] + 15)
    overflow = (ends[-1][0] - (top + plot_h)) if ends else 0
    if overflow > 0:
        for end in ends:
            end[0] -= overflow
    for y, name, colour, value in ends:
        body.append(_text(left + plot_w + 8, y + 4, f"{name} {value}", 12, weight="600", fill=colour))
    note = "Shaded: partial week (days in range)" if narrow else "Shaded: a week only partly inside the range (its days in range shown)."
    body.append(_text(8 if narrow else left, height - 10, note, 12, fill=MUTED))
    return _svg(width, height, title, body)


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if shape == "triangle":
        return f'<path d="M{x:.1f} {y - 4.5:.1f} L{x + 4.5:.1f} {y + 3.5:.1f} L{x - 4.5:.1f} {y + 3.5:.1f} Z" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'


def reasons_size(count: int, size: str = "wide") -> tuple[int, int]:
    """The reasons chart's width and height for `count` reasons (for the page's <img> size)."""
    width, _ = SIZES.get(size, SIZES["wide"])
    return width, 30 + max(count, 1) * (44 if size == "narrow" else 30) + 30


def reasons_svg(reasons: list[dict], color: str, size: str = "wide") -> str:
    """One bar per reason, named and counted in words beside it; the saved share drawn as a hatched part."""
    width, height = reasons_size(len(reasons), size)
    narrow = size == "narrow"
    row_h = 44 if narrow else 30
    top = 30
    title = "Why people leave"
    body = [_text(12, 18, title, 13, weight="600"),
            '<defs><pattern id="saved" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
            f'<rect width="6" height="6" fill="{SAVES_COLOUR}"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern></defs>']
    peak = max([1] + [row["sessions"] for row in reasons])
    label_w = 0 if narrow else 270
    bar_left = 12 + label_w
    bar_w = width - bar_left - (120 if not narrow else 12)
    for index, row in enumerate(reasons):
        name = REASONS.get(row["reason"], row["reason"])
        y = top + index * row_h
        if narrow:
            body.append(_text(12, y + 13, f"{name}: {row['sessions']} ({row['saved']} saved)", 12))
            bar_y, bar_h = y + 19, 14
        else:
            body.append(_text(bar_left - 8, y + 17, name, 12, "end"))
            bar_y, bar_h = y + 5, 18
        length = max(2.0, row["sessions"] / peak * bar_w)
        saved = row["saved"] / peak * bar_w
        body.append(f'<rect x="{bar_left}" y="{bar_y}" width="{length:.1f}" height="{bar_h}" fill="{color}"/>')
        if saved:
            body.append(f'<rect x="{bar_left}" y="{bar_y}" width="{saved:.1f}" height="{bar_h}" fill="url(#saved)"/>')
        if not narrow:
            body.append(_text(bar_left + length + 6, y + 17, f"{row['sessions']} ({row['saved']} saved)", 12))
    body.append(_text(12, height - 10, "Hatched part of each bar: sessions saved.", 12, fill=MUTED))
    return _svg(width, height, title, body)
