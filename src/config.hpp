// The storage configuration: every field of resty.session.redis plus our TLS
// extensions, with defaults and the identity used to name connection pools.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "durability.hpp"
#include "resp_scanner.hpp"

namespace rsh {

struct TlsSettings {
    bool verify = false;
    std::string server_name;          // SNI and the name verified ("" = host)
    std::string trusted_certificate;  // CA file; "" = system trust store
    std::string client_cert;          // PEM file for tls-auth-clients
    std::string client_priv_key;      // PEM file for tls-auth-clients

    bool operator==(const TlsSettings& o) const {
        return verify == o.verify && server_name == o.server_name &&
               trusted_certificate == o.trusted_certificate && client_cert == o.client_cert &&
               client_priv_key == o.client_priv_key;
    }
};

constexpr double kDefaultTimeoutMs = 60000;  // OpenResty's cosocket defaults
// The largest timeout cosockets take (settimeouts raises above it); ours too.
constexpr double kMaxTimeoutMs = 2147483647;
constexpr int kDefaultPoolSize = 30;
// The data one reply may carry (ReaderLimits::max_reply_bytes), and the largest
// value set accepts: by default Redis's own proto-max-bulk-len, 512 MiB, so every
// value Redis stores reads back; a reply announcing more is refused at its header.
constexpr double kDefaultMaxReplySize = 512 << 20;
constexpr double kMinMaxReplySize = 1024;

struct Config {
    std::optional<std::string> prefix, suffix;
    std::string host = "127.0.0.1";
    int port = 6379;
    std::optional<std::string> socket;  // unix socket path without "unix:"
    std::optional<std::string> username, password;
    std::optional<long long> database;
    // 0: the transport's default (nginx's lua_socket_*_timeout; native: kDefaultTimeoutMs)
    double connect_timeout = kDefaultTimeoutMs;
    double send_timeout = kDefaultTimeoutMs;
    double read_timeout = kDefaultTimeoutMs;
    double keepalive_timeout = kDefaultTimeoutMs;  // 0: idle connections never expire
    std::optional<std::string> pool;               // custom pool name
    int pool_size = kDefaultPoolSize;
    std::optional<int> backlog;
    bool ssl = false;
    std::optional<bool> ssl_verify;
    std::optional<std::string> server_name;
    std::optional<std::string> ssl_trusted_certificate, ssl_client_cert, ssl_client_priv_key;
    std::optional<bool> force_auth;
    std::optional<std::string> transport;  // "cosocket" | "native" | nil (by phase)
    std::optional<bool> pipelining;        // cosocket auto-pipelining; nil = the default (on)
    std::optional<std::string> role;       // "master" | "slave": ROLE checked on each new connection
    double max_reply_size = kDefaultMaxReplySize;  // bytes; see ReaderLimits
    int wait_replicas = 0;                         // see Durability
    double wait_timeout = kDefaultWaitTimeoutMs;   // ms

    // The pool this configuration's connections live in: a name built from every
    // field that makes a connection different; a custom `pool` stands for the
    // endpoint but is still namespaced by the session identity (TLS settings,
    // username, password digest, database), so no pool name can cross them.
    std::string pool_name() const;
    TlsSettings tls() const;
    ReaderLimits reader_limits() const;
    Durability durability() const;
};

// A configured timeout as the native transport applies it (0: kDefaultTimeoutMs).
double native_timeout_ms(double configured);

// Strips the cosocket form's "unix:" prefix.
std::string normalize_socket_path(const std::string& socket);

// Validation shared by the Lua binding (new() and field writes); each throws
// ArgumentError("invalid <field>: <why>").
void check_port(double value);
void check_timeout(const char* field, double value);
void check_max_reply_size(double value);
void check_count(const char* field, double value, double min);
void check_transport(const std::string& value);
void check_role(const std::string& value);
void check_wait_timeout(double value);

}  // namespace rsh
