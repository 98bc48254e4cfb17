#include "resp_scanner.hpp"

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "errors.hpp"

namespace rsh {
namespace {

// Longest valid length or integer line: "-9223372036854775808".
constexpr std::size_t kMaxHeaderLen = 20;

// Redis's string2ll rules (what hiredis 1.x applies): optional '-', no leading
// zeros, no '+', no spaces, within long long.
bool parse_ll(const char* s, std::size_t len, long long& out) {
    if (len == 0) return false;
    if (len == 1 && s[0] == '0') {
        out = 0;
        return true;
    }
    bool negative = false;
    std::size_t i = 0;
    if (s[0] == '-') {
        negative = true;
        i = 1;
    }
    if (i >= len || s[i] < '1' || s[i] > '9') return false;
    unsigned long long v = 0;
    const unsigned long long limit = negative ? static_cast<unsigned long long>(LLONG_MAX) + 1 : LLONG_MAX;
    for (; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
        const unsigned digit = static_cast<unsigned>(s[i] - '0');
        if (v > (limit - digit) / 10) return false;
        v = v * 10 + digit;
    }
    out = negative ? static_cast<long long>(0 - v) : static_cast<long long>(v);
    return true;
}

// The RESP3 types a HELLO 2 connection never receives (named as hiredis 1.x does).
const char* resp3_type_name(char c) {
    switch (c) {
    case ',': return "double";
    case '#': return "boolean";
    case '_': return "null";
    case '%': return "map";
    case '~': return "set";
    case '>': return "push";
    case '(': return "big number";
    case '=': return "verbatim string";
    case '|': return "attribute";
    default: return nullptr;
    }
}

const char* bad_number_message(char kind) {
    switch (kind) {
    case '$': return "Bad bulk string length";
    case '*': return "Bad multi-bulk length";
    default: return "Bad integer value";
    }
}

}  // namespace

ReplyScanner::ReplyScanner(const ReaderLimits& limits) : limits_(limits) {
    if (limits_.max_depth > kMaxDepth) limits_.max_depth = kMaxDepth;
}

void ReplyScanner::fail(const std::string& why) { throw ProtocolError("protocol error: " + why); }

void ReplyScanner::count(std::size_t bytes) {
    reply_bytes_ += bytes;
    if (reply_bytes_ > limits_.max_reply_bytes) {
        fail("reply larger than " + std::to_string(limits_.max_reply_bytes) + " bytes");
    }
}

// A value is complete: it fills a slot of the innermost open array, which may
// complete that array in turn; with no array open the reply is done.
void ReplyScanner::element_done() {
    state_ = State::Type;
    while (depth_ > 0) {
        if (--open_[depth_ - 1] > 0) return;
        --depth_;
    }
    reply_bytes_ = 0;
    reply_elements_ = 0;
}

void ReplyScanner::header_done() {
    long long value = 0;
    if (!parse_ll(header_, header_len_, value)) fail(bad_number_message(kind_));
    if (kind_ == ':') return element_done();
    if (kind_ == '$') {
        if (value == -1) return element_done();
        if (value < 0) fail("Bulk string length out of range");
        const unsigned long long bytes = static_cast<unsigned long long>(value);
        // refused before any byte of it is buffered (reply_bytes_ <= the limit: no overflow)
        if (bytes > limits_.max_reply_bytes - reply_bytes_) {
            fail("reply larger than " + std::to_string(limits_.max_reply_bytes) + " bytes (a bulk string of " +
                 std::to_string(value) + " bytes)");
        }
        bulk_left_ = bytes;
        state_ = bytes == 0 ? State::BulkCr : State::Bulk;
        return;
    }
    // '*'
    if (value == -1 || value == 0) return element_done();
    if (value < 0 || value > INT_MAX) fail("Multi-bulk length out of range");
    if (value > limits_.max_array_elements - reply_elements_) {
        fail("more than " + std::to_string(limits_.max_array_elements) + " elements in one reply (an array of " +
             std::to_string(value) + ")");
    }
    if (depth_ >= limits_.max_depth) {
        fail("arrays nested beyond depth " + std::to_string(limits_.max_depth));
    }
    reply_elements_ += value;
    open_[depth_++] = value;
    state_ = State::Type;
}

void ReplyScanner::scan(const char* data, std::size_t len) {
    std::size_t i = 0;
    while (i < len) {
        switch (state_) {
        case State::Type: {
            const char c = data[i++];
            kind_ = c;
            cr_ = false;
            header_len_ = 0;
            if (c == '+' || c == '-') {
                state_ = State::Line;
            } else if (c == '$' || c == '*' || c == ':') {
                state_ = State::Header;
            } else {
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(c));
                const char* resp3 = resp3_type_name(c);
                fail(std::string("invalid reply type byte ") + hex +
                     (resp3 ? std::string(" (RESP3 ") + resp3 + " reply type)" : std::string()));
            }
            break;
        }
        case State::Line: {  // status or error text up to CRLF; CR and LF never inside (hiredis 1.x rule)
            if (cr_) {
                if (data[i++] != '\n') fail("Bad simple string value");
                cr_ = false;
                element_done();
                break;
            }
            std::size_t n = 0;
            while (i + n < len && data[i + n] != '\r' && data[i + n] != '\n') ++n;
            count(n);
            i += n;
            if (i < len) {
                if (data[i++] == '\n') fail("Bad simple string value");
                cr_ = true;
            }
            break;
        }
        case State::Header: {  // at most kMaxHeaderLen digits: framing, not counted
            const char c = data[i++];
            if (cr_) {
                if (c != '\n') fail(bad_number_message(kind_));
                cr_ = false;
                header_done();
            } else if (c == '\r') {
                cr_ = true;
            } else if (header_len_ == kMaxHeaderLen) {
                fail(bad_number_message(kind_));
            } else {
                header_[header_len_++] = c;
            }
            break;
        }
        case State::Bulk: {
            const std::size_t n = bulk_left_ < len - i ? static_cast<std::size_t>(bulk_left_) : len - i;
            count(n);
            i += n;
            bulk_left_ -= n;
            if (bulk_left_ == 0) state_ = State::BulkCr;
            break;
        }
        case State::BulkCr:
            if (data[i++] != '\r') fail("bulk string not followed by CRLF");
            state_ = State::BulkLf;
            break;
        case State::BulkLf:
            if (data[i++] != '\n') fail("bulk string not followed by CRLF");
            element_done();
            break;
        }
    }
}

}  // namespace rsh
