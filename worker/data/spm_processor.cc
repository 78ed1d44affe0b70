// Loads libtopiary_spm_shim.so (see spm_shim.cc for why) and forwards to it.
#include "worker/data/spm_processor.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

namespace topiary::data {
namespace {

struct Shim {
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free_handle)(void*) = nullptr;
  int (*encode)(void*, const char*, size_t, int**, size_t*) = nullptr;
  int (*decode)(void*, const int*, size_t, char**) = nullptr;
  int (*info)(void*, int) = nullptr;
  std::string error;
};

std::string ExeDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

// Candidates: $TOPIARY_SPM_SHIM, then lib/ beside bin/, then the exe's folder.
const Shim& GetShim() {
  static Shim shim;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TOPIARY_SPM_SHIM"); env && *env) candidates.push_back(env);
    std::string dir = ExeDir();
    candidates.push_back(dir + "/../lib/libtopiary_spm_shim.so");
    candidates.push_back(dir + "/libtopiary_spm_shim.so");
    void* lib = nullptr;
    for (const std::string& c : candidates) {
      lib = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (lib) break;
      const char* e = ::dlerror();
      shim.error += c + ": " + (e ? e : "not loadable") + "; ";
    }
    if (!lib) return;
    shim.load = reinterpret_cast<decltype(shim.load)>(::dlsym(lib, "topiary_spm_load"));
    shim.free_handle = reinterpret_cast<decltype(shim.free_handle)>(::dlsym(lib, "topiary_spm_free"));
    shim.encode = reinterpret_cast<decltype(shim.encode)>(::dlsym(lib, "topiary_spm_encode"));
    shim.decode = reinterpret_cast<decltype(shim.decode)>(::dlsym(lib, "topiary_spm_decode"));
    shim.info = reinterpret_cast<decltype(shim.info)>(::dlsym(lib, "topiary_spm_info"));
    if (!shim.load || !shim.free_handle || !shim.encode || !shim.decode || !shim.info) {
      shim.load = nullptr;
      shim.error = "libtopiary_spm_shim.so lacks its entry points";
    }
  });
  return shim;
}

}  // namespace

struct SpmProcessor::Impl {
  void* handle = nullptr;
};

SpmProcessor::SpmProcessor() : impl_(std::make_unique<Impl>()) {}

SpmProcessor::~SpmProcessor() {
  if (impl_->handle) GetShim().free_handle(impl_->handle);
}

std::string SpmProcessor::Load(const std::string& path) {
  const Shim& shim = GetShim();
  if (!shim.load) return "cannot load the SentencePiece shim: " + shim.error;
  char err[512] = {0};
  impl_->handle = shim.load(path.c_str(), err, sizeof(err));
  return impl_->handle ? std::string() : std::string(err);
}

std::vector<int64_t> SpmProcessor::Encode(const std::string& text) const {
  int* ids = nullptr;
  size_t n = 0;
  if (GetShim().encode(impl_->handle, text.data(), text.size(), &ids, &n) != 0) return {};
  std::vector<int64_t> out(ids, ids + n);
  std::free(ids);
  return out;
}

std::string SpmProcessor::Decode(const std::vector<int>& ids) const {
  char* text = nullptr;
  if (GetShim().decode(impl_->handle, ids.data(), ids.size(), &text) != 0) return {};
  std::string out(text);
  std::free(text);
  return out;
}

int64_t SpmProcessor::vocab_size() const { return GetShim().info(impl_->handle, 0); }
int64_t SpmProcessor::bos_id() const { return GetShim().info(impl_->handle, 1); }
int64_t SpmProcessor::eos_id() const { return GetShim().info(impl_->handle, 2); }

}  // namespace topiary::data
