// Pool<T> with a fake connection: reuse, LRU, expiry, backlog, threads, fork.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "errors.hpp"
#include "pool.hpp"

namespace {

using rsh::Clock;
using rsh::Deadline;
using rsh::IoError;
using rsh::PoolOptions;
using namespace std::chrono_literals;

std::atomic<int> g_created{0};
std::atomic<int> g_destroyed{0};

struct FakeConn {
    FakeConn() : id(++g_created) {}
    ~FakeConn() { ++g_destroyed; }
    FakeConn(const FakeConn&) = delete;
    FakeConn& operator=(const FakeConn&) = delete;

    pid_t owner_pid() const { return pid; }
    bool usable_when_idle() const { return usable; }

    int id;
    pid_t pid = ::getpid();
    bool usable = true;
    Clock::time_point idle_since{};
    double keepalive_ms = 0;
};

using Pool = rsh::Pool<FakeConn>;

struct PoolTest : ::testing::Test {
    void SetUp() override {
        g_created = 0;
        g_destroyed = 0;
    }
    static std::unique_ptr<FakeConn> open() { return std::make_unique<FakeConn>(); }
    Pool::Factory factory = [] { return open(); };
    PoolOptions options(std::size_t size, std::optional<std::size_t> backlog = std::nullopt) {
        PoolOptions o;
        o.size = size;
        o.backlog = backlog;
        return o;
    }
};

TEST_F(PoolTest, ReusesTheSameConnection) {
    Pool pool;
    FakeConn* first = nullptr;
    {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        EXPECT_FALSE(lease.reused());
        first = &*lease;
        lease.keep();
    }
    EXPECT_EQ(pool.idle_count(), 1u);
    EXPECT_EQ(pool.open_count(), 1u);
    {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        EXPECT_TRUE(lease.reused());
        EXPECT_EQ(&*lease, first);
        EXPECT_EQ(pool.idle_count(), 0u);
        lease.keep();
    }
    EXPECT_EQ(g_created, 1);
    EXPECT_EQ(g_destroyed, 0);
}

TEST_F(PoolTest, MostRecentlyUsedComesBackFirst) {
    Pool pool;
    Pool::Lease a = pool.acquire(options(30), Deadline(1000), factory);
    Pool::Lease b = pool.acquire(options(30), Deadline(1000), factory);
    FakeConn* pb = &*b;
    a.keep();
    b.keep();
    Pool::Lease again = pool.acquire(options(30), Deadline(1000), factory);
    EXPECT_EQ(&*again, pb);
    again.keep();
}

TEST_F(PoolTest, EvictsLeastRecentlyUsedPastSize) {
    Pool pool;
    pool.set_size(2);
    std::vector<Pool::Lease> leases;
    for (int i = 0; i < 3; ++i) leases.push_back(pool.acquire(options(2), Deadline(1000), factory));
    std::vector<int> ids;
    for (auto& l : leases) ids.push_back(l->id);
    EXPECT_EQ(pool.open_count(), 3u);  // no backlog: open connections are not capped
    for (auto& l : leases) l.keep();   // kept in order: the first is the least recently used
    EXPECT_EQ(pool.idle_count(), 2u);
    EXPECT_EQ(pool.open_count(), 2u);
    EXPECT_EQ(g_destroyed, 1);
    // The remaining two are the last two kept, most recent first.
    Pool::Lease x = pool.acquire(options(2), Deadline(1000), factory);
    Pool::Lease y = pool.acquire(options(2), Deadline(1000), factory);
    EXPECT_EQ(x->id, ids[2]);
    EXPECT_EQ(y->id, ids[1]);
    EXPECT_EQ(g_created, 3);
    x.keep();
    y.keep();
}

TEST_F(PoolTest, KeepaliveExpiry) {
    Pool pool;
    {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        lease->keepalive_ms = 20;
        lease.keep();
    }
    std::this_thread::sleep_for(60ms);
    Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
    EXPECT_FALSE(lease.reused());
    EXPECT_EQ(lease->id, 2);
    EXPECT_EQ(g_destroyed, 1);
    EXPECT_EQ(pool.open_count(), 1u);
    lease.keep();
}

TEST_F(PoolTest, KeepaliveNotYetExpiredOrZero) {
    Pool pool;
    {
        Pool::Lease a = pool.acquire(options(30), Deadline(1000), factory);
        Pool::Lease b = pool.acquire(options(30), Deadline(1000), factory);
        a->keepalive_ms = 0;      // never expires
        b->keepalive_ms = 60000;  // not yet
        a.keep();
        b.keep();
    }
    std::this_thread::sleep_for(30ms);
    Pool::Lease x = pool.acquire(options(30), Deadline(1000), factory);
    Pool::Lease y = pool.acquire(options(30), Deadline(1000), factory);
    EXPECT_TRUE(x.reused());
    EXPECT_TRUE(y.reused());
    EXPECT_EQ(g_created, 2);
    x.keep();
    y.keep();
}

TEST_F(PoolTest, UnusableIdleConnectionsAreDropped) {
    Pool pool;
    {
        Pool::Lease a = pool.acquire(options(30), Deadline(1000), factory);
        Pool::Lease b = pool.acquire(options(30), Deadline(1000), factory);
        a->usable = false;  // e.g. the server closed it meanwhile
        b->usable = false;
        a.keep();
        b.keep();
    }
    EXPECT_EQ(pool.open_count(), 2u);
    Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
    EXPECT_FALSE(lease.reused());
    EXPECT_EQ(lease->id, 3);
    EXPECT_EQ(g_destroyed, 2);
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.open_count(), 1u);
}

TEST_F(PoolTest, LeaseWithoutKeepCloses) {
    Pool pool;
    {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        EXPECT_EQ(pool.open_count(), 1u);
    }
    EXPECT_EQ(g_destroyed, 1);
    EXPECT_EQ(pool.idle_count(), 0u);
    EXPECT_EQ(pool.open_count(), 0u);
    // A moved-from lease does not close twice.
    {
        Pool::Lease a = pool.acquire(options(30), Deadline(1000), factory);
        Pool::Lease b(std::move(a));
        EXPECT_EQ(b->id, 2);
    }
    EXPECT_EQ(g_destroyed, 2);
    EXPECT_EQ(pool.open_count(), 0u);
}

TEST_F(PoolTest, FactoryExceptionLeavesCountsRight) {
    Pool pool;
    Pool::Factory failing = []() -> std::unique_ptr<FakeConn> { throw IoError("connection refused"); };
    for (int i = 0; i < 3; ++i) {
        try {
            pool.acquire(options(1, 0), Deadline(1000), failing);
            ADD_FAILURE() << "no exception";
        } catch (const IoError& e) {
            EXPECT_STREQ(e.what(), "connection refused");
        }
    }
    EXPECT_EQ(pool.open_count(), 0u);
    // The slot is free again: size 1 with backlog 0 must not refuse or wait.
    Pool::Lease lease = pool.acquire(options(1, 0), Deadline(1000), factory);
    EXPECT_FALSE(lease.reused());
    EXPECT_EQ(pool.open_count(), 1u);
}

TEST_F(PoolTest, BacklogWaiterGetsTheKeptConnection) {
    Pool pool;
    pool.set_size(1);
    const PoolOptions opts = options(1, 1);
    Pool::Lease first = pool.acquire(opts, Deadline(1000), factory);
    FakeConn* held = &*first;

    std::promise<void> started;
    auto waiter = std::async(std::launch::async, [&] {
        started.set_value();
        Pool::Lease lease = pool.acquire(opts, Deadline(5000), factory);
        const bool same = &*lease == held && lease.reused();
        lease.keep();
        return same;
    });
    started.get_future().wait();
    std::this_thread::sleep_for(100ms);  // let it enter the wait

    // A third caller finds the backlog full.
    const auto t0 = Clock::now();
    try {
        pool.acquire(opts, Deadline(5000), factory);
        ADD_FAILURE() << "third caller was not refused";
    } catch (const IoError& e) {
        EXPECT_STREQ(e.what(), "too many waiting connect operations");
    }
    EXPECT_LT(Clock::now() - t0, 1s);  // refused at once, not after waiting

    first.keep();
    EXPECT_TRUE(waiter.get());
    EXPECT_EQ(g_created, 1);
    EXPECT_EQ(pool.open_count(), 1u);
}

TEST_F(PoolTest, BacklogWaiterOpensWhenALeaseCloses) {
    Pool pool;
    pool.set_size(1);
    const PoolOptions opts = options(1, 1);
    std::optional<Pool::Lease> first(pool.acquire(opts, Deadline(1000), factory));
    auto waiter = std::async(std::launch::async, [&] {
        Pool::Lease lease = pool.acquire(opts, Deadline(5000), factory);
        return std::make_pair(lease.reused(), lease->id);
    });
    std::this_thread::sleep_for(50ms);
    first.reset();  // closed, not kept: the waiter may open a new one
    auto [reused, id] = waiter.get();
    EXPECT_FALSE(reused);
    EXPECT_EQ(id, 2);
    EXPECT_EQ(pool.open_count(), 0u);
}

TEST_F(PoolTest, BacklogWaiterTimesOut) {
    Pool pool;
    const PoolOptions opts = options(1, 1);
    Pool::Lease held = pool.acquire(opts, Deadline(1000), factory);
    const auto t0 = Clock::now();
    try {
        pool.acquire(opts, Deadline(80), factory);
        ADD_FAILURE() << "no timeout";
    } catch (const IoError& e) {
        EXPECT_STREQ(e.what(), "timeout");
    }
    const auto waited = Clock::now() - t0;
    EXPECT_GE(waited, 70ms);
    EXPECT_LT(waited, 2s);
    // The waiter's slot is released: another caller may wait again.
    EXPECT_THROW(pool.acquire(opts, Deadline(10), factory), IoError);
    EXPECT_EQ(pool.open_count(), 1u);
}

TEST_F(PoolTest, BacklogZeroRefusesAtOnce) {
    Pool pool;
    const PoolOptions opts = options(1, 0);
    Pool::Lease held = pool.acquire(opts, Deadline(1000), factory);
    try {
        pool.acquire(opts, Deadline(1000), factory);
        ADD_FAILURE() << "not refused";
    } catch (const IoError& e) {
        EXPECT_STREQ(e.what(), "too many waiting connect operations");
    }
}

TEST_F(PoolTest, ManyThreadsNeverExceedSizeWithBacklog) {
    Pool pool;
    pool.set_size(2);
    const PoolOptions opts = options(2, 16);
    std::atomic<int> in_use{0}, max_in_use{0}, failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 300; ++i) {
                try {
                    Pool::Lease lease = pool.acquire(opts, Deadline(10000), factory);
                    int now = ++in_use;
                    int seen = max_in_use.load();
                    while (now > seen && !max_in_use.compare_exchange_weak(seen, now)) {
                    }
                    --in_use;
                    if (i % 7 == 0) continue;  // closed instead of kept
                    lease.keep();
                } catch (...) {
                    ++failures;
                }
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failures, 0);
    EXPECT_LE(max_in_use, 2);
    EXPECT_LE(pool.open_count(), 2u);
    EXPECT_EQ(pool.open_count(), pool.idle_count());
    EXPECT_EQ(g_created - g_destroyed, static_cast<int>(pool.idle_count()));
}

// Runs `child` in a forked process; returns its exit status (0 = all checks passed).
template <class F>
int in_child(F child) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(child());
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

TEST_F(PoolTest, ChildNeverGetsTheParentsIdleConnection) {
    Pool pool;
    FakeConn* parents = nullptr;
    int parents_id = 0;
    {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        parents = &*lease;
        parents_id = lease->id;
        lease.keep();
    }
    const pid_t parent_pid = ::getpid();
    int status = in_child([&] {
        Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
        // (Compare ids: the child frees the parent's copy, so its address may be reused.)
        if (lease.reused()) return 1;
        if (lease->id == parents_id) return 2;
        if (lease->owner_pid() == parent_pid) return 3;
        lease.keep();
        // The child's own connections are pooled normally.
        Pool::Lease again = pool.acquire(options(30), Deadline(1000), factory);
        if (!again.reused()) return 4;
        if (pool.open_count() != 1) return 5;
        return 0;
    });
    EXPECT_EQ(status, 0);
    // The parent still has its own.
    Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
    EXPECT_TRUE(lease.reused());
    EXPECT_EQ(&*lease, parents);
    lease.keep();
}

TEST_F(PoolTest, ParentsLeaseKeptInChildIsNeverHandedOut) {
    Pool pool;
    Pool::Lease lease = pool.acquire(options(30), Deadline(1000), factory);
    const int parents_id = lease->id;
    int status = in_child([&] {
        lease.keep();  // the child returns the parent's connection before any acquire
        Pool::Lease mine = pool.acquire(options(30), Deadline(1000), factory);
        if (mine.reused()) return 1;
        if (mine->id == parents_id) return 2;
        return 0;
    });
    EXPECT_EQ(status, 0);
    lease.keep();
}

TEST_F(PoolTest, ParentsLeaseReleasedInChildLeavesChildCountsRight) {
    // The child's counts start at 0 on its first acquire; a lease the parent took
    // before the fork was never counted there, so releasing it must not uncount it.
    Pool pool;
    const PoolOptions opts = options(1, 0);
    Pool::Lease parents = pool.acquire(opts, Deadline(1000), factory);
    int status = in_child([&] {
        try {
            { Pool::Lease mine = pool.acquire(opts, Deadline(200), factory); }  // opened and closed
        } catch (...) {
            return 3;
        }
        parents.keep();  // dropped: not the child's
        if (pool.open_count() != 0) return 1;
        try {
            Pool::Lease again = pool.acquire(opts, Deadline(200), factory);
        } catch (...) {
            return 2;
        }
        return 0;
    });
    EXPECT_EQ(status, 0) << "1: open_count wrong after release, 2: next acquire refused";
    parents.keep();
}

TEST_F(PoolTest, ChildBacklogIsNotBlockedByParentsLeases) {
    Pool pool;
    const PoolOptions opts = options(1, 0);
    Pool::Lease held = pool.acquire(opts, Deadline(1000), factory);  // parent's only slot
    int status = in_child([&] {
        try {
            Pool::Lease mine = pool.acquire(opts, Deadline(200), factory);
            return mine.reused() ? 1 : 0;
        } catch (...) {
            return 2;
        }
    });
    EXPECT_EQ(status, 0);
}

}  // namespace
