#include "common/report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace topiary::report {
namespace {

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string Tick(double v) {
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) return absl::StrFormat("%.2g", v);
  return absl::StrFormat("%.4g", v);
}

}  // namespace

std::string EscapeXml(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string LineChart(const std::vector<Series>& series, const ChartOptions& o) {
  const double W = o.width, H = o.height, left = 70, right = 200, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  auto x_at = [](const Series& s, size_t i) { return s.x.empty() ? static_cast<double>(i) : s.x[i]; };
  for (const Series& s : series) {
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, x_at(s, i)), x_hi = std::max(x_hi, x_at(s, i));
      y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  if (o.normalise) y_lo = 0, y_hi = 1;
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) y_hi = y_lo + 1;
  auto px = [&](double x) { return left + pw * (x - x_lo) / (x_hi - x_lo); };
  auto py = [&](double y) { return top + ph - ph * (y - y_lo) / (y_hi - y_lo); };
  std::string svg = absl::StrFormat(
      "<svg %swidth=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n",
      o.standalone ? "xmlns=\"http://www.w3.org/2000/svg\" " : "", W, H, left, EscapeXml(o.title));
  absl::StrAppendFormat(&svg,
                        "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n",
                        left, top, pw, ph);
  for (int k = 0; k <= 4; ++k) {  // axis ticks
    const double xv = x_lo + (x_hi - x_lo) * k / 4, yv = y_lo + (y_hi - y_lo) * k / 4;
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", px(xv), top + ph + 16,
                          Tick(xv));
    absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 6, py(yv) + 4,
                          Tick(yv));
  }
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n", left + pw / 2, H - 12,
                        EscapeXml(o.x_label));
  absl::StrAppendFormat(
      &svg, "<text x=\"14\" y=\"%.0f\" transform=\"rotate(-90 14 %.0f)\" text-anchor=\"middle\">%s</text>\n",
      top + ph / 2, top + ph / 2, EscapeXml(o.y_label));
  int k = 0;
  for (const Series& s : series) {
    if (s.y.empty()) continue;
    double lo = 0, span = 1;
    if (o.normalise) {
      auto [a, b] = std::minmax_element(s.y.begin(), s.y.end());
      lo = *a;
      span = *b - *a > 0 ? *b - *a : 1;
    }
    std::string points;
    for (size_t i = 0; i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      const double y = o.normalise ? (s.y[i] - lo) / span : s.y[i];
      absl::StrAppendFormat(&points, "%.1f,%.1f ", px(x_at(s, i)), py(y));
    }
    const char* color = kColors[k % 10];
    absl::StrAppendFormat(&svg, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", color,
                          points);
    absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", left + pw + 10,
                          top + 14 + 16.0 * k, color, EscapeXml(s.name));
    ++k;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace topiary::report
