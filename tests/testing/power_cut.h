// A power cut for tests of a killed process: every regular file under a
// directory is cut back to what had reached the disk, as recorded by the
// LD_PRELOAD journal of tests/tools/sync_journal.cc (what a file held when it
// was last fsync'd, followed through renames). kill -9 alone loses nothing the
// kernel already has, synced or not; this loses what a machine that lost power
// would.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace topiary::testing {

// The files under `dir` and their sizes, made durable first (sync(2)): what
// a journaled process started now finds on disk.
inline std::map<std::string, int64_t> DurableBaseline(const std::string& dir) {
  sync();
  std::map<std::string, int64_t> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) {
      out[std::filesystem::canonical(e.path()).string()] = static_cast<int64_t>(e.file_size());
    }
  }
  return out;
}

struct PowerCutResult {
  int files_cut = 0;
  int64_t bytes_dropped = 0;
};

// Truncates each regular file under `dir` to its durable size: the size at
// its newest journaled sync (carried along renames), else its `baseline`
// size, else 0 (written but never synced).
inline PowerCutResult PowerCut(const std::string& dir, const std::string& journal,
                               std::map<std::string, int64_t> durable) {
  std::ifstream in(journal);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > 2 && line[0] == 'S') {
      const size_t space = line.find(' ', 2);
      if (space == std::string::npos) continue;
      durable[line.substr(space + 1)] = std::stoll(line.substr(2, space - 2));
    } else if (line.size() > 2 && line[0] == 'R') {
      const size_t tab = line.find('\t');
      if (tab == std::string::npos) continue;
      const std::string from = line.substr(2, tab - 2), to = line.substr(tab + 1);
      auto it = durable.find(from);
      if (it != durable.end()) {
        durable[to] = it->second;
        durable.erase(from);
      } else {
        durable.erase(to);  // the new name's content never reached the disk
      }
    }
  }
  PowerCutResult r;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string path = std::filesystem::canonical(e.path()).string();
    const int64_t size = static_cast<int64_t>(e.file_size());
    auto it = durable.find(path);
    const int64_t keep = it == durable.end() ? 0 : std::min(it->second, size);
    if (keep < size) {
      std::filesystem::resize_file(e.path(), static_cast<uintmax_t>(keep));
      ++r.files_cut;
      r.bytes_dropped += size - keep;
    }
  }
  return r;
}

}  // namespace topiary::testing
