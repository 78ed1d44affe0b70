// Line charts as SVG text, for the plots written beside scores.json and the
// charts of a job's report. Self-contained: no fonts, scripts or links.
// Pure functions.
#pragma once

#include <string>
#include <vector>

namespace topiary::report {

struct Series {
  std::string name;
  std::vector<double> x;  // empty: 0, 1, 2, ...
  std::vector<double> y;
};

struct ChartOptions {
  std::string title, x_label, y_label;
  bool normalise = false;  // each series min-max scaled to [0, 1] (metrics of different units on one chart)
  bool standalone = true;  // an .svg file (with the xmlns attribute) rather than SVG inside HTML
  int width = 720, height = 420;
};

std::string LineChart(const std::vector<Series>& series, const ChartOptions& options);

// Escapes &, <, >, " for text inside SVG or HTML.
std::string EscapeXml(const std::string& text);

}  // namespace topiary::report
