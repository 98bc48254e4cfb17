// TlsStream and the context cache against the TLS servers of
// spec/support/with-servers.sh (skipped when its variables are not set):
//   spec/support/with-servers.sh build/unit_tests --gtest_filter='Tls*'
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "errors.hpp"
#include "socket_io.hpp"
#include "tls.hpp"

using namespace rsh;

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

#define REQUIRE_SERVERS()                                                   \
    do {                                                                    \
        if (env("HIREDIS_TEST_TLS_PORT").empty())                           \
            GTEST_SKIP() << "run under spec/support/with-servers.sh";       \
    } while (0)

std::string cert(const std::string& file) { return env("HIREDIS_TEST_CERTS") + "/" + file; }
int port_of(const char* var) { return std::atoi(env(var).c_str()); }

// A connected non-blocking loopback socket, closed when it goes out of scope.
struct Fd {
    int fd = -1;
    explicit Fd(int port) {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            throw IoError(errno_message(errno));
        }
        set_nonblocking(fd);
    }
    ~Fd() { ::close(fd); }
};

TlsSettings verified() {
    TlsSettings s;
    s.verify = true;
    s.trusted_certificate = cert("ca.crt");
    return s;
}

std::string ping(TlsStream& stream) {
    Deadline d(2000);
    stream.write_all("PING\r\n", 6, d);
    char buf[64];
    std::size_t n = stream.read_some(buf, sizeof buf, d);
    return std::string(buf, n);
}

std::string handshake_error(const TlsSettings& s, int port, const std::string& host,
                            double timeout_ms = 2000) {
    Fd fd(port);
    try {
        TlsStream stream(tls_context_for(s), fd.fd, host, Deadline(timeout_ms));
        return "";
    } catch (const IoError& e) {
        return e.what();
    }
}

}  // namespace

TEST(TlsContextCache, SharesContextsPerSettings) {
    TlsSettings a;
    TlsSettings b = a;
    EXPECT_EQ(tls_context_for(a), tls_context_for(b));
    b.server_name = "localhost";
    EXPECT_NE(tls_context_for(a), tls_context_for(b));
}

TEST(TlsContextCache, ReportsUnreadableFiles) {
    TlsSettings s;
    s.verify = true;
    s.trusted_certificate = "/nonexistent/ca.crt";
    try {
        tls_context_for(s);
        FAIL() << "no error";
    } catch (const IoError& e) {
        EXPECT_EQ(std::string(e.what()).rfind("ssl trusted certificate: ", 0), 0u) << e.what();
    }
    TlsSettings c;
    c.client_cert = "/nonexistent/client.crt";
    c.client_priv_key = "/nonexistent/client.key";
    try {
        tls_context_for(c);
        FAIL() << "no error";
    } catch (const IoError& e) {
        EXPECT_EQ(std::string(e.what()).rfind("ssl client certificate: ", 0), 0u) << e.what();
    }
}

TEST(TlsStream, RoundTripVerifiedAndResumesSessions) {
    REQUIRE_SERVERS();
    TlsSettings s = verified();
    int port = port_of("HIREDIS_TEST_TLS_PORT");
    {
        Fd fd(port);
        TlsStream stream(tls_context_for(s), fd.fd, "127.0.0.1", Deadline(2000));
        EXPECT_EQ(ping(stream), "+PONG\r\n");  // reads the TLS 1.3 tickets too
        EXPECT_FALSE(stream.has_buffered_bytes());
    }
    Fd fd(port);
    TlsStream again(tls_context_for(s), fd.fd, "127.0.0.1", Deadline(2000));
    EXPECT_TRUE(again.session_reused());
    EXPECT_EQ(ping(again), "+PONG\r\n");
}

TEST(TlsStream, LargeWritesAndReads) {
    REQUIRE_SERVERS();
    Fd fd(port_of("HIREDIS_TEST_TLS_PORT"));
    TlsStream stream(tls_context_for(verified()), fd.fd, "localhost", Deadline(2000));
    std::string value(1 << 20, 'x');
    std::string cmd = "*3\r\n$3\r\nSET\r\n$11\r\nrsh:tls:big\r\n$" + std::to_string(value.size()) +
                      "\r\n" + value + "\r\n*2\r\n$3\r\nGET\r\n$11\r\nrsh:tls:big\r\n";
    Deadline d(5000);
    stream.write_all(cmd.data(), cmd.size(), d);
    std::string expected = "+OK\r\n$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
    std::string got;
    char buf[16384];
    while (got.size() < expected.size()) got.append(buf, stream.read_some(buf, sizeof buf, d));
    EXPECT_EQ(got, expected);
}

TEST(TlsStream, VerificationFailures) {
    REQUIRE_SERVERS();
    TlsSettings s = verified();
    EXPECT_EQ(handshake_error(s, port_of("HIREDIS_TEST_TLS_SELF_PORT"), "127.0.0.1"),
              "ssl handshake failed: certificate verify failed: self-signed certificate");
    EXPECT_EQ(handshake_error(s, port_of("HIREDIS_TEST_TLS_OTHER_PORT"), "127.0.0.1"),
              "ssl handshake failed: hostname mismatch");
    EXPECT_EQ(handshake_error(s, port_of("HIREDIS_TEST_TLS_OTHER_PORT"), "localhost"),
              "ssl handshake failed: hostname mismatch");
    TlsSettings named = s;
    named.server_name = "other.invalid";
    EXPECT_EQ(handshake_error(named, port_of("HIREDIS_TEST_TLS_OTHER_PORT"), "127.0.0.1"), "");
    TlsSettings off;
    EXPECT_EQ(handshake_error(off, port_of("HIREDIS_TEST_TLS_SELF_PORT"), "127.0.0.1"), "");
}

TEST(TlsStream, PlainPortFailsBeforeTheDeadline) {
    REQUIRE_SERVERS();
    if (env("HIREDIS_TEST_PORT").empty()) GTEST_SKIP() << "no plain server";
    auto start = std::chrono::steady_clock::now();
    std::string err = handshake_error(TlsSettings{}, port_of("HIREDIS_TEST_PORT"), "127.0.0.1", 500);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(err == "timeout" || err.rfind("ssl handshake failed: ", 0) == 0) << err;
    std::cout << "plain port: " << err << " after " << ms << " ms\n";
    EXPECT_LT(ms, 1500);
}

TEST(TlsStream, SilentPeerTimesOut) {
    int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(listener, 4), 0);
    socklen_t len = sizeof sa;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len);
    auto start = std::chrono::steady_clock::now();
    std::string err = handshake_error(TlsSettings{}, ntohs(sa.sin_port), "127.0.0.1", 300);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start).count();
    ::close(listener);
    EXPECT_EQ(err, "timeout");
    EXPECT_GE(ms, 290);
    EXPECT_LT(ms, 1000);
}

TEST(TlsStream, PeerClosingDuringHandshake) {
    int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::listen(listener, 4), 0);
    socklen_t len = sizeof sa;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len);
    std::thread closer([listener] {
        int c = ::accept(listener, nullptr, nullptr);
        char buf[512];
        (void)::recv(c, buf, sizeof buf, 0);  // the ClientHello
        ::close(c);
    });
    std::string err = handshake_error(TlsSettings{}, ntohs(sa.sin_port), "127.0.0.1", 2000);
    closer.join();
    ::close(listener);
    EXPECT_TRUE(err == "ssl handshake failed: closed" ||
                err == "ssl handshake failed: connection reset by peer")
        << err;
}

TEST(TlsStream, ClientCertificates) {
    REQUIRE_SERVERS();
    int port = port_of("HIREDIS_TEST_TLS_CLIENT_PORT");
    TlsSettings without = verified();
    // TLS 1.3: the client finishes its handshake before the server checks the
    // certificate, so the refusal may only show on the first read.
    std::string err = handshake_error(without, port, "127.0.0.1");
    if (err.empty()) {
        Fd fd(port);
        TlsStream stream(tls_context_for(without), fd.fd, "127.0.0.1", Deadline(2000));
        try {
            ping(stream);
            FAIL() << "the server accepted a client without certificate";
        } catch (const IoError& e) {
            err = e.what();
        }
    }
    EXPECT_NE(err, "");
    std::cout << "no client certificate: " << err << "\n";
    TlsSettings with = verified();
    with.client_cert = cert("client.crt");
    with.client_priv_key = cert("client.key");
    Fd fd(port);
    TlsStream stream(tls_context_for(with), fd.fd, "127.0.0.1", Deadline(2000));
    EXPECT_EQ(ping(stream), "+PONG\r\n");
}

TEST(TlsStream, WritesToAClosedPeerDoNotRaiseSigpipe) {
    REQUIRE_SERVERS();
    Fd fd(port_of("HIREDIS_TEST_TLS_PORT"));
    TlsStream stream(tls_context_for(TlsSettings{}), fd.fd, "127.0.0.1", Deadline(2000));
    Deadline d(2000);
    std::string quit = "QUIT\r\n";
    stream.write_all(quit.data(), quit.size(), d);
    char buf[64];
    EXPECT_EQ(std::string(buf, stream.read_some(buf, sizeof buf, d)), "+OK\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string big(1 << 16, 'x');
    // The default SIGPIPE action would kill the test binary here.
    std::string err;
    try {
        for (int i = 0; i < 20; ++i) stream.write_all(big.data(), big.size(), d);
        (void)stream.read_some(buf, sizeof buf, d);
    } catch (const IoError& e) {
        err = e.what();
    }
    EXPECT_TRUE(err == "closed" || err == "connection reset by peer") << err;
}

TEST(TlsStream, ForkedChildLeavesTheParentsStreamAlone) {
    REQUIRE_SERVERS();
    Fd fd(port_of("HIREDIS_TEST_TLS_PORT"));
    auto stream = std::make_unique<TlsStream>(tls_context_for(TlsSettings{}), fd.fd, "127.0.0.1",
                                              Deadline(2000));
    EXPECT_EQ(ping(*stream), "+PONG\r\n");
    pid_t child = ::fork();
    if (child == 0) {
        stream.reset();  // must not send close_notify on the parent's connection
        ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_EQ(ping(*stream), "+PONG\r\n");
}
