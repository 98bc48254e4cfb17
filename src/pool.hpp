// Per-process connection pools, one per pool name, with the semantics of
// OpenResty's cosocket pools: pool_size idle connections (LRU), idle expiry
// after keepalive_timeout, and with a backlog: at most pool_size open
// connections, further callers queue up to backlog. Thread-safe and fork-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unistd.h>

#include "errors.hpp"
#include "socket_io.hpp"

namespace rsh {

struct PoolOptions {
    std::size_t size = 30;
    std::optional<std::size_t> backlog;
};

// T needs: owner_pid(), usable_when_idle(), members idle_since (Clock::time_point)
// and keepalive_ms (double, 0 = never expires).
template <class T>
class Pool {
public:
    using Factory = std::function<std::unique_ptr<T>()>;

    // Hands a connection back to the pool on keep(), closes it otherwise.
    class Lease {
    public:
        Lease(Pool* pool, std::unique_ptr<T> conn, bool reused)
            : pool_(pool), conn_(std::move(conn)), reused_(reused) {}
        Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(std::move(o.conn_)), reused_(o.reused_) {}
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        ~Lease() { if (conn_) pool_->release(std::move(conn_), false); }

        T& operator*() const { return *conn_; }
        T* operator->() const { return conn_.get(); }
        bool reused() const { return reused_; }
        void keep() { if (conn_) pool_->release(std::move(conn_), true); }

    private:
        Pool* pool_;
        std::unique_ptr<T> conn_;
        bool reused_;
    };

    // An idle connection when one is usable, else a new one from the factory
    // (called without the lock held). Waits in the backlog until the deadline.
    Lease acquire(const PoolOptions& options, const Deadline& deadline, const Factory& open) {
        std::unique_lock<std::mutex> lock(mutex_);
        forget_if_forked();
        for (;;) {
            if (auto conn = take_idle()) return Lease(this, std::move(conn), true);
            if (!options.backlog || open_ < options.size) break;
            if (waiting_ >= *options.backlog) throw IoError("too many waiting connect operations");
            ++waiting_;
            bool woke = changed_.wait_for(lock, std::chrono::milliseconds(deadline.remaining_ms()),
                                          [&] { return !idle_.empty() || open_ < options.size; });
            --waiting_;
            if (!woke) throw IoError("timeout");
        }
        ++open_;
        lock.unlock();
        try {
            return Lease(this, open(), false);
        } catch (...) {
            lock.lock();
            --open_;
            changed_.notify_one();
            throw;
        }
    }

    std::size_t idle_count() {
        std::lock_guard<std::mutex> lock(mutex_);
        return idle_.size();
    }
    std::size_t open_count() {
        std::lock_guard<std::mutex> lock(mutex_);
        return open_;
    }
    void set_size(std::size_t size) {
        std::lock_guard<std::mutex> lock(mutex_);
        size_ = size;
    }
    // Closes the idle connections, and from now on each one handed back.
    void retire() {
        std::deque<std::unique_ptr<T>> closing;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            forget_if_forked();
            retired_ = true;
            open_ -= idle_.size();
            closing.swap(idle_);
            changed_.notify_all();
        }
    }

private:
    std::unique_ptr<T> take_idle() {
        const auto now = Clock::now();
        while (!idle_.empty()) {
            std::unique_ptr<T> conn = std::move(idle_.front());
            idle_.pop_front();
            const bool expired = conn->keepalive_ms > 0 &&
                                 now - conn->idle_since > std::chrono::duration<double, std::milli>(conn->keepalive_ms);
            if (!expired && conn->usable_when_idle()) return conn;
            --open_;  // closed by its destructor
        }
        return nullptr;
    }

    void release(std::unique_ptr<T> conn, bool reusable) {
        std::unique_ptr<T> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            forget_if_forked();
            if (conn->owner_pid() != pid_) {
                // Leased by the parent before a fork: never counted in this process.
                evicted = std::move(conn);
                changed_.notify_one();
                return;
            }
            if (reusable && !retired_) {
                conn->idle_since = Clock::now();
                idle_.push_front(std::move(conn));
                if (idle_.size() > size_) {  // least recently used goes
                    evicted = std::move(idle_.back());
                    idle_.pop_back();
                    --open_;
                }
            } else {
                evicted = std::move(conn);
                --open_;
            }
            changed_.notify_one();
        }
    }

    // A child process never uses (or says goodbye on) its parent's connections:
    // they are dropped by closing the fd copy, which sends nothing.
    void forget_if_forked() {
        pid_t now = current_pid();
        if (now == pid_) return;
        pid_ = now;
        idle_.clear();
        open_ = 0;
        waiting_ = 0;
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::unique_ptr<T>> idle_;  // front: most recently used
    std::size_t open_ = 0;                 // idle + leased
    std::size_t waiting_ = 0;
    std::size_t size_ = 30;
    bool retired_ = false;
    pid_t pid_ = current_pid();
};

// Pools by name, created on first use and kept for the life of the process.
template <class T>
class PoolRegistry {
public:
    Pool<T>& get(const std::string& name, std::size_t size) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto& pool = pools_[name];
        if (!pool) pool = std::make_unique<Pool<T>>();
        pool->set_size(size);
        return *pool;
    }

    // Pool::retire on the pool of that name, when there is one.
    void retire(const std::string& name) {
        Pool<T>* pool = nullptr;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = pools_.find(name);
            if (it != pools_.end()) pool = it->second.get();
        }
        if (pool) pool->retire();  // pools live as long as the registry
    }

private:
    std::mutex mutex_;
    std::map<std::string, std::unique_ptr<Pool<T>>> pools_;
};

}  // namespace rsh
