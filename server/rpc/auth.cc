#include "server/rpc/auth.h"

#include <openssl/sha.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"

namespace topiary::server {
namespace {

std::string Digest(absl::string_view token) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof(d));
}

}  // namespace

absl::StatusOr<Authenticator> Authenticator::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path, 1 << 20);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("--tokens: ", text.status().message()));
  Authenticator a;
  a.enabled_ = true;
  int n = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++n;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: ", path, ":", n, ": ", what));
    };
    if (f.size() != 3) return bad("want TOKEN PRINCIPAL ROLE");
    Principal p;
    p.name = f[1];
    if (f[2] == "user")
      p.role = Principal::Role::kUser;
    else if (f[2] == "admin")
      p.role = Principal::Role::kAdmin;
    else if (f[2] == "worker")
      p.role = Principal::Role::kWorker;
    else
      return bad(absl::StrCat("role '", f[2], "' is not user, admin or worker"));
    if (f[0].size() < 16) return bad("token shorter than 16 characters");
    if (!a.tokens_.emplace(Digest(f[0]), p).second) return bad("token given twice");
  }
  if (a.tokens_.empty()) return absl::InvalidArgumentError(absl::StrCat("--tokens: ", path, ": no tokens"));
  return a;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const std::optional<std::string>& header) const {
  if (!enabled_) return Principal{"anonymous", Principal::Role::kAdmin};
  if (!header.has_value()) return absl::UnauthenticatedError("missing authorization: Bearer token");
  absl::string_view v = *header;
  if (!absl::ConsumePrefix(&v, "Bearer ") && !absl::ConsumePrefix(&v, "bearer ")) {
    return absl::UnauthenticatedError("authorization: want 'Bearer TOKEN'");
  }
  auto it = tokens_.find(Digest(absl::StripAsciiWhitespace(v)));
  if (it == tokens_.end()) return absl::UnauthenticatedError("authorization: unknown token");
  return it->second;
}

}  // namespace topiary::server
