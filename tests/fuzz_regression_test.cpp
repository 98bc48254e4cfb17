// Replays the inputs libFuzzer once reported (tests/fuzz_regressions/reply/: the
// crash-* files of `make fuzz` worth keeping, renamed for what they hold; the
// first byte picks the fragment size and the limits) and the seed corpus
// (tests/fuzz_corpus/) through fuzz_reply's own entry point: a broken invariant
// traps, which fails this test with "invariant broken at ..." after the name of
// the input being replayed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

extern "C" int rsh_fuzz_reply_one_input(const std::uint8_t* bytes, std::size_t size);

namespace {

namespace fs = std::filesystem;

// Every regular file under dir, sorted (a missing directory gives none).
std::vector<fs::path> inputs(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        if (entry.is_regular_file()) out.push_back(entry.path());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::size_t replay(const fs::path& dir) {
    std::size_t n = 0;
    for (const auto& path : inputs(dir)) {
        const std::string data = read(path);
        std::fprintf(stderr, "replaying %s (%zu bytes)\n", path.string().c_str(), data.size());
        EXPECT_EQ(0, rsh_fuzz_reply_one_input(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
        ++n;
    }
    return n;
}

const fs::path kSource = RSH_SOURCE_DIR;

}  // namespace

TEST(FuzzRegressions, ReplyCrashInputsReplayClean) {
    // the two inputs of the target's first runs: an integer reply cut short after
    // its ':' (tight limits, 1-byte fragments); integer lines with stray CRs
    // (44-byte fragments)
    EXPECT_GE(replay(kSource / "tests/fuzz_regressions/reply"), 2u);
}

TEST(FuzzRegressions, ReplySeedCorpusReplaysClean) {
    EXPECT_GE(replay(kSource / "tests/fuzz_corpus"), 9u);
}
