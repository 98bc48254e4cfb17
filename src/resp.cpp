#include "resp.hpp"

#include <new>
#include <string>

#include <hiredis/hiredis.h>  // HIREDIS_MAJOR
#include <hiredis/read.h>

#include "errors.hpp"

namespace rsh {
namespace {
class SpareReplies;
}  // namespace

// What the callbacks of one reader share with its next(): set by next() per reply.
struct ReplyParseState {
    SpareReplies* spare = nullptr;  // this thread's
    long long max_array_elements = 0;
    int refused_type = 0;  // a RESP3 type seen by a callback
    bool array_limit_hit = false;
    bool too_deep = false;
};

namespace {

// Callbacks run inside hiredis (C): they must not throw. A nullptr return makes
// the reader fail, which next() turns into a ProtocolError. What they share with
// next() is the reader's ReplyParseState, which hiredis hands to every task it
// creates (privdata): no thread-local lookup per reply.

// --- hiredis 0.14 / 1.x compatibility ----------------------------------------
// We speak RESP2 (never HELLO 3). hiredis 1.x also decodes RESP3 (doubles, booleans,
// maps, sets, pushes, attributes, big numbers, verbatim strings, `_` null), which
// no RESP2 connection carries and 0.14 refuses by their type byte: the callbacks
// refuse them too, so both versions accept exactly the same replies. 1.x also
// dropped 0.14's nesting stop (arrays 8 deep) and takes multi-bulk lengths up to
// 2^32-1 where 0.14 stops at INT_MAX: restored below with 0.14's own messages.

constexpr int kHiredis014MaxArrayDepth = 8;  // 0.14: "depth > 7" counts from 0

bool is_resp2(int type) {
    switch (type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_ARRAY:
    case REDIS_REPLY_INTEGER:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        return true;
    default:  // REDIS_REPLY_NIL is RESP3's `_`: RESP2's nils arrive as STRING or ARRAY tasks
        return false;
    }
}

ReplyParseState& state_of(const redisReadTask* task) { return *static_cast<ReplyParseState*>(task->privdata); }

bool refuse_resp3(const redisReadTask* task) {
    if (is_resp2(task->type)) return false;
    state_of(task).refused_type = task->type;
    return true;
}

const char* resp3_type_name(int type) {
    switch (type) {
    case REDIS_REPLY_NIL: return "null";
#if HIREDIS_MAJOR >= 1
    case REDIS_REPLY_DOUBLE: return "double";
    case REDIS_REPLY_BOOL: return "boolean";
    case REDIS_REPLY_MAP: return "map";
    case REDIS_REPLY_SET: return "set";
    case REDIS_REPLY_ATTR: return "attribute";
    case REDIS_REPLY_PUSH: return "push";
    case REDIS_REPLY_BIGNUM: return "big number";
    case REDIS_REPLY_VERB: return "verbatim string";
#endif
    default: return "unknown";
    }
}

int array_depth(const redisReadTask* task) {
    int depth = 0;
    for (const redisReadTask* t = task->parent; t; t = t->parent) ++depth;
    return depth;
}

// --- spare replies ---------------------------------------------------------------

// Set when this thread's spare replies are destroyed (thread exit): replies
// dropped after that are freed. Trivially destructible, so always readable.
thread_local bool t_spare_gone = false;

// Per thread: replies are parsed and dropped on the thread of their call.
// Enough spares for the replies a worker's pipelines hold at once (32 calls of a
// set with metadata hold about 800 until they are read): with 256, a cluster
// worker's profile showed a new and a delete per 5 replies. What the spares keep
// beyond their objects is bounded in all (kMaxKeptTotal), not only per reply.
class SpareReplies {
public:
    static constexpr std::size_t kMaxSpare = 2048;
    static constexpr std::size_t kMaxKeptBytes = 64 * 1024;
    static constexpr std::size_t kMaxKeptElements = 4096;
    static constexpr std::size_t kMaxKeptTotal = 1024 * 1024;

    SpareReplies() { spare_.reserve(kMaxSpare); }
    ~SpareReplies() {
        t_spare_gone = true;
        for (Reply* reply : spare_) delete reply;
    }

    Reply* take() noexcept {
        if (spare_.empty()) return new (std::nothrow) Reply;
        Reply* reply = spare_.back();
        spare_.pop_back();
        kept_total_ -= kept(*reply);
        return reply;
    }

    // Takes the whole tree: the elements come back here too (one lookup of
    // the thread's spares per reply, not per element).
    void give(Reply* reply) noexcept {
        for (ReplyPtr& element : reply->elements) {
            if (element) give(element.release());
        }
        reply->elements.clear();
        const std::size_t bytes = kept(*reply);
        if (spare_.size() == kMaxSpare || reply->str.capacity() > kMaxKeptBytes ||
            reply->elements.capacity() > kMaxKeptElements || kept_total_ + bytes > kMaxKeptTotal) {
            delete reply;
            return;
        }
        reply->type = Reply::Type::Nil;
        reply->str.clear();
        reply->integer = 0;
        kept_total_ += bytes;
        spare_.push_back(reply);  // within the reserved capacity: cannot throw
    }

private:
    // Heap bytes a spare reply keeps (a short string's are inside the object).
    static std::size_t kept(const Reply& reply) noexcept {
        const std::size_t inline_chars = std::string().capacity();
        return (reply.str.capacity() > inline_chars ? reply.str.capacity() : 0) +
               reply.elements.capacity() * sizeof(ReplyPtr);
    }

    std::vector<Reply*> spare_;
    std::size_t kept_total_ = 0;
};

thread_local SpareReplies t_spare;

Reply* attach(const redisReadTask* task, Reply* reply) {
    if (task->parent) {
        auto* parent = static_cast<Reply*>(task->parent->obj);
        parent->elements[static_cast<std::size_t>(task->idx)].reset(reply);
    }
    return reply;
}

Reply* make(const redisReadTask* task, Reply::Type type) {
    Reply* reply = state_of(task).spare->take();
    if (!reply) return nullptr;
    reply->type = type;
    return attach(task, reply);
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
    if (refuse_resp3(task)) return nullptr;
    Reply::Type type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::Error
                       : task->type == REDIS_REPLY_STATUS ? Reply::Type::Status
                                                          : Reply::Type::String;
    Reply* reply = state_of(task).spare->take();
    if (!reply) return nullptr;
    try {
        reply->str.assign(str, len);  // a spare reply's buffer is reused
    } catch (...) {
        ReplyRecycler()(reply);
        return nullptr;
    }
    reply->type = type;
    return attach(task, reply);
}

void* create_array(const redisReadTask* task, unsigned long long elements) {
    if (refuse_resp3(task)) return nullptr;
    ReplyParseState& state = state_of(task);
    if (array_depth(task) >= kHiredis014MaxArrayDepth) {
        state.too_deep = true;
        return nullptr;
    }
    if (elements > static_cast<unsigned long long>(state.max_array_elements)) {
        state.array_limit_hit = true;
        return nullptr;
    }
    ReplyPtr owned(state.spare->take());
    if (!owned) return nullptr;
    try {
        owned->elements.resize(static_cast<std::size_t>(elements));
    } catch (...) {
        return nullptr;
    }
    owned->type = Reply::Type::Array;
    return attach(task, owned.release());
}

void* create_integer(const redisReadTask* task, long long value) {
    if (refuse_resp3(task)) return nullptr;
    Reply* reply = make(task, Reply::Type::Integer);
    if (reply) reply->integer = value;
    return reply;
}

void* create_nil(const redisReadTask* task) {
    if (refuse_resp3(task)) return nullptr;
    return make(task, Reply::Type::Nil);
}

// Only ever called on the root object: children are owned by their parent.
void free_object(void* obj) { ReplyRecycler()(static_cast<Reply*>(obj)); }

#if HIREDIS_MAJOR >= 1
void* create_array_1x(const redisReadTask* task, size_t elements) { return create_array(task, elements); }
void* refuse_double(const redisReadTask* task, double, char*, size_t) {
    state_of(task).refused_type = task->type;
    return nullptr;
}
void* refuse_bool(const redisReadTask* task, int) {
    state_of(task).refused_type = task->type;
    return nullptr;
}
redisReplyObjectFunctions kReplyFunctions = {
    create_string, create_array_1x, create_integer, refuse_double, create_nil, refuse_bool, free_object,
};
// 0.14 parses multi-bulk lengths into an int.
constexpr long long kMaxMultiBulkLength = 2147483647;
#else
void* create_array_014(const redisReadTask* task, int elements) {
    return create_array(task, static_cast<unsigned long long>(elements));
}
redisReplyObjectFunctions kReplyFunctions = {
    create_string, create_array_014, create_integer, create_nil, free_object,
};
#endif

redisReader* create_reader() {
    redisReader* reader = redisReaderCreateWithFunctions(&kReplyFunctions);
#if HIREDIS_MAJOR >= 1
    if (reader) reader->maxelements = kMaxMultiBulkLength;
#endif
    return reader;
}

}  // namespace

void ReplyRecycler::operator()(Reply* reply) const noexcept {
    if (t_spare_gone) {
        delete reply;  // this thread's spares are gone (its exit): each reply frees its elements
        return;
    }
    t_spare.give(reply);
}

void ReplyReader::ReaderDeleter::operator()(redisReader* r) const { redisReaderFree(r); }
void ReplyReader::StateDeleter::operator()(ReplyParseState* s) const { delete s; }

// The state lives apart from the reader object, at an address that moving the
// reader does not change: the tasks of a reply parsed in pieces keep it.
ReplyReader::ReplyReader(ReaderLimits limits)
    : reader_(create_reader()), state_(new ReplyParseState), limits_(limits), scanner_(limits) {
    if (!reader_) throw std::bad_alloc();
    reader_->privdata = state_.get();
}

ReplyReader::~ReplyReader() = default;

void ReplyReader::feed(const char* data, std::size_t len) {
    if (failed_) throw ProtocolError("protocol error: reader failed earlier");
    try {
        scanner_.scan(data, len);
    } catch (...) {
        failed_ = true;
        throw;
    }
    if (redisReaderFeed(reader_.get(), data, len) != REDIS_OK) {
        failed_ = true;
        throw ProtocolError("protocol error: out of memory");
    }
    if (reader_->len > peak_buffered_) peak_buffered_ = reader_->len;
}

ReplyPtr ReplyReader::next() {
    if (failed_) throw ProtocolError("protocol error: reader failed earlier");
    void* raw = nullptr;
    ReplyParseState& state = *state_;
    state = ReplyParseState{&t_spare, limits_.max_array_elements};  // this thread's spares: one lookup
    int rc = redisReaderGetReply(reader_.get(), &raw);
    if (rc != REDIS_OK) {
        failed_ = true;
        if (state.refused_type) {
            throw ProtocolError(std::string("protocol error: RESP3 ") + resp3_type_name(state.refused_type) +
                                " reply type on a RESP2 connection");
        }
        if (state.too_deep) {
            throw ProtocolError("protocol error: No support for nested multi bulk replies with depth > 7");
        }
        if (state.array_limit_hit) {
            throw ProtocolError("protocol error: array of more than " +
                                std::to_string(limits_.max_array_elements) + " elements");
        }
        std::string reason = reader_->errstr;
        throw ProtocolError("protocol error: " + reason);
    }
    if (!raw) return nullptr;
    return ReplyPtr(static_cast<Reply*>(raw));
}

bool ReplyReader::has_pending_bytes() const { return reader_->len > reader_->pos; }

bool ReplyReader::set_limits(const ReaderLimits& limits) {
    if (failed_ || has_pending_bytes() || !scanner_.between_replies()) return false;
    limits_ = limits;
    scanner_ = ReplyScanner(limits);
    return true;
}

}  // namespace rsh
