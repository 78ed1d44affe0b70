#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "common/file_util.h"
#include "testing/test_util.h"

namespace topiary::model {
namespace {

using topiary::testing::TempDir;

// Writes a raw safetensors file: header length, header text, data bytes.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header;
  f << std::string(data_bytes, '\0');
}

absl::Status OpenStatus(const std::string& path) { return SafetensorsFile::Open(path).status(); }

TEST(Safetensors, WriterReaderRoundTrip) {
  TempDir dir;
  std::string path = dir.File("a.safetensors");
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t b[2] = {0x3f80, 0x4000};  // bf16 1.0, 2.0
  auto w = SafetensorsWriter::Create(path, {{"a", DType::kF32, {2, 3}}, {"b", DType::kBF16, {2}}}, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->WriteNext(a, sizeof(a)).ok());
  EXPECT_FALSE((*w)->Finish().ok());  // b is missing
  ASSERT_TRUE((*w)->WriteNext(b, sizeof(b)).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 2u);
  const TensorInfo* ta = (*f)->Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp((*f)->Data(*ta), a, sizeof(a)), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->Data(*ta)) % 8, 0u);  // data section is aligned
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->Find("missing"), nullptr);
}

TEST(Safetensors, WriterRejectsWrongSizes) {
  TempDir dir;
  auto w = SafetensorsWriter::Create(dir.File("x.safetensors"), {{"a", DType::kF32, {4}}});
  ASSERT_TRUE(w.ok());
  float a[3] = {};
  EXPECT_EQ((*w)->WriteNext(a, sizeof(a)).code(), absl::StatusCode::kInvalidArgument);
}

// In pieces (here 7 bytes of a 100-byte tensor, the last piece shorter; the
// fill of one piece overlaps the write of the other): the same file as one
// write. A size that is not the declared one is refused.
TEST(Safetensors, WriterInPiecesEqualsOneWrite) {
  TempDir dir;
  uint8_t bytes[100];
  for (int i = 0; i < 100; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  const std::vector<SafetensorsWriter::Decl> decls = {{"a", DType::kBF16, {50}}, {"b", DType::kBF16, {50}}};
  auto whole = SafetensorsWriter::Create(dir.File("whole.safetensors"), decls);
  auto pieces = SafetensorsWriter::Create(dir.File("pieces.safetensors"), decls);
  ASSERT_TRUE(whole.ok() && pieces.ok());
  std::vector<std::pair<size_t, size_t>> asked;
  auto fill = [&](uint8_t* buf, size_t offset, size_t len) {
    asked.emplace_back(offset, len);
    std::memcpy(buf, bytes + offset, len);
  };
  for (int t = 0; t < 2; ++t) {
    ASSERT_TRUE((*whole)->WriteNext(bytes, sizeof(bytes)).ok());
    ASSERT_TRUE((*pieces)->WriteNextInPieces(sizeof(bytes), 7, fill).ok());
  }
  ASSERT_EQ(asked.size(), 2 * 15u);
  EXPECT_EQ(asked[14], (std::pair<size_t, size_t>{98, 2}));
  EXPECT_EQ((*pieces)->WriteNextInPieces(sizeof(bytes), 7, fill).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*whole)->Finish().ok());
  ASSERT_TRUE((*pieces)->Finish().ok());
  EXPECT_EQ(*ReadFileToString(dir.File("whole.safetensors")), *ReadFileToString(dir.File("pieces.safetensors")));
  auto wrong = SafetensorsWriter::Create(dir.File("x.safetensors"), {{"a", DType::kBF16, {50}}});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ((*wrong)->WriteNextInPieces(99, 7, fill).code(), absl::StatusCode::kInvalidArgument);
}

// Pages of [p, p + n) in the page cache.
size_t ResidentPages(const void* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) / page * page;
  std::vector<unsigned char> in((reinterpret_cast<uintptr_t>(p) + n - a + page - 1) / page);
  if (::mincore(reinterpret_cast<void*>(a), in.size() * page, in.data()) != 0) return 0;
  size_t resident = 0;
  for (unsigned char c : in) resident += c & 1;
  return resident;
}

// A source in the page cache is read from it; one that is not is read direct
// from disk and stays out of the cache. Either way every byte, at offsets and
// lengths that are not block-aligned, up to the end of the file.
TEST(Safetensors, MappedReaderReadsCachedSourcesCachedAndColdOnesDirect) {
  TempDir dir;
  const std::string path = dir.File("m.safetensors");
  const size_t n = 3 << 20;
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 131 + i / 4099);
  auto w = SafetensorsWriter::Create(path, {{"an_odd_name_x", DType::kBF16, {static_cast<int64_t>(n / 2)}}});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->WriteNext(bytes.data(), n).ok());
  ASSERT_TRUE((*w)->Finish().ok());  // fsynced: its pages are clean and can be dropped
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  const uint8_t* data = (*f)->Data(*(*f)->Find("an_odd_name_x"));
  ASSERT_NE(reinterpret_cast<uintptr_t>(data) % 512, 0u) << "the test wants data that is not block-aligned";
  const std::vector<std::pair<size_t, size_t>> ranges = {{0, 1}, {5, 100000}, {4093, 8200}, {n - 777, 777}, {0, n}};
  auto check = [&](MappedReader& reader) {
    reader.Begin(data, n);
    for (auto [offset, len] : ranges) {
      const uint8_t* got = reader.Read(data + offset, len);
      ASSERT_NE(got, nullptr) << offset;
      EXPECT_EQ(std::memcmp(got, bytes.data() + offset, len), 0) << offset << "+" << len;
    }
  };
  MappedReader warm(n);
  ASSERT_TRUE(ReadFileToString(path).ok());  // in the cache
  check(warm);
  EXPECT_EQ(warm.direct_reads(), 0);

  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
  // (The pages the header shares with the data stay: parsing it mapped them.)
  const size_t left = ResidentPages(data, n);
  ASSERT_LT(left, n / 4096 / 8) << "could not drop the file from the page cache";
  MappedReader cold(n);
  check(cold);
  const int direct = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  void* block = std::aligned_alloc(4096, 4096);
  const bool direct_works = direct >= 0 && ::pread(direct, block, 4096, 0) > 0;
  std::free(block);
  if (direct >= 0) ::close(direct);
  if (!direct_works) GTEST_SKIP() << "this file system refuses O_DIRECT: the reader read through the cache";
  EXPECT_EQ(cold.direct_reads(), static_cast<int64_t>(ranges.size()));
  EXPECT_EQ(ResidentPages(data, n), left) << "a direct read filled the page cache";

  // Outside every mapping, or longer than the buffer: nothing.
  EXPECT_EQ(cold.Read(bytes.data(), 10), nullptr);
  EXPECT_EQ(cold.Read(data, n + 1), nullptr);
}

struct BadCase {
  const char* name;
  std::string header;
  size_t data_bytes;
  int64_t claimed_len;
  const char* expect;  // a phrase the error must contain
};

TEST(Safetensors, RefusesMalformedFiles) {
  TempDir dir;
  const std::string ok_entry = R"("w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]})";
  std::vector<BadCase> cases = {
      {"header longer than file", "{" + ok_entry + "}", 16, 1 << 20, "larger than the file"},
      {"absurd header", "{}", 0, int64_t{200} << 20, "100 MB"},
      {"invalid json", "{\"w\": [", 16, -1, "not valid JSON"},
      {"not an object", "[1, 2]", 0, -1, "not a JSON object"},
      {"unknown dtype", R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2, -1, "unsupported dtype"},
      {"offsets outside data", R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})", 8, -1,
       "not within the file bounds"},
      {"size mismatch", R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})", 16, -1, "need 24"},
      {"begin after end", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", 16, -1, "begin > end"},
      {"overlap",
       R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
       16, -1, "overlapping"},
      {"negative shape", R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, -1, "non-negative"},
      {"missing offsets", R"({"w": {"dtype": "F32", "shape": [1]}})", 4, -1, "data_offsets"},
      {"bad metadata", R"({"__metadata__": {"a": 1}})", 0, -1, "__metadata__"},
  };
  for (const BadCase& c : cases) {
    std::string path = dir.File("bad.safetensors");
    WriteRaw(path, c.header, c.data_bytes, c.claimed_len);
    absl::Status st = OpenStatus(path);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << st;
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << c.name << ": " << st.message();
    EXPECT_NE(st.message().find(path), std::string::npos) << c.name << ": the error names the file";
  }
  // Shorter than the length prefix.
  std::ofstream(dir.File("tiny.safetensors")) << "abc";
  EXPECT_EQ(OpenStatus(dir.File("tiny.safetensors")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenStatus(dir.File("absent.safetensors")).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace topiary::model
