#include "worker/compress/importance/plots.h"

#include "common/report/svg_chart.h"

namespace topiary::compress {

std::string LineChartSvg(const std::string& title, const std::map<std::string, std::vector<double>>& series) {
  std::vector<report::Series> s;
  for (const auto& [name, v] : series) s.push_back({name, {}, v});
  report::ChartOptions o;
  o.title = title;
  o.x_label = "layer";
  o.y_label = "normalised score (higher = more important)";
  o.normalise = true;
  return report::LineChart(s, o);
}

}  // namespace topiary::compress
