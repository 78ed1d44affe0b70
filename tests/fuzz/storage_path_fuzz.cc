// Fuzzes the storage-root resolver on a small tree built once: a root with a
// directory, a file, a link inside, a link outside, a dangling link and a
// link loop. The input is a path, absolute or made absolute under the tree.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/storage_path.h"

namespace {

std::string Tree() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/topiary-fuzz-XXXXXX";
    std::string d = mkdtemp(tmpl);
    std::string root = d + "/root";
    (void)!mkdir(root.c_str(), 0755);
    (void)!mkdir((root + "/models").c_str(), 0755);
    FILE* f = fopen((root + "/models/a.bin").c_str(), "w");
    if (f != nullptr) fclose(f);
    (void)!symlink("models", (root + "/in").c_str());
    (void)!symlink("/etc", (root + "/out").c_str());
    (void)!symlink("missing/deeper", (root + "/dangling").c_str());
    (void)!symlink("loop2", (root + "/loop1").c_str());
    (void)!symlink("loop1", (root + "/loop2").c_str());
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string path(reinterpret_cast<const char*>(data), size);
  if (path.find('\0') != std::string::npos) return 0;  // not a C path
  const std::string tree = Tree();
  if (path.empty() || path[0] != '/') path = tree + "/root/" + path;
  auto resolved = topiary::ResolvePath(path);
  if (resolved.ok() && (resolved->empty() || (*resolved)[0] != '/')) __builtin_trap();
  (void)topiary::CheckStoragePath(path, {tree + "/root"}, "fuzz");
  return 0;
}
