// The storage configuration: every field of resty.session.redis plus our TLS
// extensions, with defaults and the identity used to name connection pools.
#pragma once

#include <optional>
#include <string>

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
constexpr int kDefaultPoolSize = 30;

struct Config {
    std::optional<std::string> prefix, suffix;
    std::string host = "127.0.0.1";
    int port = 6379;
    std::optional<std::string> socket;  // unix socket path without "unix:"
    std::optional<std::string> username, password;
    std::optional<long long> database;
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

    // The pool this configuration's connections live in: `pool` when set, else a
    // name built from every field that makes a connection different.
    std::string pool_name() const;
    TlsSettings tls() const;
};

// Strips the cosocket form's "unix:" prefix.
std::string normalize_socket_path(const std::string& socket);

// Validation shared by the Lua binding (new() and field writes); each throws
// ArgumentError("invalid <field>: <why>").
void check_port(double value);
void check_timeout(const char* field, double value, bool zero_allowed);
void check_count(const char* field, double value, double min);
void check_transport(const std::string& value);
void check_role(const std::string& value);

}  // namespace rsh
