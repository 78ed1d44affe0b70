// Bearer-token authentication (docs/design.md, "The coordinator"). The tokens file has
// one entry per line, `TOKEN PRINCIPAL ROLE`, ROLE one of user, admin,
// worker; blank lines and lines starting with '#' are ignored. Clients send
// `authorization: Bearer TOKEN`. Tokens are kept as SHA-256 digests and a
// presented token is found by its digest, so the time a lookup takes says
// nothing about how much of a token matched. Without a tokens file
// authentication is off and every caller is the admin "anonymous" (the
// coordinator allows that only on loopback or with --allow-anonymous).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/jobs/job_manager.h"

namespace topiary::server {

class Authenticator {
 public:
  // Off: every caller is the admin "anonymous".
  Authenticator() = default;
  static absl::StatusOr<Authenticator> FromFile(const std::string& path);

  bool enabled() const { return enabled_; }
  // The value of the `authorization` header (absent: nullopt).
  absl::StatusOr<Principal> Authenticate(const std::optional<std::string>& authorization) const;

 private:
  bool enabled_ = false;
  std::map<std::string, Principal> tokens_;  // SHA-256 of the token -> principal
};

}  // namespace topiary::server
