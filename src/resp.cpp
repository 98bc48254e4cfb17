#include "resp.hpp"

#include <new>
#include <string>

#include <hiredis/read.h>

#include "errors.hpp"

namespace rsh {
namespace {

// Callbacks run inside hiredis (C): they must not throw. A nullptr return makes
// the reader fail, which next() turns into a ProtocolError.
thread_local long long t_max_array_elements = 0;
thread_local bool t_array_limit_hit = false;

Reply* attach(const redisReadTask* task, Reply* reply) {
    if (task->parent) {
        auto* parent = static_cast<Reply*>(task->parent->obj);
        parent->elements[static_cast<std::size_t>(task->idx)].reset(reply);
    }
    return reply;
}

Reply* make(const redisReadTask* task, Reply::Type type) {
    auto* reply = new (std::nothrow) Reply;
    if (!reply) return nullptr;
    reply->type = type;
    return attach(task, reply);
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
    Reply::Type type = task->type == REDIS_REPLY_ERROR    ? Reply::Type::Error
                       : task->type == REDIS_REPLY_STATUS ? Reply::Type::Status
                                                          : Reply::Type::String;
    try {
        std::string copy(str, len);
        Reply* reply = make(task, type);
        if (reply) reply->str = std::move(copy);
        return reply;
    } catch (...) {
        return nullptr;
    }
}

void* create_array(const redisReadTask* task, int elements) {
    if (elements > t_max_array_elements) {
        t_array_limit_hit = true;
        return nullptr;
    }
    try {
        auto owned = std::make_unique<Reply>();
        owned->type = Reply::Type::Array;
        owned->elements.resize(static_cast<std::size_t>(elements));
        return attach(task, owned.release());
    } catch (...) {
        return nullptr;
    }
}

void* create_integer(const redisReadTask* task, long long value) {
    Reply* reply = make(task, Reply::Type::Integer);
    if (reply) reply->integer = value;
    return reply;
}

void* create_nil(const redisReadTask* task) { return make(task, Reply::Type::Nil); }

// Only ever called on the root object: children are owned by their parent.
void free_object(void* obj) { delete static_cast<Reply*>(obj); }

redisReplyObjectFunctions kReplyFunctions = {
    create_string, create_array, create_integer, create_nil, free_object,
};

}  // namespace

void ReplyReader::ReaderDeleter::operator()(redisReader* r) const { redisReaderFree(r); }

ReplyReader::ReplyReader(ReaderLimits limits)
    : reader_(redisReaderCreateWithFunctions(&kReplyFunctions)), limits_(limits), scanner_(limits) {
    if (!reader_) throw std::bad_alloc();
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
    t_max_array_elements = limits_.max_array_elements;
    t_array_limit_hit = false;
    int rc = redisReaderGetReply(reader_.get(), &raw);
    if (rc != REDIS_OK) {
        failed_ = true;
        if (t_array_limit_hit) {
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
