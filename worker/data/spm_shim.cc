// libtopiary_spm_shim.so: a C interface over SentencePiece, loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by spm_processor.cc.
//
// Why: Debian's libsentencepiece embeds and exports its own protobuf-lite
// (3.14), while libtorch links the system libprotobuf (3.21). Linked into one
// process they interpose each other's symbols and crash at start-up. Loaded
// locally with deep binding, SentencePiece keeps its own protobuf and the rest
// of the process never sees it.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

__attribute__((visibility("default"))) void* topiary_spm_load(const char* path, char* err, size_t err_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto st = sp->Load(path);
  if (!st.ok()) {
    std::string msg = st.ToString();
    std::strncpy(err, msg.c_str(), err_len - 1);
    err[err_len - 1] = '\0';
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void topiary_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

// Encodes into a malloc'd array the caller frees with free().
__attribute__((visibility("default"))) int topiary_spm_encode(void* handle, const char* text, size_t len, int** ids,
                                                              size_t* n) {
  std::vector<int> out;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &out);
  if (!st.ok()) return 1;
  *n = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.size() + 1)));
  if (*ids == nullptr) return 1;
  std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 0;
}

// Decodes into a malloc'd NUL-terminated string the caller frees with free().
__attribute__((visibility("default"))) int topiary_spm_decode(void* handle, const int* ids, size_t n, char** text) {
  std::string out;
  auto st = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!st.ok()) return 1;
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  if (*text == nullptr) return 1;
  std::memcpy(*text, out.c_str(), out.size() + 1);
  return 0;
}

__attribute__((visibility("default"))) int topiary_spm_info(void* handle, int what) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  switch (what) {
    case 0:
      return sp->GetPieceSize();
    case 1:
      return sp->bos_id();
    case 2:
      return sp->eos_id();
  }
  return -1;
}

}  // extern "C"
