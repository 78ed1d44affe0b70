// Fuzzes the job-spec parser (YAML and JSON text, as CreateJob and `topiary
// submit` receive it), then validation and the JSON rendering of what parsed.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/spec/spec_io.h"
#include "common/spec/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<topiary::v1::JobSpec> spec = topiary::spec::ParseJobSpec(text);
  if (!spec.ok()) return 0;
  (void)topiary::spec::ValidateJobSpec(*spec, {"/nonexistent-fuzz-root"});
  (void)topiary::spec::JobSpecToJson(*spec);
  topiary::spec::ResolveRelativePaths(&*spec, "/nonexistent-fuzz-root/specs");
  return 0;
}
