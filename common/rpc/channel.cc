#include "common/rpc/channel.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace topiary::rpc {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& o) {
  if (o.address.empty()) return absl::InvalidArgumentError("--server: required (HOST:PORT)");
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!o.tls_ca.empty() || !o.tls_cert.empty()) {
    if (o.tls_cert.empty() != o.tls_key.empty()) {
      return absl::InvalidArgumentError("--tls-cert and --tls-key: give both or neither");
    }
    grpc::SslCredentialsOptions s;
    if (!o.tls_ca.empty()) {
      ASSIGN_OR_RETURN(s.pem_root_certs, ReadFileToString(o.tls_ca, 1 << 20));
    }
    if (!o.tls_cert.empty()) {
      ASSIGN_OR_RETURN(s.pem_cert_chain, ReadFileToString(o.tls_cert, 1 << 20));
      ASSIGN_OR_RETURN(s.pem_private_key, ReadFileToString(o.tls_key, 1 << 20));
    }
    creds = grpc::SslCredentials(s);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  if (o.fast_reconnect) {
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  }
  return grpc::CreateCustomChannel(o.address, creds, args);
}

std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& token, std::chrono::milliseconds timeout) {
  auto c = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
  if (timeout.count() > 0) c->set_deadline(std::chrono::system_clock::now() + timeout);
  return c;
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 64 * 1024));
  std::string token(absl::StripAsciiWhitespace(text.substr(0, text.find('\n'))));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token on the first line"));
  return token;
}

}  // namespace topiary::rpc
