// Config: pool identity (names), socket paths, and the validation messages.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "config.hpp"
#include "errors.hpp"

namespace {

using rsh::ArgumentError;
using rsh::Config;
using std::string;

TEST(ConfigDefaults, MatchTheContract) {
    Config c;
    EXPECT_EQ(c.host, "127.0.0.1");
    EXPECT_EQ(c.port, 6379);
    EXPECT_EQ(c.connect_timeout, 60000);
    EXPECT_EQ(c.send_timeout, 60000);
    EXPECT_EQ(c.read_timeout, 60000);
    EXPECT_EQ(c.keepalive_timeout, 60000);
    EXPECT_EQ(c.pool_size, 30);
    EXPECT_FALSE(c.backlog);
    EXPECT_FALSE(c.ssl);
    EXPECT_FALSE(c.prefix);
    EXPECT_FALSE(c.suffix);
    EXPECT_FALSE(c.tls().verify);
}

TEST(PoolName, CustomPoolIsNamespacedByTheSessionIdentity) {
    Config c;
    c.pool = "mine";
    c.password = "secret";
    c.database = 3;
    c.ssl = true;
    const string name = c.pool_name();
    EXPECT_EQ(name.rfind("mine:id=", 0), 0u) << name;
    EXPECT_EQ(name.find("secret"), string::npos) << name;

    // TLS settings, credentials and the database each give another pool.
    const std::vector<std::function<void(Config&)>> changes = {
        [](Config& x) { x.ssl = false; },
        [](Config& x) { x.ssl_verify = true; },
        [](Config& x) { x.server_name = "other.example"; },
        [](Config& x) { x.ssl_trusted_certificate = "/ca.pem"; },
        [](Config& x) { x.username = "bob"; },
        [](Config& x) { x.password = "other"; },
        [](Config& x) { x.password.reset(); },
        [](Config& x) { x.database = 4; },
        [](Config& x) { x.database.reset(); },
        [](Config& x) { x.pool = "yours"; },
    };
    std::set<string> names{name};
    for (std::size_t i = 0; i < changes.size(); ++i) {
        Config changed = c;
        changes[i](changed);
        EXPECT_TRUE(names.insert(changed.pool_name()).second) << "change " << i << " gave " << changed.pool_name();
    }

    // The user's name stands for the endpoint (as with cosockets); fields that
    // do not change a session do not change the pool.
    Config same = c;
    same.host = "10.0.0.9";
    same.port = 7000;
    same.prefix = "p";
    same.read_timeout = 5;
    EXPECT_EQ(same.pool_name(), name);
}

TEST(PoolName, NoDatabaseAndDatabaseZeroAreOneSession) {
    Config none, zero;
    zero.database = 0;
    EXPECT_EQ(none.pool_name(), zero.pool_name());
    none.pool = zero.pool = "p";
    EXPECT_EQ(none.pool_name(), zero.pool_name());
}

TEST(PoolName, CustomNamesCannotForgeAnIdentity) {
    // The user's name is escaped: it never supplies the ":id=" part itself.
    Config plain, tls;
    tls.pool = "p";
    tls.ssl = true;
    const string tls_name = tls.pool_name();
    plain.pool = tls_name;
    EXPECT_NE(plain.pool_name(), tls_name);
    Config as_default;
    as_default.pool = Config{}.pool_name();
    EXPECT_NE(as_default.pool_name(), Config{}.pool_name());
}

TEST(PoolName, DefaultNamesTheEndpoint) {
    Config c;
    EXPECT_NE(c.pool_name().find("127.0.0.1:6379"), string::npos) << c.pool_name();
    c.host = "::1";
    c.port = 7000;
    EXPECT_NE(c.pool_name().find("[::1]:7000"), string::npos) << c.pool_name();
    c.socket = "unix:/run/redis.sock";
    EXPECT_NE(c.pool_name().find("/run/redis.sock"), string::npos) << c.pool_name();
    EXPECT_EQ(c.pool_name().find("unix:unix:"), string::npos) << c.pool_name();
}

TEST(PoolName, SameIdentitySameName) {
    Config a, b;
    for (Config* c : {&a, &b}) {
        c->host = "redis.example";
        c->port = 6380;
        c->ssl = true;
        c->ssl_verify = true;
        c->server_name = "redis.example";
        c->username = "alice";
        c->password = "s3cret";
        c->database = 4;
    }
    // Fields that do not change what a connection is do not change the name.
    b.prefix = "p";
    b.suffix = "s";
    b.read_timeout = 5;
    b.pool_size = 2;
    b.keepalive_timeout = 1;
    EXPECT_EQ(a.pool_name(), b.pool_name());
    // "unix:/x" and "/x" are the same socket.
    Config u1, u2;
    u1.socket = "unix:/tmp/redis.sock";
    u2.socket = "/tmp/redis.sock";
    EXPECT_EQ(u1.pool_name(), u2.pool_name());
}

TEST(PoolName, EveryIdentityFieldChangesTheName) {
    const std::vector<std::function<void(Config&)>> changes = {
        [](Config& c) { c.host = "10.0.0.1"; },
        [](Config& c) { c.port = 6380; },
        [](Config& c) { c.socket = "/tmp/a.sock"; },
        [](Config& c) { c.ssl = true; },
        [](Config& c) { c.ssl = true; c.ssl_verify = true; },
        [](Config& c) { c.ssl = true; c.server_name = "other.example"; },
        [](Config& c) { c.username = "bob"; },
        [](Config& c) { c.password = "other"; },
        [](Config& c) { c.password = ""; },
        [](Config& c) { c.database = 0; },
        [](Config& c) { c.database = 5; },
    };
    Config base;
    base.username = "alice";
    base.password = "s3cret";
    base.database = 4;
    std::set<string> names{base.pool_name()};
    for (std::size_t i = 0; i < changes.size(); ++i) {
        Config c = base;
        changes[i](c);
        EXPECT_TRUE(names.insert(c.pool_name()).second) << "change " << i << " gave " << c.pool_name();
    }
    // No credentials at all differs from each credentialed form.
    EXPECT_TRUE(names.insert(Config{}.pool_name()).second);
}

TEST(PoolName, DifferentPasswordsDifferentNames) {
    std::set<string> names;
    for (const char* pw : {"a", "b", "aa", "password1", "password2", "pässwörd"}) {
        Config c;
        c.password = pw;
        EXPECT_TRUE(names.insert(c.pool_name()).second) << pw;
    }
}

TEST(PoolName, PasswordTextNeverAppears) {
    for (const char* pw : {"hunter2", "s3cr3t-T0ken", "6379", "127"}) {
        Config c;
        c.password = pw;
        c.username = "user";
        c.ssl = true;
        const string name = c.pool_name();
        if (string(pw) == "6379" || string(pw) == "127") {
            // Those also occur in the endpoint: count occurrences instead.
            Config without = c;
            without.password.reset();
            const auto count = [](const string& hay, const string& needle) {
                std::size_t n = 0;
                for (auto at = hay.find(needle); at != string::npos; at = hay.find(needle, at + 1)) ++n;
                return n;
            };
            EXPECT_EQ(count(name, pw), count(without.pool_name(), pw)) << name;
        } else {
            EXPECT_EQ(name.find(pw), string::npos) << name;
        }
    }
}


// Out of line: GCC 12 warns (falsely) about optional<string> members of a local Config otherwise.
[[gnu::noinline]] Config identity(std::optional<string> username, std::optional<string> password,
                                  std::optional<long long> database) {
    Config c;
    c.username = std::move(username);
    c.password = std::move(password);
    c.database = database;
    return c;
}

TEST(PoolName, UsernameAndPasswordDoNotCollide) {
    EXPECT_NE(identity("alice", std::nullopt, std::nullopt).pool_name(),
              identity(std::nullopt, "alice", std::nullopt).pool_name());
}

TEST(PoolName, SeparatorsInsideFieldsDoNotForgeAnotherIdentity) {
    // B authenticates as alice with a password; A has no password at all but a
    // username that spells out B's digest. Sharing a pool would hand A a
    // connection already authenticated as alice (no AUTH is sent without a password).
    const Config b = identity("alice", "s3cret", std::nullopt);
    const string name_b = b.pool_name();
    const auto at = name_b.find("pass=");
    ASSERT_NE(at, string::npos) << name_b;
    const Config a = identity("alice:" + name_b.substr(at), std::nullopt, std::nullopt);
    EXPECT_NE(a.pool_name(), name_b);

    // Same with the database: "alice:db=1" on db 0 vs "alice" on db 1.
    EXPECT_NE(identity("alice:db=1", std::nullopt, std::nullopt).pool_name(),
              identity("alice", std::nullopt, 1).pool_name());
}

TEST(NormalizeSocketPath, StripsUnixPrefix) {
    EXPECT_EQ(rsh::normalize_socket_path("unix:/run/redis.sock"), "/run/redis.sock");
    EXPECT_EQ(rsh::normalize_socket_path("/run/redis.sock"), "/run/redis.sock");
    EXPECT_EQ(rsh::normalize_socket_path("unix:"), "");
    EXPECT_EQ(rsh::normalize_socket_path("relative.sock"), "relative.sock");
    EXPECT_EQ(rsh::normalize_socket_path("unixish"), "unixish");
    EXPECT_EQ(rsh::normalize_socket_path(""), "");
}

string message(const std::function<void()>& f) {
    try {
        f();
    } catch (const ArgumentError& e) {
        return e.what();
    }
    return "<no error>";
}

TEST(CheckPort, Range) {
    for (double ok : {1.0, 6379.0, 65535.0}) EXPECT_NO_THROW(rsh::check_port(ok)) << ok;
    for (double bad : {0.0, -1.0, 65536.0, 1.5, double(NAN), double(INFINITY)}) {
        EXPECT_EQ(message([&] { rsh::check_port(bad); }), "invalid port: must be an integer from 1 to 65535")
            << bad;
    }
}

TEST(CheckTimeout, ZeroToTheCosocketMaximum) {
    // 0 is the transport's default, as cosockets take it.
    for (double ok : {0.0, 0.5, 1.0, 60000.0, 2147483647.0}) {
        EXPECT_NO_THROW(rsh::check_timeout("read_timeout", ok)) << ok;
    }
    for (double bad : {-1.0, -0.5, 2147483648.0, 1e13, 1e16, double(NAN), double(INFINITY), -double(INFINITY)}) {
        EXPECT_EQ(message([&] { rsh::check_timeout("connect_timeout", bad); }),
                  "invalid connect_timeout: must be a number of milliseconds from 0 to 2147483647 (0: the default)")
            << bad;
    }
}

TEST(NativeTimeout, ZeroMeansTheDefault) {
    EXPECT_EQ(rsh::native_timeout_ms(0), rsh::kDefaultTimeoutMs);
    EXPECT_EQ(rsh::native_timeout_ms(1), 1);
    EXPECT_EQ(rsh::native_timeout_ms(2147483647), 2147483647);
}

TEST(CheckMaxReplySize, Range) {
    for (double ok : {1024.0, 33554432.0, 2147483647.0}) EXPECT_NO_THROW(rsh::check_max_reply_size(ok)) << ok;
    for (double bad : {0.0, 1023.0, 1e12, 2048.5, -1.0, double(NAN)}) {
        EXPECT_EQ(message([&] { rsh::check_max_reply_size(bad); }),
                  "invalid max_reply_size: must be an integer number of bytes from 1024 to 2147483647")
            << bad;
    }
}

TEST(ReaderLimitsFromConfig, MaxReplySize) {
    Config c;
    EXPECT_EQ(c.reader_limits().max_reply_bytes, 512u << 20);  // Redis's proto-max-bulk-len
    c.max_reply_size = 4096;
    EXPECT_EQ(c.reader_limits().max_reply_bytes, 4096u);
}

TEST(CheckCount, Messages) {
    EXPECT_NO_THROW(rsh::check_count("pool_size", 1, 1));
    EXPECT_NO_THROW(rsh::check_count("backlog", 0, 0));
    EXPECT_NO_THROW(rsh::check_count("pool_size", 2147483647.0, 1));
    EXPECT_EQ(message([] { rsh::check_count("pool_size", 0, 1); }), "invalid pool_size: must be an integer >= 1");
    EXPECT_EQ(message([] { rsh::check_count("pool_size", 1.5, 1); }), "invalid pool_size: must be an integer >= 1");
    EXPECT_EQ(message([] { rsh::check_count("backlog", -1, 0); }), "invalid backlog: must be an integer >= 0");
    EXPECT_EQ(message([] { rsh::check_count("backlog", 2147483648.0, 0); }), "invalid backlog: must be an integer >= 0");
    EXPECT_EQ(message([] { rsh::check_count("database", NAN, 0); }), "invalid database: must be an integer >= 0");
}

TEST(CheckTransport, Messages) {
    EXPECT_NO_THROW(rsh::check_transport("cosocket"));
    EXPECT_NO_THROW(rsh::check_transport("native"));
    for (const char* bad : {"", "Native", "tcp", "cosocket "}) {
        EXPECT_EQ(message([&] { rsh::check_transport(bad); }), "invalid transport: must be \"cosocket\" or \"native\"")
            << bad;
    }
}

}  // namespace
