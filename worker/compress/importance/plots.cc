#include "worker/compress/importance/plots.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace topiary::compress {

std::string LineChartSvg(const std::string& title, const std::map<std::string, std::vector<double>>& series) {
  const double W = 720, H = 420, left = 60, right = 200, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  size_t n = 0;
  for (const auto& [name, v] : series) n = std::max(n, v.size());
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n",
      W, H, left, title);
  absl::StrAppendFormat(&svg, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n",
                        left, top, pw, ph);
  auto x_of = [&](size_t i) { return left + (n > 1 ? pw * static_cast<double>(i) / static_cast<double>(n - 1) : pw / 2); };
  for (size_t i = 0; i < n; ++i) {
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x_of(i),
                          top + ph + 16, static_cast<int>(i));
  }
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">layer</text>\n", left + pw / 2,
                        H - 12);
  absl::StrAppendFormat(&svg, "<text x=\"14\" y=\"%.0f\" transform=\"rotate(-90 14 %.0f)\" text-anchor=\"middle\">"
                              "normalised score (higher = more important)</text>\n", top + ph / 2, top + ph / 2);
  int k = 0;
  for (const auto& [name, v] : series) {
    if (v.empty()) continue;
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    double span = *hi - *lo > 0 ? *hi - *lo : 1;
    std::string points;
    for (size_t i = 0; i < v.size(); ++i) {
      absl::StrAppendFormat(&points, "%.1f,%.1f ", x_of(i), top + ph - ph * (v[i] - *lo) / span);
    }
    const char* color = kColors[k % 10];
    absl::StrAppendFormat(&svg, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", color,
                          points);
    absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", left + pw + 10,
                          top + 14 + 16.0 * k, color, name);
    ++k;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace topiary::compress
