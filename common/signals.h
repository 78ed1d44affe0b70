// Waiting for SIGTERM/SIGINT in long-lived binaries. BlockTerminationSignals()
// must run in main before any thread starts, so that every thread inherits
// the mask and WaitForTerminationSignal() alone receives them.
#pragma once

namespace topiary {

void BlockTerminationSignals();
// Blocks until SIGTERM or SIGINT arrives; returns the signal number.
int WaitForTerminationSignal();

}  // namespace topiary
