#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "testing/page_cache.h"
#include "testing/test_util.h"

namespace topiary::model {
namespace {

using topiary::testing::DirectWritesWork;
using topiary::testing::FilePagesCached;
using topiary::testing::ResidentPages;
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

// Written direct, whole and in pieces of sizes that are not multiples of the
// block size (so every block boundary falls inside a piece, a tensor or the
// header): byte for byte the file the cached writer writes, and none of it
// but its last partial block left in the page cache.
TEST(Safetensors, DirectWriterWritesTheSameFileAndLeavesItOutOfTheCache) {
  TempDir dir;
  const std::vector<SafetensorsWriter::Decl> decls = {{"a_tensor_with_an_odd_name", DType::kBF16, {12345}},
                                                      {"b", DType::kF32, {300001}},
                                                      {"c", DType::kBF16, {2500000}},
                                                      {"d", DType::kF32, {2300007}}};
  std::vector<std::vector<uint8_t>> data;
  for (const auto& d : decls) {
    std::vector<uint8_t> v(static_cast<size_t>(d.shape[0]) * DTypeSize(d.dtype));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i * 31 + i / 4093 + data.size());
    data.push_back(std::move(v));
  }
  auto write = [&](const std::string& path, bool direct) {
    auto w = SafetensorsWriter::Create(path, decls, {{"format", "pt"}}, /*durable=*/false, direct);
    ASSERT_TRUE(w.ok()) << w.status();
    auto fill_from = [&](const std::vector<uint8_t>& v) {
      return [&v](uint8_t* buf, size_t offset, size_t len) { std::memcpy(buf, v.data() + offset, len); };
    };
    ASSERT_TRUE((*w)->WriteNext(data[0].data(), data[0].size()).ok());
    ASSERT_TRUE((*w)->WriteNextInPieces(data[1].size(), 65537, fill_from(data[1])).ok());
    ASSERT_TRUE((*w)->WriteNextInPieces(data[2].size(), (1 << 20) + 6, fill_from(data[2])).ok());
    ASSERT_TRUE((*w)->WriteNext(data[3].data(), data[3].size()).ok());  // longer than one copy buffer
    if (direct && DirectWritesWork(dir.path())) {
      EXPECT_TRUE((*w)->writing_direct());
    }
    EXPECT_FALSE(!direct && (*w)->writing_direct());
    ASSERT_TRUE((*w)->Finish().ok());
  };
  write(dir.File("cached.safetensors"), false);
  write(dir.File("direct.safetensors"), true);
  const std::string cached = *ReadFileToString(dir.File("cached.safetensors"));
  EXPECT_GT(cached.size() % 4096, 0u) << "the test wants a last partial block";
  EXPECT_GT(FilePagesCached(dir.File("cached.safetensors")), cached.size() / 4096 / 2) << "the probe sees no cache";
  if (DirectWritesWork(dir.path())) {
    EXPECT_LE(FilePagesCached(dir.File("direct.safetensors")), 1u) << "direct writes went through the page cache";
  }
  EXPECT_TRUE(*ReadFileToString(dir.File("direct.safetensors")) == cached) << "the direct writer wrote other bytes";
  auto f = SafetensorsFile::Open(dir.File("direct.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  for (size_t k = 0; k < decls.size(); ++k) {
    EXPECT_EQ(std::memcmp((*f)->Data(*(*f)->Find(decls[k].name)), data[k].data(), data[k].size()), 0) << k;
  }
}

// The smaps fields of the mapping that holds `p` (none when none does).
std::map<std::string, std::string> SmapsOf(const void* p) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  std::ifstream in("/proc/self/smaps");
  std::map<std::string, std::string> fields;
  bool found = false;
  for (std::string line; std::getline(in, line);) {
    const size_t dash = line.find('-'), colon = line.find(':');
    if (dash != std::string::npos && dash < line.find(' ') && (colon == std::string::npos || colon > dash)) {
      if (found) break;  // the next mapping
      char* end = nullptr;
      const uintptr_t lo = std::strtoull(line.c_str(), &end, 16), hi = std::strtoull(end + 1, nullptr, 16);
      found = lo <= at && at < hi;
    } else if (found && colon != std::string::npos) {
      const size_t v = line.find_first_not_of(' ', colon + 1);
      fields[line.substr(0, colon)] = v == std::string::npos ? "" : line.substr(v);
    }
  }
  return fields;
}

// Staging memory is whole huge pages, 2 MiB-aligned, advised for
// transparent huge pages (where the kernel offers them at all), and given
// back when the buffer goes; moved, it changes owner without a copy.
TEST(Safetensors, StagingBuffersAreHugePageAligned) {
  StagingBuffer b((4 << 20) + 8192);
  ASSERT_NE(b.get(), nullptr);
  EXPECT_EQ(b.size(), size_t{6} << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % (2 << 20), 0u);
  std::memset(b.get(), 7, b.size());
  std::string thp;
  std::getline(std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled"), thp);
  if (!thp.empty() && thp.find("[never]") == std::string::npos) {
    EXPECT_EQ(SmapsOf(b.get())["THPeligible"], "1") << "not advised for huge pages (THP: " << thp << ")";
  }
  uint8_t* at = b.get();
  StagingBuffer moved = std::move(b);
  EXPECT_EQ(moved.get(), at);
  EXPECT_EQ(b.get(), nullptr);
  moved = StagingBuffer();
  EXPECT_TRUE(SmapsOf(at).empty()) << "still mapped";
}

// A source in the page cache is read from it; one that is not is read direct
// from disk and stays out of the cache. Either way every byte, at offsets and
// lengths that are not block-aligned, up to the end of the file.
TEST(Safetensors, ReadAheadReadsCachedSourcesCachedAndColdOnesDirect) {
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
  // Two slots for five ranges: slots are reused while later ranges are read.
  auto check = [&](ReadAhead& reader) {
    ASSERT_TRUE(reader.Begin(data, n));
    for (auto [offset, len] : ranges) reader.Queue(data + offset, len);
    for (auto [offset, len] : ranges) {
      const uint8_t* got = reader.Take();
      ASSERT_NE(got, nullptr) << offset;
      EXPECT_EQ(std::memcmp(got, bytes.data() + offset, len), 0) << offset << "+" << len;
    }
    EXPECT_EQ(reader.Take(), nullptr) << "nothing more is queued";
  };
  ReadAhead warm(n, 2, 2);
  ASSERT_TRUE(ReadFileToString(path).ok());  // in the cache
  check(warm);
  EXPECT_EQ(warm.direct_reads(), 0);

  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
  // (The pages the header shares with the data stay: parsing it mapped them.)
  const size_t left = ResidentPages(data, n);
  ASSERT_LT(left, n / 4096 / 8) << "could not drop the file from the page cache";
  ReadAhead cold(n, 2, 2);
  check(cold);
  const int direct = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  void* block = std::aligned_alloc(4096, 4096);
  const bool direct_works = direct >= 0 && ::pread(direct, block, 4096, 0) > 0;
  std::free(block);
  if (direct >= 0) ::close(direct);
  if (!direct_works) GTEST_SKIP() << "this file system refuses O_DIRECT: the reader read through the cache";
  EXPECT_EQ(cold.direct_reads(), static_cast<int64_t>(ranges.size()));
  EXPECT_EQ(ResidentPages(data, n), left) << "a direct read filled the page cache";

  // Outside the source's mapping, or longer than a buffer: queued as failed,
  // in their place among the others.
  cold.Queue(bytes.data(), 10);
  cold.Queue(data + 7, 9);
  cold.Queue(data, n + 1);
  EXPECT_EQ(cold.Take(), nullptr);
  const uint8_t* got = cold.Take();
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(std::memcmp(got, bytes.data() + 7, 9), 0);
  EXPECT_EQ(cold.Take(), nullptr);
  EXPECT_FALSE(cold.Begin(bytes.data(), 10)) << "not a mapped source";
}

// Many ranges through few slots and several readers, queued while earlier
// ones are taken, across two sources (one cached, one read direct): each
// taken in queue order with its own bytes.
TEST(Safetensors, ReadAheadHandsOutRangesInQueueOrder) {
  TempDir dir;
  const size_t n = 1 << 20;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::vector<std::vector<uint8_t>> bytes(2, std::vector<uint8_t>(n));
  for (int k = 0; k < 2; ++k) {
    for (size_t i = 0; i < n; ++i) bytes[k][i] = static_cast<uint8_t>(i * 7 + i / 1001 + 50 * k);
    const std::string path = dir.File(absl::StrCat("f", k, ".safetensors"));
    auto w = SafetensorsWriter::Create(path, {{"t", DType::kBF16, {static_cast<int64_t>(n / 2)}}});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->WriteNext(bytes[k].data(), n).ok());
    ASSERT_TRUE((*w)->Finish().ok());
    if (k == 1) {
      ASSERT_TRUE(topiary::testing::DropFromPageCache(path));
    }
    auto f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok());
    files.push_back(std::move(*f));
  }
  ReadAhead ahead(64 << 10, 3, 3);
  std::vector<std::pair<int, size_t>> queued;  // (source, offset), in queue order
  size_t next = 0;
  auto queue_some = [&](int k, int count) {
    const uint8_t* data = files[k]->Data(*files[k]->Find("t"));
    ASSERT_TRUE(ahead.Begin(data, n));
    for (int i = 0; i < count; ++i) {
      const size_t offset = (static_cast<size_t>(i) * 40009 + 17 * k) % (n - 5000);
      ahead.Queue(data + offset, 5000);
      queued.emplace_back(k, offset);
    }
  };
  auto take_some = [&](size_t count) {
    for (size_t i = 0; i < count && next < queued.size(); ++i, ++next) {
      const uint8_t* got = ahead.Take();
      ASSERT_NE(got, nullptr) << next;
      auto [k, offset] = queued[next];
      ASSERT_EQ(std::memcmp(got, bytes[k].data() + offset, 5000), 0) << "range " << next;
    }
  };
  queue_some(0, 40);
  take_some(25);
  queue_some(1, 60);
  take_some(50);
  queue_some(0, 30);
  take_some(1000);
  EXPECT_EQ(next, 130u);
  EXPECT_EQ(ahead.Take(), nullptr);
}

// Ranges queued as failed are taken (as nullptr) at once, maybe before the
// reader, waiting for a slot, has passed them: the reads queued after them
// still come right.
TEST(Safetensors, ReadAheadSkipsRangesQueuedAsFailed) {
  TempDir dir;
  const size_t n = 1 << 20;
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 13 + i / 999);
  const std::string path = dir.File("f.safetensors");
  auto w = SafetensorsWriter::Create(path, {{"t", DType::kBF16, {static_cast<int64_t>(n / 2)}}});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->WriteNext(bytes.data(), n).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok());
  const uint8_t* data = (*f)->Data(*(*f)->Find("t"));
  ReadAhead ahead(4096, 1, 1);
  std::vector<uint8_t> outside(16);
  for (int round = 0; round < 300; ++round) {
    ASSERT_TRUE(ahead.Begin(data, n));
    const size_t a = (round * 3001) % (n - 4096), b = (round * 7919 + 5) % (n - 4096);
    ahead.Queue(data + a, 4096);
    for (int k = 0; k < 3; ++k) ahead.Queue(outside.data(), outside.size());
    ahead.Queue(data + b, 4096);
    const uint8_t* got = ahead.Take();
    ASSERT_NE(got, nullptr);
    ASSERT_EQ(std::memcmp(got, bytes.data() + a, 4096), 0) << round;
    for (int k = 0; k < 3; ++k) ASSERT_EQ(ahead.Take(), nullptr) << round;
    got = ahead.Take();
    ASSERT_NE(got, nullptr) << round;
    ASSERT_EQ(std::memcmp(got, bytes.data() + b, 4096), 0) << round;
  }
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
