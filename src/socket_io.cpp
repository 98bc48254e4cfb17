#include "socket_io.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include "errors.hpp"

namespace rsh {

namespace {
// Configurations cap timeouts at 2^31-1 ms; clamping here too keeps the clock
// arithmetic in range (about 68 years of nanoseconds) for any caller.
constexpr double kMaxDeadlineMs = 2147483647.0;
}  // namespace

Deadline::Deadline(double timeout_ms) {
    const double ms = timeout_ms > 0 ? (timeout_ms < kMaxDeadlineMs ? timeout_ms : kMaxDeadlineMs) : 0;  // NaN: 0
    at_ = Clock::now() + std::chrono::microseconds(static_cast<long long>(ms * 1000.0));
}

int Deadline::remaining_ms() const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at_ - Clock::now()).count();
    if (left <= 0) {
        // Sub-millisecond remainders still get one poll tick.
        return at_ > Clock::now() ? 1 : 0;
    }
    return left > 0x7fffffff ? 0x7fffffff : static_cast<int>(left);
}

void wait_ready(int fd, Ready what, const Deadline& deadline) {
    pollfd pfd{fd, static_cast<short>(what == Ready::Read ? POLLIN : POLLOUT), 0};
    for (;;) {
        int left = deadline.remaining_ms();
        if (left == 0) throw IoError("timeout");
        int n = ::poll(&pfd, 1, left);
        if (n > 0) return;  // errors and hang-ups surface in the following read/write
        if (n == 0) throw IoError("timeout");
        if (errno != EINTR) throw IoError(errno_message(errno));
    }
}

std::string errno_message(int err) {
    switch (err) {
    case ECONNREFUSED: return "connection refused";
    case ETIMEDOUT: return "timeout";
    case ECONNRESET: return "connection reset by peer";
    case EPIPE: return "closed";
    case ENOENT: return "no such file or directory";
    default: return std::strerror(err);
    }
}

namespace {
std::atomic<pid_t> g_pid{0};
void refresh_pid() { g_pid.store(::getpid(), std::memory_order_relaxed); }
}  // namespace

pid_t current_pid() {
    static const bool registered = [] {
        refresh_pid();
        ::pthread_atfork(nullptr, nullptr, refresh_pid);
        return true;
    }();
    (void)registered;
    return g_pid.load(std::memory_order_relaxed);
}

void set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL, 0);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        throw IoError(errno_message(errno));
    }
}

}  // namespace rsh
