-- resty.session.hiredis.stats(): what the storage did in this process, counted
-- over the native transport here (plain LuaJIT); the cosocket side is
-- spec/nginx/stats_spec.lua, the cluster counters spec/cluster/reshard_spec.lua,
-- the sentinel ones spec/support/sentinel_cases.lua and spec/sentinel/failover_spec.lua.
local h = require "helpers"
local hiredis = require "resty.session.hiredis"
local stats = require "resty.session.hiredis.stats"

local BOUNDS = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000 }

local sd = require "stats_delta"
local sum, delta, changed = sd.sum, sd.delta, sd.changed

describe("stats()", function()
    before_each(function()
        hiredis.stats_enabled(true)
    end)

    it("has the documented shape, as a fresh table each time", function()
        local s = hiredis.stats()
        for _, name in ipairs({ "set", "get", "delete", "read_metadata" }) do
            local op = s.ops[name]
            assert.is_number(op.calls)
            assert.is_number(op.errors)
            assert.same(BOUNDS, op.latency.bounds)
            assert.equal(#BOUNDS + 1, #op.latency.counts)
            assert.is_number(op.latency.sum_ms)
        end
        local classes = {}
        for class in pairs(s.errors) do classes[#classes + 1] = class end
        table.sort(classes)
        assert.same({ "closed", "config", "connect", "protocol", "server", "timeout" }, classes)
        for group, fields in pairs({
            connections = { "opened", "reused", "failed" },
            pipeline = { "batches", "calls", "max_calls", "lingers" },
            cluster = { "moved", "ask", "retries", "refreshes" },
            sentinel = { "lookups", "role_mismatches", "master_changes", "events", "watch_failures", "subscriptions" },
        }) do
            for _, f in ipairs(fields) do
                assert.is_number(s[group][f], group .. "." .. f)
            end
        end
        s.ops.get.calls = -1
        s.ops.get.latency.bounds[1] = 99
        local again = hiredis.stats()
        assert.is_true(again.ops.get.calls >= 0)
        assert.equal(0.1, again.ops.get.latency.bounds[1])
    end)

    it("counts N successful gets as N calls, no error, N latencies", function()
        local s = hiredis.new({ port = h.port, prefix = h.unique("st") })
        assert.is_true(s:set("session", "k", "v", 60))
        local before = hiredis.stats()
        for _ = 1, 25 do
            assert.equal("v", s:get("session", "k"))
        end
        assert.is_nil(s:get("session", "missing"))  -- a miss is no error
        local after = hiredis.stats()
        local d = delta(before, after)
        assert.equal(26, d["get.calls"])
        assert.equal(0, d["get.errors"])
        assert.equal(26, d["get.latency"])
        assert.is_true(after.ops.get.latency.sum_ms > before.ops.get.latency.sum_ms)
        assert.equal(0, d["set.calls"])
        assert.equal(26, d["connections.reused"])
        assert.equal(0, d["connections.opened"])
    end)

    it("counts each method on its own, results unchanged", function()
        local s = hiredis.new({ port = h.port, prefix = h.unique("st"), pool = h.unique("pool") })
        local meta = h.meta({ "aud" }, { "sub" })
        local now = os.time()
        local before = hiredis.stats()
        assert.same({ true }, { s:set("session", "k", "v", 60, now, nil, nil, meta) })
        local listed = { s:read_metadata("session", "aud", "sub", now) }
        assert.equal(1, #listed)
        assert.is_table(listed[1])
        assert.same({ true }, { s:delete("session", "k", now, meta) })
        assert.equal(1, select("#", s:get("session", "k")))  -- one value, as before counting
        assert.same({
            ["set.calls"] = 1, ["set.latency"] = 1,
            ["read_metadata.calls"] = 1, ["read_metadata.latency"] = 1,
            ["delete.calls"] = 1, ["delete.latency"] = 1,
            ["get.calls"] = 1, ["get.latency"] = 1,
            ["connections.opened"] = 1, ["connections.reused"] = 3,
        }, changed(before, hiredis.stats()))
    end)

    it("counts a connection opened once, then reused", function()
        local s = hiredis.new({ port = h.port, pool = h.unique("pool") })
        local before = hiredis.stats()
        assert.is_nil(s:get("session", "k"))
        local first = delta(before, hiredis.stats())
        assert.equal(1, first["connections.opened"])
        assert.equal(0, first["connections.reused"])
        for _ = 1, 4 do
            assert.is_nil(s:get("session", "k"))
        end
        local d = delta(before, hiredis.stats())
        assert.equal(1, d["connections.opened"])
        assert.equal(4, d["connections.reused"])
    end)

    it("counts a refused connection as an error of class connect and a failed open", function()
        local s = hiredis.new({ port = h.unused_port(), connect_timeout = 1000 })
        local before = hiredis.stats()
        local ok, err = s:get("session", "k")
        assert.is_nil(ok)
        assert.equal("connection refused", err)
        assert.same({
            ["get.calls"] = 1, ["get.errors"] = 1, ["get.latency"] = 1,
            ["errors.connect"] = 1, ["connections.failed"] = 1,
        }, changed(before, hiredis.stats()))
    end)

    it("counts refused arguments as calls with errors of class config, nothing sent", function()
        local s = hiredis.new({ port = h.port })
        local before = hiredis.stats()
        assert.same({ nil, "invalid ttl: must be a positive integer" }, { s:set("session", "k", "v", -1) })
        assert.same({
            ["set.calls"] = 1, ["set.errors"] = 1, ["set.latency"] = 1, ["errors.config"] = 1,
        }, changed(before, hiredis.stats()))
    end)

    it("counts a Redis error reply as class server", function()
        local r = h.raw()
        local prefix = h.unique("st")
        assert.equal(1, r:call("HSET", prefix .. ":session:k", "f", "v"))
        r:close()
        local s = hiredis.new({ port = h.port, prefix = prefix })
        local before = hiredis.stats()
        local ok, err = s:get("session", "k")
        assert.is_nil(ok)
        assert.matches("^WRONGTYPE", err)
        local d = delta(before, hiredis.stats())
        assert.equal(1, d["errors.server"])
        assert.equal(1, d["get.errors"])
    end)

    it("counts a read timeout as class timeout, a bad reply as class protocol", function()
        for mode, class in pairs({ silent = "timeout", garbage = "protocol" }) do
            local port, stop = h.fake_server(mode)
            local s = hiredis.new({ port = port, read_timeout = 50 })
            local before = hiredis.stats()
            local ok, err = s:get("session", "k")
            stop()
            assert.is_nil(ok)
            assert.is_string(err)
            local d = changed(before, hiredis.stats())
            assert.equal(1, d["errors." .. class], mode .. ": " .. err)
            assert.equal(1, d["get.errors"])
        end
    end)

    it("puts each call in the bucket of its duration", function()
        -- a server that never answers, a 30 ms read timeout: the call takes >= 30 ms
        local port, stop = h.fake_server("silent")
        local s = hiredis.new({ port = port, read_timeout = 30 })
        local before = hiredis.stats()
        assert.same({ nil, "timeout" }, { s:get("session", "k") })
        stop()
        local after = hiredis.stats()
        local counts_before, counts_after = before.ops.get.latency.counts, after.ops.get.latency.counts
        local bucket
        for i = 1, #BOUNDS + 1 do
            if counts_after[i] ~= counts_before[i] then
                assert.is_nil(bucket, "one call, one bucket")
                bucket = i
            end
        end
        local took = after.ops.get.latency.sum_ms - before.ops.get.latency.sum_ms
        assert.is_true(took >= 29, tostring(took))
        assert.is_true(bucket >= 8, "bucket " .. tostring(bucket) .. " for a call of " .. took .. " ms")
        assert.is_true(took > BOUNDS[bucket - 1] and (bucket > #BOUNDS or took <= BOUNDS[bucket]))
    end)

    it("stats_reset zeroes every counter; stats_enabled(false) stops counting", function()
        local s = hiredis.new({ port = h.port })
        assert.is_nil(s:get("session", "k"))
        hiredis.stats_reset()
        local zero = hiredis.stats()
        assert.same({}, changed(zero, zero))
        for _, op in pairs(zero.ops) do
            assert.equal(0, op.calls)
            assert.equal(0, op.latency.sum_ms)
            assert.equal(0, sum(op.latency.counts))
        end
        for _, group in ipairs({ "errors", "connections", "pipeline", "cluster", "sentinel" }) do
            for k, v in pairs(zero[group]) do
                assert.equal(0, v, group .. "." .. k)
            end
        end
        assert.is_false(hiredis.stats_enabled(false))
        assert.is_false(hiredis.stats_enabled())
        assert.is_nil(s:get("session", "k"))
        assert.is_nil(hiredis.new({ port = h.unused_port() }):get("session", "k"))
        assert.same({}, changed(zero, hiredis.stats()))
        assert.is_true(hiredis.stats_enabled(true))
        assert.is_nil(s:get("session", "k"))
        assert.equal(1, hiredis.stats().ops.get.calls)
    end)

    it("adds no Lua allocation to a call (JIT on and off)", function()
        -- the counting is the core's (its C++ side is in tests/alloc_test.cpp); a
        -- Lua allocation per call added by counting would be 16 bytes or more
        local s = hiredis.new({ port = h.port, prefix = h.unique("st") })
        local get = s.get
        local CALLS = 5000
        local function bytes_per_round()
            local least = math.huge
            for _ = 1, 3 do
                collectgarbage()
                collectgarbage("stop")
                local before = collectgarbage("count")
                for _ = 1, CALLS do get(s, "session", "missing") end
                least = math.min(least, (collectgarbage("count") - before) * 1024)
                collectgarbage("restart")
            end
            return least
        end
        for _, mode in ipairs({ "on", "off" }) do
            if jit then
                if mode == "on" then jit.on(get, true) else jit.off(get, true) end
            end
            hiredis.stats_enabled(false)
            local uncounted = bytes_per_round()
            hiredis.stats_enabled(true)
            local calls = hiredis.stats().ops.get.calls
            local counted = bytes_per_round()
            assert.equal(calls + 3 * CALLS, hiredis.stats().ops.get.calls)
            assert.is_true(counted - uncounted < CALLS * 8, string.format(
                "JIT %s: %d bytes for %d counted calls, %d uncounted", mode, counted, CALLS, uncounted))
        end
        if jit then jit.on(get, true) end
    end)

    it("classifies error messages", function()
        for err, class in pairs({
            ["invalid key: must be a string"] = "config",
            ["cosocket transport unavailable: not running inside nginx"] = "config",
            ["invalid master name"] = "config",
            ["protocol error: reply larger than 1024 bytes"] = "protocol",
            ["WRONGTYPE Operation against a key holding the wrong kind of value"] = "server",
            ["READONLY You can't write against a read only replica."] = "server",
            ["LOADING Valkey is loading the dataset in memory"] = "server",
            ["LOADING Redis is loading the dataset in memory"] = "server",
            ["MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."] = "server",
            ["BUSY Valkey is busy running a script. You can only call SCRIPT KILL or FUNCTION KILL."] = "server",
            ["CLUSTERDOWN The cluster is down"] = "server",
            ["write not durable: 0 of 1 replicas (wait_replicas) acknowledged it within 10 ms"] = "server",
            ["role mismatch: expected master, got slave"] = "server",
            ["failover in progress: the promoted replica is not master yet"] = "server",
            ["no slaves available"] = "server",
            ["timeout"] = "timeout",
            ["closed"] = "closed",
            ["connection reset by peer"] = "closed",
            ["broken pipe"] = "closed",
            ["connection refused"] = "connect",
            ["ssl handshake failed: certificate verify failed"] = "connect",
            ["too many waiting connect operations"] = "connect",
            ["no hosts available: connection refused"] = "connect",
        }) do
            assert.equal(class, stats.classify(err), err)
        end
    end)
end)
