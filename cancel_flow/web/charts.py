"""Server-side SVG charts (pygal), served from this service; each page also shows the numbers as a table."""

import pygal
from pygal.style import Style

from cancel_flow.offers import REASONS


def _style(color: str) -> Style:
    return Style(background="white", plot_background="white", foreground="#1b1f24", foreground_strong="#1b1f24",
                 foreground_subtle="#57606a", colors=(color, "#2da44e", "#cf222e"), font_family="sans-serif",
                 label_font_size=12, major_label_font_size=12, legend_font_size=13, title_font_size=15)


def _options(color: str) -> dict:
    return dict(style=_style(color), js=[], disable_xml_declaration=False, width=720, height=320,
                legend_at_bottom=True, show_y_guides=True, print_values=False, margin=16)


def weekly_trend_svg(weeks: list[dict], color: str) -> str:
    chart = pygal.Line(title="Sessions, saves and cancels per week", x_label_rotation=30, **_options(color))
    chart.x_labels = [week["week"].strftime("%d %b") for week in weeks]
    chart.add("Sessions", [week["sessions"] for week in weeks])
    chart.add("Saves", [week["saves"] for week in weeks])
    chart.add("Cancels", [week["cancels"] for week in weeks])
    return chart.render(is_unicode=True)


def reasons_svg(reasons: list[dict], color: str) -> str:
    chart = pygal.HorizontalBar(title="Why people leave", **_options(color))
    for row in reasons:
        chart.add(REASONS.get(row["reason"], row["reason"]), [row["sessions"]])
    return chart.render(is_unicode=True)
