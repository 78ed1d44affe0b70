#include "worker/data/tokenizer.h"

#include <gtest/gtest.h>

#include "testing/test_util.h"

namespace topiary::data {
namespace {

TEST(Tokenizer, BundledTokenizerRoundTrips) {
  auto tok = Tokenizer::Load(topiary::testing::SourceDir() + "/models/kjv-llama-8m/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 4096);
  EXPECT_EQ((*tok)->eos_id(), 2);
  std::string text = "In the beginning God created the heaven and the earth.";
  auto ids = (*tok)->Encode(text);
  EXPECT_GT(ids.size(), 5u);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ((*tok)->Decode(ids), text);
  // Byte fallback: characters never seen in training still round-trip.
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("naïve ☃")), "naïve ☃");
  auto docs = SplitDocuments("a b\nc\n\n\nd\n", TextFormat::kText);
  ASSERT_TRUE(docs.ok());
  EXPECT_EQ(*docs, (std::vector<std::string>{"a b c", "d"}));
  auto all = TokenizeDocuments(**tok, *docs);
  EXPECT_EQ(std::count(all.begin(), all.end(), (*tok)->eos_id()), 2);
}

TEST(Tokenizer, Errors) {
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer.model").status().code(), absl::StatusCode::kInvalidArgument);
  auto docs = SplitDocuments("{\"text\": \"ok\"}\n{\"txt\": 1}\n", TextFormat::kJsonl);
  EXPECT_EQ(docs.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(docs.status().message().find("line 2"), std::string::npos);
  auto good = SplitDocuments("{\"text\": \"one\"}\n\n{\"text\": \"two\"}", TextFormat::kJsonl);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->size(), 2u);
  EXPECT_FALSE(ParseTextFormat("xml").ok());
}

}  // namespace
}  // namespace topiary::data
