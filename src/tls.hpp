// TLS over an already connected non-blocking socket, with OpenSSL (Debian's
// hiredis 0.14 has no TLS). One shared SSL_CTX per distinct TlsSettings.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "config.hpp"
#include "socket_io.hpp"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;

namespace rsh {

class TlsContext;

// The cached context for these settings (created on first use; thread-safe).
// Throws IoError("ssl ...: <OpenSSL reason>") when files cannot be loaded.
std::shared_ptr<TlsContext> tls_context_for(const TlsSettings& settings);

class TlsStream {
public:
    // Handshakes over fd (owned by the caller) before the deadline. Sends SNI
    // (server_name, else host when it is a name), verifies chain and name when
    // settings.verify. Throws IoError("ssl handshake failed: <reason>") or
    // IoError("timeout").
    TlsStream(std::shared_ptr<TlsContext> context, int fd, const std::string& host,
              const Deadline& deadline);
    ~TlsStream();
    TlsStream(const TlsStream&) = delete;
    TlsStream& operator=(const TlsStream&) = delete;

    // Writes all bytes before the deadline; throws IoError.
    void write_all(const char* data, std::size_t len, const Deadline& deadline);
    // Reads at least one byte before the deadline; throws IoError ("closed" on EOF).
    std::size_t read_some(char* buf, std::size_t cap, const Deadline& deadline);
    // True when decrypted bytes are buffered (an idle pooled stream must have none).
    bool has_buffered_bytes() const;
    bool session_reused() const;

private:
    std::shared_ptr<TlsContext> context_;
    SSL* ssl_ = nullptr;
    int fd_;
};

}  // namespace rsh
