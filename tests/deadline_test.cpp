// Deadline: any timeout a caller passes stays within the clock's range (make asan
// runs this under UBSan: before, 1e13 ms overflowed the nanosecond arithmetic).
#include <gtest/gtest.h>

#include <cmath>

#include "socket_io.hpp"

namespace {

TEST(Deadline, HugeTimeoutsAreClampedNotWrapped) {
    for (double ms : {2147483647.0, 1e13, 1e16, 1e300, double(INFINITY)}) {
        const rsh::Deadline deadline(ms);
        EXPECT_FALSE(deadline.expired()) << ms;
        EXPECT_GT(deadline.remaining_ms(), 2147483000) << ms;
    }
}

TEST(Deadline, ZeroNegativeAndNanAreAlreadyExpired) {
    for (double ms : {0.0, -1.0, -1e300, double(NAN)}) {
        EXPECT_TRUE(rsh::Deadline(ms).expired()) << ms;
    }
}

TEST(Deadline, OrdinaryTimeouts) {
    const rsh::Deadline deadline(60000);
    EXPECT_GT(deadline.remaining_ms(), 59000);
    EXPECT_LE(deadline.remaining_ms(), 60000);
}

}  // namespace
