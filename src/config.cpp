#include "config.hpp"

#include <cmath>
#include <openssl/evp.h>

#include "errors.hpp"

namespace rsh {
namespace {

// Pool names carry a digest, never the password itself (pool names show up in logs).
std::string short_digest(const std::string& secret) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(secret.data(), secret.size(), md, &len, EVP_sha256(), nullptr);
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < 8 && i < len; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 15];
    }
    return out;
}

bool is_integer(double v) { return std::isfinite(v) && std::floor(v) == v; }

// Field values are percent-encoded so that no value can forge another field
// (a username "alice:pass=..." must not name alice's authenticated pool).
std::string escaped(const std::string& value) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : value) {
        if (c == '%' || c == ':' || c == '=' || c < 0x20 || c >= 0x7f) {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace

std::string normalize_socket_path(const std::string& socket) {
    return socket.compare(0, 5, "unix:") == 0 ? socket.substr(5) : socket;
}

TlsSettings Config::tls() const {
    TlsSettings t;
    t.verify = ssl_verify.value_or(false);
    t.server_name = server_name.value_or("");
    t.trusted_certificate = ssl_trusted_certificate.value_or("");
    t.client_cert = ssl_client_cert.value_or("");
    t.client_priv_key = ssl_client_priv_key.value_or("");
    return t;
}

namespace {

// What a connection's session is set up as, beyond its endpoint: TLS settings,
// credentials (the password as a digest) and the database. No database and
// database 0 are the same session.
std::string session_identity(const Config& c) {
    std::string id;
    if (c.ssl) {
        id += ":ssl";
        if (c.ssl_verify.value_or(false)) id += ":verify";
        if (c.server_name) id += ":sni=" + escaped(*c.server_name);
        if (c.ssl_trusted_certificate) id += ":ca=" + escaped(*c.ssl_trusted_certificate);
        if (c.ssl_client_cert) id += ":cert=" + escaped(*c.ssl_client_cert);
        if (c.ssl_client_priv_key) id += ":key=" + escaped(*c.ssl_client_priv_key);
    }
    if (c.username) id += ":user=" + escaped(*c.username);
    if (c.password) id += ":pass=" + short_digest(*c.password);
    if (c.database.value_or(0) != 0) id += ":db=" + std::to_string(*c.database);
    if (c.role) id += ":role=" + *c.role;  // a checked connection never serves an unchecked pool
    return id;
}

}  // namespace

std::string Config::pool_name() const {
    // The user's name (escaped: it never contains ':') plus a digest of the identity.
    if (pool) return escaped(*pool) + ":id=" + short_digest(session_identity(*this));
    std::string name = "resty.session.hiredis:";
    if (socket) {
        name += "unix=" + escaped(normalize_socket_path(*socket));
    } else {
        const bool ipv6 = host.find(':') != std::string::npos &&
                          host.find_first_not_of("0123456789abcdefABCDEF:.") == std::string::npos;
        name += (ipv6 ? "[" + host + "]" : escaped(host)) + ":" + std::to_string(port);
    }
    return name + session_identity(*this);
}

ReaderLimits Config::reader_limits() const {
    ReaderLimits limits;
    limits.max_reply_bytes = static_cast<std::size_t>(max_reply_size);
    return limits;
}

Durability Config::durability() const {
    Durability d;
    d.replicas = wait_replicas;
    d.timeout_ms = static_cast<long long>(wait_timeout);
    return d;
}

double native_timeout_ms(double configured) { return configured == 0 ? kDefaultTimeoutMs : configured; }

void check_port(double value) {
    if (!is_integer(value) || value < 1 || value > 65535) {
        invalid("port", "must be an integer from 1 to 65535");
    }
}

void check_timeout(const char* field, double value) {
    if (!std::isfinite(value) || value < 0 || value > kMaxTimeoutMs) {
        invalid(field, "must be a number of milliseconds from 0 to 2147483647 (0: the default)");
    }
}

void check_max_reply_size(double value) {
    if (!is_integer(value) || value < kMinMaxReplySize || value > 2147483647.0) {
        invalid("max_reply_size", "must be an integer number of bytes from 1024 to 2147483647");
    }
}

void check_count(const char* field, double value, double min) {
    if (!is_integer(value) || value < min || value > 2147483647.0) {
        invalid(field, "must be an integer >= " + std::to_string(static_cast<long long>(min)));
    }
}

void check_transport(const std::string& value) {
    if (value != "cosocket" && value != "native") {
        invalid("transport", "must be \"cosocket\" or \"native\"");
    }
}

// WAIT's 0 means "block forever": a call must end by itself.
void check_wait_timeout(double value) {
    if (!is_integer(value) || value < 1 || value > kMaxTimeoutMs) {
        invalid("wait_timeout", "must be an integer number of milliseconds from 1 to 2147483647");
    }
}

void check_role(const std::string& value) {
    if (value != "master" && value != "slave") invalid("role", "must be \"master\" or \"slave\"");
}

}  // namespace rsh
