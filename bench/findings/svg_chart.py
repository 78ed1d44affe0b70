"""A self-contained SVG bar chart (no plotting library): one bar per arm at
its mean over seeds, a whisker from its min to its max, the values printed."""
import html
import statistics


def bars(path, title, ylabel, arms, width=640, height=360):
    """arms: [(label, [value per seed])]."""
    left, right, top, bottom = 64, 16, 40, 96
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max((max(v) for _, v in arms if v), default=1.0) * 1.1 or 1.0
    y = lambda v: top + plot_h * (1 - v / hi)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
           f'text-anchor="middle">{html.escape(ylabel)}</text>',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>']
    for i in range(5):
        v = hi * i / 4
        out.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{width - right}" y2="{y(v):.1f}" stroke="#eee"/>')
    slot = plot_w / max(1, len(arms))
    for i, (label, values) in enumerate(arms):
        if not values:
            continue
        mean = statistics.fmean(values)
        x = left + slot * i + slot * 0.2
        w = slot * 0.6
        out.append(f'<rect x="{x:.1f}" y="{y(mean):.1f}" width="{w:.1f}" height="{top + plot_h - y(mean):.1f}" '
                   f'fill="#4a7ab5"/>')
        cx = x + w / 2
        out.append(f'<line x1="{cx:.1f}" y1="{y(min(values)):.1f}" x2="{cx:.1f}" y2="{y(max(values)):.1f}" '
                   f'stroke="black"/>')
        out.append(f'<text x="{cx:.1f}" y="{y(max(values)) - 4:.1f}" text-anchor="middle">{mean:.3g}</text>')
        out.append(f'<text x="{cx:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                   f'transform="rotate(-30 {cx:.1f} {top + plot_h + 14})">{html.escape(label)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
