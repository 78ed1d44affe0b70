// A clock seam so that time-dependent logic (leases, backoff, ETAs) can be
// tested with an injected fake. RealClock is thread-safe; FakeClock is
// thread-safe and only moves when told to.
#pragma once

#include <atomic>
#include <cstdint>

namespace topiary {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time in microseconds (never goes back).
  virtual int64_t NowMicros() const = 0;
  // Wall-clock time in microseconds since the Unix epoch.
  virtual int64_t WallMicros() const = 0;

  // The process-wide real clock.
  static Clock* Real();
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_micros = 1'000'000) : now_(start_micros) {}
  int64_t NowMicros() const override { return now_.load(); }
  int64_t WallMicros() const override { return now_.load(); }
  void AdvanceMicros(int64_t delta) { now_.fetch_add(delta); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace topiary
