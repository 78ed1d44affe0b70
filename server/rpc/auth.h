// Bearer-token authentication (docs/design.md, "The coordinator"). The tokens file has
// one entry per line, `TOKEN PRINCIPAL ROLE`, ROLE one of user, admin,
// worker; blank lines and lines starting with '#' are ignored. Clients send
// `authorization: Bearer TOKEN`. Without a tokens file authentication is off
// and every caller is the admin "anonymous" (for local use only).
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
  std::map<std::string, Principal> tokens_;
};

}  // namespace topiary::server
