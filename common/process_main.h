// What the mains of memshare_worker and memshare_router share: flag parsing
// with a --help that lists every project flag, and SIGTERM/SIGINT handling
// by a thread that waits for the signal (no async-signal handler).
//
// Call BlockTerminationSignals first in main, before any thread starts, so
// that every thread inherits the blocked mask and the signal stays pending
// until WaitForTerminationSignal takes it.
#ifndef MEMSHARE_COMMON_PROCESS_MAIN_H_
#define MEMSHARE_COMMON_PROCESS_MAIN_H_

#include <string>
#include <vector>

namespace memshare {

void BlockTerminationSignals();

// Sets the usage text, makes --help list every flag defined outside Abseil
// (the defaults list only flags of the file holding main), and parses.
// Returns the positional arguments.
std::vector<char*> ParseFlags(int argc, char** argv, const std::string& usage);

// Blocks until SIGTERM or SIGINT arrives; returns the signal's number.
int WaitForTerminationSignal();

}  // namespace memshare

#endif  // MEMSHARE_COMMON_PROCESS_MAIN_H_
