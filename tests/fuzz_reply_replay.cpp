// fuzz_reply's entry point, built into the unit tests under its own name (the
// same code, invariants and limits; no libFuzzer): fuzz_regression_test.cpp
// replays the saved inputs through it.
#define LLVMFuzzerTestOneInput rsh_fuzz_reply_one_input
#include "fuzz_reply.cpp"
