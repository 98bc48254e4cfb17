#include "transport.hpp"

#include <cerrno>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "errors.hpp"

namespace rsh {
namespace {

// Owns a file descriptor until released to a Connection.
class UniqueFd {
public:
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { if (fd_ >= 0) ::close(fd_); }
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    int get() const { return fd_; }
    int release() { int fd = fd_; fd_ = -1; return fd; }

private:
    int fd_;
};

// Non-blocking connect bounded by the deadline.
void connect_before(int fd, const sockaddr* addr, socklen_t len, const Deadline& deadline) {
    if (::connect(fd, addr, len) == 0) return;
    if (errno != EINPROGRESS && errno != EAGAIN && errno != EINTR) throw IoError(errno_message(errno));
    wait_ready(fd, Ready::Write, deadline);
    int err = 0;
    socklen_t errlen = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0) err = errno;
    if (err != 0) throw IoError(errno_message(err));
}

UniqueFd connect_unix(const std::string& path, const Deadline& deadline) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw IoError("unix socket path too long");
    std::memcpy(addr.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) throw IoError(errno_message(errno));
    connect_before(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr, deadline);
    return fd;
}

struct AddrInfoDeleter {
    void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};

UniqueFd connect_tcp(const std::string& host, int port, const Deadline& deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* raw = nullptr;
    const std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &raw);
    if (rc != 0) throw IoError(host + " could not be resolved (" + ::gai_strerror(rc) + ")");
    std::unique_ptr<addrinfo, AddrInfoDeleter> list(raw);

    std::string last_error = "connection refused";
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
        if (fd.get() < 0) {
            last_error = errno_message(errno);
            continue;
        }
        try {
            connect_before(fd.get(), ai->ai_addr, ai->ai_addrlen, deadline);
        } catch (const IoError& e) {
            last_error = e.what();
            if (last_error == "timeout") throw;  // the deadline covers all addresses
            continue;
        }
        int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return fd;
    }
    throw IoError(last_error);
}

}  // namespace

Endpoint Endpoint::from(const Config& config) {
    Endpoint e;
    e.host = config.host;
    e.port = config.port;
    if (config.socket) e.unix_path = normalize_socket_path(*config.socket);
    e.ssl = config.ssl;
    if (e.ssl) e.tls = config.tls();
    return e;
}

std::unique_ptr<Connection> Connection::open(const Endpoint& endpoint, const Deadline& deadline) {
    UniqueFd fd = endpoint.unix_path.empty() ? connect_tcp(endpoint.host, endpoint.port, deadline)
                                             : connect_unix(endpoint.unix_path, deadline);
    std::unique_ptr<Connection> conn(new Connection(fd.release()));
    conn->owner_pid_ = current_pid();
    if (endpoint.ssl) {
        // Over a unix socket only server_name names the peer (host is unused there).
        const std::string peer = endpoint.unix_path.empty() ? endpoint.host : std::string();
        conn->tls_ = std::make_unique<TlsStream>(tls_context_for(endpoint.tls), conn->fd_, peer, deadline);
    }
    return conn;
}

Connection::~Connection() {
    tls_.reset();  // before the fd it reads from
    ::close(fd_);
}

void Connection::send_all(std::string_view bytes, const Deadline& deadline) {
    if (tls_) return tls_->write_all(bytes.data(), bytes.size(), deadline);
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n >= 0) {
            sent += static_cast<std::size_t>(n);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_ready(fd_, Ready::Write, deadline);
        } else if (errno != EINTR) {
            throw IoError(errno_message(errno));
        }
    }
}

std::size_t Connection::read_some(char* buf, std::size_t cap, const Deadline& deadline) {
    if (tls_) return tls_->read_some(buf, cap, deadline);
    for (;;) {
        ssize_t n = ::recv(fd_, buf, cap, 0);
        if (n > 0) return static_cast<std::size_t>(n);
        if (n == 0) throw IoError("closed");
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_ready(fd_, Ready::Read, deadline);
        } else if (errno != EINTR) {
            throw IoError(errno_message(errno));
        }
    }
}

bool Connection::usable_when_idle() const {
    if (tls_ && tls_->has_buffered_bytes()) return false;
    pollfd pfd{fd_, POLLIN, 0};
    // Readable while idle means EOF (server closed it), an error, or stray bytes.
    return ::poll(&pfd, 1, 0) == 0;
}

}  // namespace rsh
