// SVG plots of per-layer importance scores (written next to scores.json).
// Each metric is min-max normalised to [0, 1] so that metrics of different
// units share one chart. Pure functions.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace topiary::compress {

// One line per series over layer index; `title` heads the chart.
std::string LineChartSvg(const std::string& title, const std::map<std::string, std::vector<double>>& series);

}  // namespace topiary::compress
