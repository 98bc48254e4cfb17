// Our transport: one blocking-with-deadlines connection to Redis over TCP
// (IPv4, IPv6, host names), a unix socket, and optionally TLS. Used outside
// cosocket phases only (plain LuaJIT, init/log/header_filter phases).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "config.hpp"
#include "session_state.hpp"
#include "socket_io.hpp"
#include "tls.hpp"

namespace rsh {

struct Endpoint {
    std::string host;
    int port = 6379;
    std::string unix_path;  // wins when not empty
    bool ssl = false;
    TlsSettings tls;

    static Endpoint from(const Config& config);
};

class Connection {
public:
    // Connects (and handshakes TLS) before the deadline; throws IoError.
    static std::unique_ptr<Connection> open(const Endpoint& endpoint, const Deadline& deadline);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    void send_all(std::string_view bytes, const Deadline& deadline);
    // At least one byte; throws IoError("closed") on EOF, IoError("timeout").
    std::size_t read_some(char* buf, std::size_t cap, const Deadline& deadline);
    // An idle connection with anything to read (EOF, error, stray bytes) is unusable.
    bool usable_when_idle() const;

    pid_t owner_pid() const { return owner_pid_; }
    SessionState session;  // AUTH / SELECT / HELLO done on this connection
    Clock::time_point idle_since{};
    double keepalive_ms = 0;        // set when handed back to the pool

private:
    explicit Connection(int fd) : fd_(fd) {}
    int fd_;
    pid_t owner_pid_ = 0;
    std::unique_ptr<TlsStream> tls_;
};

}  // namespace rsh
