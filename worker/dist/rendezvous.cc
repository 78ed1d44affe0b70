#include "worker/dist/rendezvous.h"

#include <algorithm>
#include <cctype>
#include <thread>

#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace topiary::dist {
namespace {

std::string EscapeKey(absl::string_view key) {
  std::string out;
  for (unsigned char ch : key) {
    if (std::isalnum(ch) || ch == '.' || ch == '_' || ch == '-') {
      out.push_back(static_cast<char>(ch));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", ch);
    }
  }
  return out.empty() || out[0] == '.' ? "%" + out : out;  // never "", ".", ".." or hidden
}

class FileRendezvous : public Rendezvous {
 public:
  explicit FileRendezvous(std::string dir) : dir_(std::move(dir)) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    return WriteFileAtomically(Path(key), value);
  }

  absl::StatusOr<std::optional<std::string>> TryGet(absl::string_view key) override {
    absl::StatusOr<std::string> v = ReadFileToString(Path(key), size_t{64} << 20);
    if (absl::IsNotFound(v.status())) return std::optional<std::string>();
    if (!v.ok()) return v.status();
    return std::optional<std::string>(*std::move(v));
  }

 private:
  std::string Path(absl::string_view key) const { return absl::StrCat(dir_, "/", EscapeKey(key)); }
  const std::string dir_;
};

}  // namespace

absl::StatusOr<std::string> WaitGet(Rendezvous& r, absl::string_view key, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(1);
  while (true) {
    ASSIGN_OR_RETURN(std::optional<std::string> v, r.TryGet(key));
    if (v.has_value()) return *std::move(v);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("rendezvous: key '", key, "' was not published within ",
                                                      absl::FormatDuration(timeout), " (is every rank running?)"));
    }
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(std::min(pause, deadline - absl::Now())));
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
}

absl::StatusOr<std::unique_ptr<Rendezvous>> OpenFileRendezvous(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("rendezvous: empty directory");
  RETURN_IF_ERROR(MakeDirs(dir));
  return std::unique_ptr<Rendezvous>(new FileRendezvous(dir));
}

absl::StatusOr<std::unique_ptr<Rendezvous>> OpenRendezvous(absl::string_view spec) {
  if (absl::ConsumePrefix(&spec, "file:")) return OpenFileRendezvous(std::string(spec));
  return absl::InvalidArgumentError(absl::StrCat("--rendezvous: expected file:DIR, got '", spec, "'"));
}

}  // namespace topiary::dist
