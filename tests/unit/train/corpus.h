// A token corpus with structure to learn, for training tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "testing/test_util.h"
#include "worker/data/token_file.h"

namespace topiary::train {

// Repeating runs of ids: 4000 tokens of vocabulary `vocab`.
inline std::unique_ptr<data::TokenFile> MakeCorpus(const testing::TempDir& dir, int64_t vocab) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 4000; ++i) ids.push_back((i * 7 + (i / 13)) % vocab);
  EXPECT_TRUE(data::WriteTokenFile(dir.File("c.bin"), ids, data::TokenFormat::kU16).ok());
  return std::move(*data::TokenFile::Open(dir.File("c.bin"), data::TokenFormat::kU16, vocab));
}

}  // namespace topiary::train
