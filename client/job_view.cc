#include "client/job_view.h"

#include <chrono>
#include <ctime>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/units.h"

namespace topiary::cli {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Short(const std::string& name, const char* prefix) {
  std::string s = name;
  if (s.rfind(prefix, 0) == 0) s = s.substr(std::string(prefix).size());
  return s;
}

std::string Clock(int64_t micros) {
  if (micros <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(micros / 1000000);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

std::string Eta(double s) {
  if (!(s > 0)) return "-";
  if (s < 90) return absl::StrFormat("%.0fs", s);
  if (s < 5400) return absl::StrFormat("%.0fm", s / 60);
  return absl::StrFormat("%.1fh", s / 3600);
}

std::string ProgressText(const std::string& stage, const v1::Progress& p) {
  if (p.total_steps() <= 0) return absl::StrCat(stage, ": ", p.phase().empty() ? "running" : p.phase());
  return absl::StrFormat("%s step %d/%d  %s tokens  loss %.4f  %s tok/s%s  ETA %s", stage, p.step(), p.total_steps(),
                         FormatCount(static_cast<double>(p.tokens())), p.loss(), FormatCount(p.tokens_per_second()),
                         p.mfu() > 0 ? absl::StrFormat("  MFU %.2f", p.mfu()) : "", Eta(p.eta_seconds()));
}

std::string Bar(const std::string& stage, const v1::Progress& p) {
  if (p.total_steps() <= 0) return absl::StrCat("  ", stage, ": ", p.phase().empty() ? "running" : p.phase());
  const int width = 24;
  const int filled = static_cast<int>(width * std::min<double>(1.0, static_cast<double>(p.step()) / p.total_steps()));
  std::string bar;
  for (int i = 0; i < width; ++i) bar += i < filled ? "#" : "-";
  return absl::StrFormat("  %-12s [%s] %d/%d  %s tok/s  loss %.4f  ETA %s", stage, bar, p.step(), p.total_steps(),
                         FormatCount(p.tokens_per_second()), p.loss(), Eta(p.eta_seconds()));
}

}  // namespace

std::string JobStateName(v1::JobState s) { return Short(v1::JobState_Name(s), "JOB_"); }

std::string EventLine(const v1::Event& e) {
  std::string what;
  if (e.kind() == v1::EVENT_KIND_JOB_STATE) {
    what = absl::StrCat("job ", JobStateName(e.job_state()));
  } else if (e.kind() == v1::EVENT_KIND_STAGE_STATE) {
    what = absl::StrCat("stage ", e.stage(), " ", Short(v1::StageState_Name(e.stage_state()), "STAGE_"));
  } else if (e.kind() == v1::EVENT_KIND_TASK_STATE) {
    what = absl::StrCat("task ", e.task_id(), " ", Short(v1::TaskState_Name(e.task_state()), "TASK_"));
  } else if (e.kind() == v1::EVENT_KIND_PROGRESS) {
    what = ProgressText(e.stage(), e.progress());
  } else {
    what = v1::EventKind_Name(e.kind());
  }
  return absl::StrFormat("[%s] #%d %s%s", Clock(e.time_micros()), e.seq(), what,
                         e.message().empty() ? "" : absl::StrCat("  (", e.message(), ")"));
}

void JobView::Erase() {
  if (drawn_ > 0) std::fprintf(out_, "\033[%dF\033[J", drawn_);
  drawn_ = 0;
}

void JobView::Draw() {
  for (const auto& [stage, p] : running_) {
    std::fprintf(out_, "%s\n", Bar(stage, p).c_str());
    ++drawn_;
  }
}

void JobView::Show(const v1::WatchJobResponse& r) {
  if (r.has_job()) {
    Erase();
    std::fprintf(out_, "job %s (%s): %s\n", r.job().id().c_str(), r.job().spec().name().c_str(),
                 JobStateName(r.job().state()).c_str());
    Draw();
    std::fflush(out_);
    return;
  }
  const v1::Event& e = r.event();
  if (e.kind() == v1::EVENT_KIND_PROGRESS) {
    if (tty_) {
      Erase();
      running_[e.stage()] = e.progress();
      Draw();
    } else {
      const v1::Progress& p = e.progress();
      const int64_t now = NowMs();
      const bool phase_changed = last_phase_[e.stage()] != p.phase();
      last_phase_[e.stage()] = p.phase();
      if (phase_changed || now - last_printed_ms_[e.stage()] >= 5000 ||
          (p.total_steps() > 0 && p.step() == p.total_steps())) {
        std::fprintf(out_, "%s\n", EventLine(e).c_str());
        last_printed_ms_[e.stage()] = now;
      }
    }
    std::fflush(out_);
    return;
  }
  Erase();
  if (e.kind() == v1::EVENT_KIND_STAGE_STATE && e.stage_state() != v1::STAGE_RUNNING) running_.erase(e.stage());
  std::fprintf(out_, "%s\n", EventLine(e).c_str());
  if (tty_) Draw();
  std::fflush(out_);
}

void JobView::Close() {
  Erase();
  running_.clear();
  std::fflush(out_);
}

absl::StatusOr<v1::JobState> StreamJob(v1::JobService::Stub& stub, const ContextFactory& make_ctx,
                                       const std::string& id, int64_t from_seq, const StreamSink& sink) {
  int64_t after = from_seq;
  int failures = 0;
  for (;;) {
    v1::WatchJobRequest req;
    req.set_id(id);
    req.set_from_seq(after);
    auto ctx = make_ctx();
    auto reader = stub.WatchJob(ctx.get(), req);
    v1::WatchJobResponse r;
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    bool first = true;
    while (reader->Read(&r)) {
      failures = 0;
      if (r.has_job()) {
        state = r.job().state();
        if (first && after == from_seq) sink(r);  // the job once, not again after a reconnect
        first = false;
        continue;
      }
      after = r.event().seq();
      if (r.event().kind() == v1::EVENT_KIND_JOB_STATE) state = r.event().job_state();
      sink(r);
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) return state;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE || ++failures > 20) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250 * std::min(failures, 8)));
  }
}

}  // namespace topiary::cli
