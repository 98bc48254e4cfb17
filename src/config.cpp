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

std::string Config::pool_name() const {
    if (pool) return *pool;
    std::string name = "resty.session.hiredis:";
    if (socket) {
        name += "unix=" + escaped(normalize_socket_path(*socket));
    } else {
        const bool ipv6 = host.find(':') != std::string::npos &&
                          host.find_first_not_of("0123456789abcdefABCDEF:.") == std::string::npos;
        name += (ipv6 ? "[" + host + "]" : escaped(host)) + ":" + std::to_string(port);
    }
    if (ssl) {
        name += ":ssl";
        if (ssl_verify.value_or(false)) name += ":verify";
        if (server_name) name += ":sni=" + escaped(*server_name);
        if (ssl_trusted_certificate) name += ":ca=" + escaped(*ssl_trusted_certificate);
        if (ssl_client_cert) name += ":cert=" + escaped(*ssl_client_cert);
        if (ssl_client_priv_key) name += ":key=" + escaped(*ssl_client_priv_key);
    }
    if (username) name += ":user=" + escaped(*username);
    if (password) name += ":pass=" + short_digest(*password);
    if (database) name += ":db=" + std::to_string(*database);
    if (role) name += ":role=" + *role;  // a checked connection never serves an unchecked pool
    return name;
}

void check_port(double value) {
    if (!is_integer(value) || value < 1 || value > 65535) {
        invalid("port", "must be an integer from 1 to 65535");
    }
}

void check_timeout(const char* field, double value, bool zero_allowed) {
    if (!std::isfinite(value) || value < 0 || (!zero_allowed && value == 0)) {
        invalid(field, zero_allowed ? "must be a non-negative number of milliseconds"
                                    : "must be a positive number of milliseconds");
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

void check_role(const std::string& value) {
    if (value != "master" && value != "slave") invalid("role", "must be \"master\" or \"slave\"");
}

}  // namespace rsh
