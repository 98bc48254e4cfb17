// Deadlines and readiness waits for non-blocking sockets (poll based).
#pragma once

#include <chrono>
#include <string>
#include <sys/types.h>

namespace rsh {

using Clock = std::chrono::steady_clock;

// A point in time an operation must finish by; built from a timeout in milliseconds.
class Deadline {
public:
    explicit Deadline(double timeout_ms);
    // Milliseconds left, clamped at 0 (for poll()).
    int remaining_ms() const;
    bool expired() const { return remaining_ms() == 0; }

private:
    Clock::time_point at_;
};

enum class Ready { Read, Write };

// Waits until fd is readable/writable; throws IoError("timeout") past the deadline.
void wait_ready(int fd, Ready what, const Deadline& deadline);

// "connection refused", "timeout", ...: errno as cosockets word it.
std::string errno_message(int err);

// getpid() without a system call per use: cached, refreshed in fork children.
pid_t current_pid();

// Puts fd in non-blocking mode; throws IoError on failure.
void set_nonblocking(int fd);

}  // namespace rsh
