// Markdown, HTML and terminal renderings of report.json (job_report.h).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/report/job_report.h"
#include "common/report/svg_chart.h"

namespace topiary::report {
namespace {

using json = nlohmann::json;

std::string Num(const json& j, const char* key, std::string (*format)(double)) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? format(j[key].get<double>()) : "-";
}
std::string Pct(double v) { return absl::StrFormat("%.1f%%", 100 * v); }
std::string Str(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}
std::string Bytes(double b) {
  if (b >= 1e9) return absl::StrFormat("%.2f GB", b / 1e9);
  return absl::StrFormat("%.1f MB", b / 1e6);
}
std::string Shape(const json& c) {
  if (!c.is_object() || !c.contains("hidden_size")) return "-";
  return absl::StrFormat("hidden %d, MLP %d, heads %d/%d, layers %d", c.value("hidden_size", 0),
                         c.value("intermediate_size", 0), c.value("num_attention_heads", 0),
                         c.value("num_key_value_heads", 0), c.value("num_hidden_layers", 0));
}

// A table as rows of cells; Markdown or HTML.
struct Table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  std::string Markdown() const {
    std::string out = "| " + absl::StrJoin(head, " | ") + " |\n|";
    for (size_t i = 0; i < head.size(); ++i) out += " --- |";
    out += "\n";
    for (const auto& r : rows) out += "| " + absl::StrJoin(r, " | ") + " |\n";
    return out + "\n";
  }
  std::string Html() const {
    std::string out = "<table><tr>";
    for (const auto& h : head) out += "<th>" + EscapeXml(h) + "</th>";
    out += "</tr>\n";
    for (const auto& r : rows) {
      out += "<tr>";
      for (const auto& c : r) out += "<td>" + EscapeXml(c) + "</td>";
      out += "</tr>\n";
    }
    return out + "</table>\n";
  }
};

Table Models(const json& r) {
  Table t{{"", "path", "shape", "parameters", "size on disk", "dtype"}, {}};
  for (const char* which : {"teacher", "result"}) {
    if (!r.contains(which)) continue;
    const json& m = r[which];
    t.rows.push_back({which, Str(m, "path"), Shape(m.value("config", json::object())), Num(m, "params", FormatParams),
                      m.contains("bytes") ? Bytes(m["bytes"].get<double>()) : "-", Str(m, "dtype")});
  }
  return t;
}

Table Stages(const json& r) {
  Table t{{"stage", "kind", "state", "duration", "attempts", "error"}, {}};
  for (const json& s : r["stages"]) {
    std::string error = Str(s, "error");
    if (error.size() > 300) error = error.substr(0, 300) + "...";
    t.rows.push_back({Str(s, "name"), Str(s, "kind"), Str(s, "state"), Num(s, "seconds", FormatSeconds),
                      absl::StrCat(s.value("attempts", 0)), error});
  }
  return t;
}

Table Search(const json& r) {
  Table t{{"probe", "shape", "parameters", "zero-shot loss", "loss after probe distillation", "ranked by", "chosen"},
          {}};
  for (const json& c : r["search"]["candidates"]) {
    t.rows.push_back({absl::StrCat(c.value("index", 0)), Shape(c.value("config", json::object())),
                      Num(c, "params", FormatParams), Num(c, "zero_shot_loss", FormatLoss),
                      Num(c, "distilled_loss", FormatLoss), Num(c, "loss", FormatLoss),
                      c.value("winner", false) ? "yes" : ""});
  }
  return t;
}

Table Evaluation(const json& r) {
  Table t{{"model", "parameters", "held-out perplexity", "loss", "KL to teacher", "top-1 agreement", "tasks"}, {}};
  for (const json& m : r["evaluation"]["models"]) {
    std::string tasks;
    if (m.contains("tasks")) {
      for (const json& k : m["tasks"]) {
        absl::StrAppend(&tasks, tasks.empty() ? "" : "; ", "acc ", absl::StrFormat("%.3f", k.value("acc", 0.0)),
                        " / acc_norm ", absl::StrFormat("%.3f", k.value("acc_norm", 0.0)));
      }
    }
    t.rows.push_back({Str(m, "label"), Num(m, "params", FormatParams), Num(m, "perplexity", FormatPerplexity),
                      Num(m, "loss", FormatLoss), Num(m, "kl_to_teacher", FormatLoss),
                      m.contains("top1_agreement") ? Pct(m["top1_agreement"].get<double>()) : "-", tasks});
  }
  return t;
}

Table Training(const json& r) {
  Table t{{"stage", "steps", "first loss", "last loss", "last eval loss", "tokens", "tokens/s"}, {}};
  for (const json& s : r["training"]) {
    const json& loss = s["loss"];
    t.rows.push_back({Str(s, "stage"), absl::StrCat(loss.size()), FormatLoss(loss.front().get<double>()),
                      FormatLoss(loss.back().get<double>()),
                      s["eval_loss"].empty() ? "-" : FormatLoss(s["eval_loss"].back().get<double>()),
                      Num(s, "tokens", FormatParams), Num(s, "tokens_per_second", FormatParams)});
  }
  return t;
}

std::vector<double> Doubles(const json& a) {
  std::vector<double> out;
  if (!a.is_array()) return out;
  for (const json& v : a) out.push_back(v.is_number() ? v.get<double>() : NAN);
  return out;
}

std::string Outcome(const json& r) {
  std::string s = absl::StrCat("Job `", Str(r["job"], "id"), "` (", Str(r["job"], "name"), "): **",
                               Str(r["job"], "state"), "** after ", Num(r["job"], "seconds", FormatSeconds), ".");
  if (r.contains("failed_stage")) {
    absl::StrAppend(&s, " Stage `", Str(r["failed_stage"], "name"), "` failed: ", Str(r["failed_stage"], "error"));
  } else if (!Str(r["job"], "error").empty()) {
    absl::StrAppend(&s, " ", Str(r["job"], "error"));
  }
  return s;
}

}  // namespace

std::string RenderMarkdown(const json& r) {
  std::string out = absl::StrCat("# Topiary report: ", Str(r["job"], "name"), "\n\n", Outcome(r), "\n\n");
  absl::StrAppend(&out, "## Teacher and result\n\n", Models(r).Markdown());
  absl::StrAppend(&out, "## Stages\n\n", Stages(r).Markdown());
  if (r.contains("importance")) {
    absl::StrAppend(&out, "## Importance (stage `", Str(r["importance"], "stage"), "`)\n\n");
    Table t{{"metric"}, {}};
    size_t L = 0;
    for (const auto& [m, v] : r["importance"]["depth"].items()) L = std::max(L, v.size());
    for (size_t l = 0; l < L; ++l) t.head.push_back(absl::StrCat("layer ", l));
    for (const auto& [m, v] : r["importance"]["depth"].items()) {
      std::vector<std::string> row = {m};
      for (const json& x : v) row.push_back(x.is_number() ? absl::StrFormat("%.4g", x.get<double>()) : "-");
      t.rows.push_back(row);
    }
    absl::StrAppend(&out, t.Markdown());
  }
  if (r.contains("search"))
    absl::StrAppend(&out, "## Search (stage `", Str(r["search"], "stage"), "`)\n\n", Search(r).Markdown());
  if (!r["training"].empty()) absl::StrAppend(&out, "## Training\n\n", Training(r).Markdown());
  if (r.contains("evaluation")) absl::StrAppend(&out, "## Evaluation\n\n", Evaluation(r).Markdown());
  if (r.contains("sample")) {
    const json& s = r["sample"];
    absl::StrAppend(&out, "## A sample\n\nPrompt: ", Str(s, "prompt"), "\n\n- teacher: ", Str(s, "teacher"),
                    "\n- student: ", Str(s, "student"), "\n\n");
  }
  absl::StrAppend(&out, "## The spec\n\n```json\n", r["spec"].dump(2), "\n```\n");
  return out;
}

std::string RenderHtml(const json& r) {
  std::string out =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Topiary report: " +
      EscapeXml(Str(r["job"], "name")) +
      "</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
      "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}.failed{color:#b00}</style>\n"
      "</head><body>\n";
  absl::StrAppend(&out, "<h1>Topiary report: ", EscapeXml(Str(r["job"], "name")), "</h1>\n<p",
                  r.contains("failed_stage") ? " class=\"failed\"" : "", ">", EscapeXml(Outcome(r)), "</p>\n");
  absl::StrAppend(&out, "<h2>Teacher and result</h2>\n", Models(r).Html());
  absl::StrAppend(&out, "<h2>Stages</h2>\n", Stages(r).Html());
  ChartOptions o;
  o.standalone = false;
  if (r.contains("importance")) {
    std::vector<Series> depth;
    for (const auto& [m, v] : r["importance"]["depth"].items()) depth.push_back({m, {}, Doubles(v)});
    o.title = "Depth importance per layer";
    o.x_label = "layer";
    o.y_label = "normalised score (higher = more important)";
    o.normalise = true;
    absl::StrAppend(&out, "<h2>Importance (stage ", EscapeXml(Str(r["importance"], "stage")), ")</h2>\n",
                    LineChart(depth, o));
    std::vector<Series> width;
    for (const auto& [k, v] : r["importance"]["width"].items()) width.push_back({k + " (mean)", {}, Doubles(v)});
    o.title = "Width importance per layer";
    absl::StrAppend(&out, LineChart(width, o));
  }
  if (r.contains("search")) {
    absl::StrAppend(&out, "<h2>Search (stage ", EscapeXml(Str(r["search"], "stage")), ")</h2>\n", Search(r).Html());
  }
  if (!r["training"].empty()) {
    absl::StrAppend(&out, "<h2>Training</h2>\n", Training(r).Html());
    o.normalise = false;
    o.x_label = "step";
    o.y_label = "loss";
    for (const json& s : r["training"]) {
      std::vector<Series> curves = {{"train", Doubles(s["step"]), Doubles(s["loss"])}};
      if (!s["eval_loss"].empty()) curves.push_back({"eval", Doubles(s["eval_step"]), Doubles(s["eval_loss"])});
      o.title = "Loss of " + Str(s, "stage");
      absl::StrAppend(&out, LineChart(curves, o));
    }
  }
  if (r.contains("evaluation")) absl::StrAppend(&out, "<h2>Evaluation</h2>\n", Evaluation(r).Html());
  if (r.contains("sample")) {
    const json& s = r["sample"];
    absl::StrAppend(&out, "<h2>A sample</h2>\n<p><b>Prompt:</b> ", EscapeXml(Str(s, "prompt")),
                    "</p>\n<p><b>Teacher:</b> ", EscapeXml(Str(s, "teacher")), "</p>\n<p><b>Student:</b> ",
                    EscapeXml(Str(s, "student")), "</p>\n");
  }
  absl::StrAppend(&out, "<h2>The spec</h2>\n<pre>", EscapeXml(r["spec"].dump(2)), "</pre>\n</body></html>\n");
  return out;
}

std::string RenderSummary(const json& r, const std::string& job_dir) {
  std::string out =
      absl::StrCat("job ", Str(r["job"], "id"), " (", Str(r["job"], "name"), "): ", Str(r["job"], "state"), " after ",
                   Num(r["job"], "seconds", FormatSeconds), "\n");
  if (r.contains("failed_stage")) {
    absl::StrAppend(&out, "  stage ", Str(r["failed_stage"], "name"), " failed: ", Str(r["failed_stage"], "error"),
                    "\n");
  }
  for (const char* which : {"teacher", "result"}) {
    if (!r.contains(which)) continue;
    absl::StrAppend(&out, "  ", which, ": ", Shape(r[which].value("config", json::object())), "; ",
                    Num(r[which], "params", FormatParams), " parameters; ", Str(r[which], "path"), "\n");
  }
  if (r.contains("evaluation")) {
    for (const json& m : r["evaluation"]["models"]) {
      absl::StrAppend(&out, "  ", Str(m, "label"), ": perplexity ", Num(m, "perplexity", FormatPerplexity),
                      ", KL to teacher ", Num(m, "kl_to_teacher", FormatLoss), ", top-1 agreement ",
                      m.contains("top1_agreement") ? Pct(m["top1_agreement"].get<double>()) : "-", "\n");
    }
  }
  if (!job_dir.empty()) absl::StrAppend(&out, "  report: ", job_dir, "/report.html (also report.md, report.json)\n");
  return out;
}

}  // namespace topiary::report
