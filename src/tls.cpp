// TLS with OpenSSL over a caller-owned non-blocking socket.
//
// Contexts: one SSL_CTX per distinct (verify, trusted_certificate, client_cert,
// client_priv_key), cached for the life of the process and shared by every
// server_name; a TlsContext is that SSL_CTX plus the server_name of one config.
// Sessions: client-side cache keyed by (server_name, host, peer address), fed by
// the new-session callback (TLS 1.3 tickets arrive after the handshake).
// Writes never raise SIGPIPE: the SSL talks to the fd through a small BIO that
// uses send(MSG_NOSIGNAL)/recv instead of the socket BIO's write()/read().
#include "tls.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "errors.hpp"

namespace rsh {

namespace {

// ------------------------------------------------------------------ RAII

struct SslCtxDeleter {
    void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslDeleter {
    void operator()(SSL* p) const { SSL_free(p); }
};
struct SessionDeleter {
    void operator()(SSL_SESSION* p) const { SSL_SESSION_free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionDeleter>;

// ------------------------------------------------------------------ errors

// The reason of the earliest queued OpenSSL error (the root cause), then an
// empty queue. `fallback` when nothing was queued.
std::string take_openssl_reason(const char* fallback) {
    unsigned long first = ERR_get_error();
    ERR_clear_error();
    if (first == 0) return fallback;
    if (ERR_GET_LIB(first) == ERR_LIB_SYS) return errno_message(ERR_GET_REASON(first));
    const char* reason = ERR_reason_error_string(first);
    if (reason) return reason;
    char buf[256];
    ERR_error_string_n(first, buf, sizeof buf);
    return buf;
}

// Why an SSL_* call failed (not WANT_*), in the words of the contract:
// "closed" for every flavour of EOF, errno text for socket errors, else OpenSSL's reason.
std::string failure_reason(int ssl_error, int saved_errno) {
    switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return "closed";
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return saved_errno == 0 ? "closed" : errno_message(saved_errno);
    case SSL_ERROR_SSL: {
        unsigned long first = ERR_peek_error();
        if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
            ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return "closed";
        }
        return take_openssl_reason("ssl error");
    }
    default:
        ERR_clear_error();
        return "ssl error " + std::to_string(ssl_error);
    }
}

// ------------------------------------------------------------------ the fd BIO

// A socket BIO that never raises SIGPIPE and never closes the fd.
struct FdBio {
    int fd;
    bool eof = false;
};

FdBio* fd_bio(BIO* bio) { return static_cast<FdBio*>(BIO_get_data(bio)); }

int fd_bio_write(BIO* bio, const char* data, int len) {
    BIO_clear_retry_flags(bio);
    ssize_t n = ::send(fd_bio(bio)->fd, data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_write(bio);
    }
    return static_cast<int>(n);
}

int fd_bio_read(BIO* bio, char* buf, int cap) {
    BIO_clear_retry_flags(bio);
    FdBio* state = fd_bio(bio);
    ssize_t n = ::recv(state->fd, buf, static_cast<std::size_t>(cap), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_read(bio);
    } else if (n == 0) {
        state->eof = true;
    }
    return static_cast<int>(n);
}

int fd_bio_puts(BIO* bio, const char* str) {
    return fd_bio_write(bio, str, static_cast<int>(std::char_traits<char>::length(str)));
}

long fd_bio_ctrl(BIO* bio, int cmd, long, void* ptr) {
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return fd_bio(bio)->eof ? 1 : 0;
    case BIO_C_GET_FD:
        if (ptr) *static_cast<int*>(ptr) = fd_bio(bio)->fd;
        return fd_bio(bio)->fd;
    default:
        return 0;  // not supported (pending counts, kTLS, ...)
    }
}

int fd_bio_create(BIO* bio) {
    BIO_set_data(bio, nullptr);
    BIO_set_init(bio, 0);
    return 1;
}

int fd_bio_destroy(BIO* bio) {
    delete fd_bio(bio);
    BIO_set_data(bio, nullptr);
    BIO_set_init(bio, 0);
    return 1;
}

BIO_METHOD* make_fd_bio_method() {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "rsh socket (MSG_NOSIGNAL)");
    if (!m) return nullptr;
    BIO_meth_set_write(m, fd_bio_write);
    BIO_meth_set_read(m, fd_bio_read);
    BIO_meth_set_puts(m, fd_bio_puts);
    BIO_meth_set_ctrl(m, fd_bio_ctrl);
    BIO_meth_set_create(m, fd_bio_create);
    BIO_meth_set_destroy(m, fd_bio_destroy);
    return m;
}

// The method lives as long as the process (BIOs may outlive any owner we could name).
BIO_METHOD* fd_bio_method() {
    static BIO_METHOD* method = make_fd_bio_method();
    return method;
}

BIO* new_fd_bio(int fd) {
    BIO_METHOD* method = fd_bio_method();
    BIO* bio = method ? BIO_new(method) : nullptr;
    if (!bio) return nullptr;
    BIO_set_data(bio, new FdBio{fd});
    BIO_set_init(bio, 1);
    return bio;
}

// ------------------------------------------------------------------ names

// "127.0.0.1", "::1" or "[::1]" -> the address text OpenSSL accepts; nullopt-like "" otherwise.
std::string ip_literal(const std::string& name) {
    std::string text = name;
    if (text.size() > 2 && text.front() == '[' && text.back() == ']') {
        text = text.substr(1, text.size() - 2);
    }
    unsigned char buf[sizeof(in6_addr)];
    if (inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1) {
        return text;
    }
    return "";
}

// Names that identify no certificate (unix socket paths, nothing at all).
bool is_checkable_name(const std::string& name) {
    return !name.empty() && name.front() != '/' && name.rfind("unix:", 0) != 0;
}

// "ip:port" or the unix path of the connected peer: part of the session key, so
// a session is only offered back to the server it came from.
std::string peer_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
    char text[INET6_ADDRSTRLEN] = {0};
    switch (ss.ss_family) {
    case AF_INET: {
        auto* in = reinterpret_cast<sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
        auto* un = reinterpret_cast<sockaddr_un*>(&ss);
        return std::string("unix:") + un->sun_path;
    }
    default:
        return "";
    }
}

// What we keep with each SSL (in an ex_data slot, freed with the SSL).
struct StreamState {
    std::string session_key;  // where its sessions are remembered
    pid_t owner;              // the process that handshook; a forked child must not write
    bool broken = false;      // a fatal error or timeout: no close_notify
};

void free_stream_state(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<StreamState*>(ptr);
}

int stream_state_index() {
    static int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_stream_state);
    return index;
}

StreamState* stream_state(SSL* ssl) {
    return static_cast<StreamState*>(SSL_get_ex_data(ssl, stream_state_index()));
}

int shared_context_index() {
    static int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

}  // namespace

// ------------------------------------------------------------------ contexts

class TlsContext {
public:
    // The SSL_CTX of one (verify, CA, client cert, key) and the sessions it resumes.
    struct Shared {
        SslCtxPtr ctx;
        bool verify = false;
        std::mutex sessions_mutex;
        std::map<std::string, SessionPtr> sessions;

        void remember(const std::string& key, SSL_SESSION* session) {  // takes a reference
            std::lock_guard<std::mutex> lock(sessions_mutex);
            sessions[key] = SessionPtr(session);
        }
        SessionPtr recall(const std::string& key) {
            std::lock_guard<std::mutex> lock(sessions_mutex);
            auto it = sessions.find(key);
            if (it == sessions.end()) return nullptr;
            if (SSL_SESSION_up_ref(it->second.get()) != 1) return nullptr;
            return SessionPtr(it->second.get());
        }
        void forget(const std::string& key) {
            std::lock_guard<std::mutex> lock(sessions_mutex);
            sessions.erase(key);
        }
    };

    TlsContext(std::shared_ptr<Shared> shared, std::string server_name)
        : shared_(std::move(shared)), server_name_(std::move(server_name)) {}

    SSL_CTX* ctx() const { return shared_->ctx.get(); }
    Shared& shared() const { return *shared_; }
    bool verify() const { return shared_->verify; }
    const std::string& server_name() const { return server_name_; }

private:
    std::shared_ptr<Shared> shared_;
    std::string server_name_;
};

namespace {

// OpenSSL hands us each new resumable session (after the handshake in TLS 1.2,
// with each ticket in TLS 1.3); returning 1 keeps its reference.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
    StreamState* state = stream_state(ssl);
    auto* shared = static_cast<TlsContext::Shared*>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), shared_context_index()));
    if (!state || !shared || !SSL_SESSION_is_resumable(session)) return 0;
    shared->remember(state->session_key, session);
    return 1;
}

std::shared_ptr<TlsContext::Shared> make_shared_context(const TlsSettings& s) {
    ERR_clear_error();
    auto shared = std::make_shared<TlsContext::Shared>();
    shared->verify = s.verify;
    shared->ctx.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX* ctx = shared->ctx.get();
    if (!ctx) throw IoError("ssl context: " + take_openssl_reason("cannot create"));
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        throw IoError("ssl context: " + take_openssl_reason("cannot require TLS 1.2"));
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if (s.verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
        if (!s.trusted_certificate.empty()) {
            if (SSL_CTX_load_verify_file(ctx, s.trusted_certificate.c_str()) != 1) {
                throw IoError("ssl trusted certificate: " +
                              take_openssl_reason("cannot load"));
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            throw IoError("ssl trusted certificate: " +
                          take_openssl_reason("cannot load the default trust store"));
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    }

    if (!s.client_priv_key.empty() && s.client_cert.empty()) {
        throw IoError("ssl client certificate: ssl_client_priv_key is set without ssl_client_cert");
    }
    if (!s.client_cert.empty()) {
        if (SSL_CTX_use_certificate_chain_file(ctx, s.client_cert.c_str()) != 1) {
            throw IoError("ssl client certificate: " + take_openssl_reason("cannot load"));
        }
        // No key file: the key is expected in the certificate's PEM file.
        const std::string& key = s.client_priv_key.empty() ? s.client_cert : s.client_priv_key;
        if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
            throw IoError("ssl client private key: " + take_openssl_reason("cannot load"));
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            throw IoError("ssl client private key: " +
                          take_openssl_reason("does not match the certificate"));
        }
    }

    // Client-side session cache: OpenSSL never looks client sessions up itself,
    // so keep none internally and store them per server from the callback.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_ex_data(ctx, shared_context_index(), shared.get());
    ERR_clear_error();
    return shared;
}

}  // namespace

std::shared_ptr<TlsContext> tls_context_for(const TlsSettings& settings) {
    using SharedKey = std::tuple<bool, std::string, std::string, std::string>;
    using ContextKey = std::pair<SharedKey, std::string>;
    struct Cache {
        std::mutex mutex;
        std::map<SharedKey, std::shared_ptr<TlsContext::Shared>> shared;
        std::map<ContextKey, std::shared_ptr<TlsContext>> contexts;
    };
    // Never destroyed: freeing SSL_CTXs from a static destructor could run after
    // OpenSSL's own atexit cleanup.
    static Cache* cache = new Cache;

    SharedKey shared_key{settings.verify, settings.trusted_certificate, settings.client_cert,
                         settings.client_priv_key};
    ContextKey context_key{shared_key, settings.server_name};

    std::lock_guard<std::mutex> lock(cache->mutex);
    auto found = cache->contexts.find(context_key);
    if (found != cache->contexts.end()) return found->second;

    auto& shared = cache->shared[shared_key];
    if (!shared) {
        try {
            shared = make_shared_context(settings);
        } catch (...) {
            cache->shared.erase(shared_key);  // a file may appear later: retry next time
            throw;
        }
    }
    auto context = std::make_shared<TlsContext>(shared, settings.server_name);
    cache->contexts.emplace(context_key, context);
    return context;
}

// ------------------------------------------------------------------ streams

namespace {

// Why the handshake failed: names verification failures explicitly.
std::string handshake_failure(SSL* ssl, int ssl_error, int saved_errno) {
    if (ssl_error == SSL_ERROR_SSL) {
        unsigned long first = ERR_peek_error();
        if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
            ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
            ERR_clear_error();
            long result = SSL_get_verify_result(ssl);
            if (result == X509_V_ERR_HOSTNAME_MISMATCH || result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
                return "hostname mismatch";
            }
            if (result == X509_V_OK) return "certificate verify failed";
            return std::string("certificate verify failed: ") +
                   X509_verify_cert_error_string(result);
        }
    }
    return failure_reason(ssl_error, saved_errno);
}

void mark_broken(SSL* ssl) {
    if (StreamState* state = stream_state(ssl)) state->broken = true;
}

// wait_ready, remembering a timeout: a stream cut mid-record gets no close_notify.
void wait_or_break(SSL* ssl, int fd, Ready what, const Deadline& deadline) {
    try {
        wait_ready(fd, what, deadline);
    } catch (...) {
        mark_broken(ssl);
        throw;
    }
}

// After a failed SSL_read_ex/SSL_write_ex: waits for what OpenSSL asked for, or
// throws. A TLS 1.3 server may reject a client certificate only after the
// client's handshake completed: "ssl read failed: tlsv13 alert certificate required".
void settle(SSL* ssl, int fd, int rc, int saved_errno, const char* op, const Deadline& deadline) {
    int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ) return wait_or_break(ssl, fd, Ready::Read, deadline);
    if (err == SSL_ERROR_WANT_WRITE) return wait_or_break(ssl, fd, Ready::Write, deadline);
    mark_broken(ssl);
    std::string reason = failure_reason(err, saved_errno);
    if (reason == "closed" || err != SSL_ERROR_SSL) throw IoError(reason);
    throw IoError(std::string("ssl ") + op + " failed: " + reason);
}

}  // namespace

TlsStream::TlsStream(std::shared_ptr<TlsContext> context, int fd, const std::string& host,
                     const Deadline& deadline)
    : context_(std::move(context)), fd_(fd) {
    ERR_clear_error();
    SslPtr ssl(SSL_new(context_->ctx()));
    if (!ssl) throw IoError("ssl handshake failed: " + take_openssl_reason("cannot create"));
    BIO* bio = new_fd_bio(fd);
    if (!bio) throw IoError("ssl handshake failed: " + take_openssl_reason("cannot create a BIO"));
    SSL_set_bio(ssl.get(), bio, bio);  // the SSL owns the BIO, never the fd

    const std::string& name = context_->server_name().empty() ? host : context_->server_name();
    const std::string ip = ip_literal(name);
    if (is_checkable_name(name)) {
        // SNI carries names only (RFC 6066), never addresses.
        if (ip.empty() && SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
            throw IoError("ssl handshake failed: " + take_openssl_reason("invalid server name"));
        }
        if (context_->verify()) {
            X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            int ok = ip.empty() ? X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size())
                                : X509_VERIFY_PARAM_set1_ip_asc(param, ip.c_str());
            if (ok != 1) {
                throw IoError("ssl handshake failed: " + take_openssl_reason("invalid server name"));
            }
        }
    }

    // Resume the last session with this server, if any.
    auto* state = new StreamState{
        context_->server_name() + "\n" + host + "\n" + peer_address(fd), current_pid()};
    if (SSL_set_ex_data(ssl.get(), stream_state_index(), state) != 1) {
        delete state;
        throw IoError("ssl handshake failed: " + take_openssl_reason("cannot keep state"));
    }
    const std::string& key = state->session_key;
    bool offered = false;
    if (SessionPtr session = context_->shared().recall(key)) {
        offered = SSL_set_session(ssl.get(), session.get()) == 1;  // takes its own reference
        ERR_clear_error();
    }

    for (;;) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_connect(ssl.get());
        if (rc == 1) break;
        int saved_errno = errno;
        int err = SSL_get_error(ssl.get(), rc);
        if (err == SSL_ERROR_WANT_READ) {
            wait_ready(fd, Ready::Read, deadline);
        } else if (err == SSL_ERROR_WANT_WRITE) {
            wait_ready(fd, Ready::Write, deadline);
        } else {
            std::string reason = handshake_failure(ssl.get(), err, saved_errno);
            if (offered) context_->shared().forget(key);
            throw IoError("ssl handshake failed: " + reason);
        }
    }
    ERR_clear_error();
    ssl_ = ssl.release();
}

TlsStream::~TlsStream() {
    if (!ssl_) return;
    StreamState* state = stream_state(ssl_);
    if (state && !state->broken && state->owner == current_pid()) {
        // One non-blocking attempt to send close_notify; never waits for the
        // peer's. Servers drop the session of a connection closed without it
        // (no resumption next time).
        ERR_clear_error();
        (void)SSL_shutdown(ssl_);
    } else {
        // Abandoned (a forked child, a broken stream): send nothing.
        SSL_set_quiet_shutdown(ssl_, 1);
    }
    SSL_free(ssl_);
    ERR_clear_error();
}

void TlsStream::write_all(const char* data, std::size_t len, const Deadline& deadline) {
    while (len > 0) {
        ERR_clear_error();
        errno = 0;
        std::size_t written = 0;
        int rc = SSL_write_ex(ssl_, data, len, &written);
        if (rc == 1) {
            data += written;
            len -= written;
            continue;
        }
        settle(ssl_, fd_, rc, errno, "write", deadline);
    }
}

std::size_t TlsStream::read_some(char* buf, std::size_t cap, const Deadline& deadline) {
    for (;;) {
        ERR_clear_error();
        errno = 0;
        std::size_t got = 0;
        int rc = SSL_read_ex(ssl_, buf, cap, &got);
        if (rc == 1) return got;
        settle(ssl_, fd_, rc, errno, "read", deadline);
    }
}

bool TlsStream::has_buffered_bytes() const { return SSL_pending(ssl_) > 0; }

bool TlsStream::session_reused() const { return SSL_session_reused(ssl_) == 1; }

}  // namespace rsh
