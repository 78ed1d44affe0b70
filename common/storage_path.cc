#include "common/storage_path.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <deque>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace topiary {
namespace {

absl::Status Bad(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

void PushComponents(absl::string_view path, std::deque<std::string>* todo) {
  std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo->push_front(*it);
}

bool Under(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || absl::StartsWith(path, root + "/");
}

}  // namespace

absl::StatusOr<std::string> ResolvePath(const std::string& path) {
  if (path.empty() || path[0] != '/') return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not absolute"));
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat("path longer than ", kMaxPathBytes, " bytes"));
  }
  std::deque<std::string> todo;
  PushComponents(path, &todo);
  std::string cur;       // resolved so far; "" is the root
  bool missing = false;  // once a component does not exist, the rest is lexical
  int links = 0;
  while (!todo.empty()) {
    const std::string c = std::move(todo.front());
    todo.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      const size_t slash = cur.rfind('/');
      cur = slash == std::string::npos ? "" : cur.substr(0, slash);
      continue;
    }
    std::string next = absl::StrCat(cur, "/", c);
    if (next.size() > kMaxPathBytes) return absl::InvalidArgumentError("path too long once resolved");
    if (!missing) {
      struct stat st;
      if (lstat(next.c_str(), &st) != 0) {
        if (errno != ENOENT && errno != ENOTDIR) {
          return absl::InvalidArgumentError(absl::StrCat("cannot inspect ", next, ": ", strerror(errno)));
        }
        missing = true;
      } else if (S_ISLNK(st.st_mode)) {
        if (++links > 40) return absl::InvalidArgumentError("too many levels of symbolic links");
        char buf[kMaxPathBytes + 1];
        const ssize_t n = readlink(next.c_str(), buf, kMaxPathBytes);
        if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot read link ", next, ": ", strerror(errno)));
        const std::string target(buf, static_cast<size_t>(n));
        if (!target.empty() && target[0] == '/') cur.clear();
        PushComponents(target, &todo);
        if (todo.size() > kMaxPathBytes) return absl::InvalidArgumentError("path too long once resolved");
        continue;
      }
    }
    cur = std::move(next);
  }
  return cur.empty() ? std::string("/") : cur;
}

absl::Status CheckStoragePath(const std::string& path, const std::vector<std::string>& roots,
                              const std::string& field) {
  if (path.empty()) return Bad(field, "required");
  if (path.size() > kMaxPathBytes) return Bad(field, absl::StrCat("longer than ", kMaxPathBytes, " bytes"));
  if (path[0] != '/') return Bad(field, absl::StrCat("'", path, "' is not an absolute path"));
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return Bad(field, absl::StrCat("'", path, "' contains '..'"));
  }
  if (roots.empty()) return Bad(field, "no storage root is configured");
  absl::StatusOr<std::string> resolved = ResolvePath(path);
  if (!resolved.ok()) return Bad(field, resolved.status().message());
  for (const std::string& root : roots) {
    absl::StatusOr<std::string> r = ResolvePath(root);
    if (r.ok() && Under(*resolved, *r)) return absl::OkStatus();
  }
  return Bad(field,
             absl::StrCat("'", path, "'", *resolved != path ? absl::StrCat(" (resolves to ", *resolved, ")") : "",
                          " is outside the storage roots"));
}

}  // namespace topiary
