-- resty.session.hiredis.stats() in a real nginx worker: cosocket calls, the
-- auto-pipeline's batches, and native calls (phases without cosockets) counted
-- together per worker. The native side in plain LuaJIT: spec/stats_spec.lua.
local h = require "helpers"
local nginx = require "nginx"
local sd = require "stats_delta"

-- ARGS.n gets (after a set) on a storage of its own pool, between two snapshots.
local GETS = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    local before = H.hiredis.stats()
    local values = {}
    for i = 1, ARGS.n do
        values[i] = s:get("session", ARGS.key)
    end
    return before, H.hiredis.stats(), values
]]

-- ARGS.n gets in as many light threads of one request.
local BURST = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    assert(s:set("session", "k", "v", 60))
    local before = H.hiredis.stats()
    local threads = {}
    for i = 1, ARGS.n do
        threads[i] = ngx.thread.spawn(function() return s:get("session", "k") end)
    end
    local values = {}
    for i = 1, ARGS.n do
        local ok, v = ngx.thread.wait(threads[i])
        values[i] = ok and v or "thread failed"
    end
    return before, H.hiredis.stats(), values
]]

describe("stats in nginx", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function run(phase, code, args)
        local res = srv:run(phase, code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res
    end

    it("counts N cosocket gets as N calls, no error, N latencies; one connection opened, then reused", function()
        local prefix = h.unique("ngx-st")
        local cfg = { port = h.port, prefix = prefix, pool = h.unique("pool") }
        local r = h.raw()
        assert.equal("OK", r:call("SET", prefix .. ":session:k", "v"))
        r:close()
        local res = run("content", GETS, { cfg = cfg, storage = h.unique("s"), key = "k", n = 20 })
        assert.is_true(res.cosocket > 0, "served over cosockets")
        for i = 1, 20 do assert.equal("v", res[3][i]) end
        local d = sd.delta(res[1], res[2])
        assert.equal(20, d["get.calls"])
        assert.equal(0, d["get.errors"])
        assert.equal(20, d["get.latency"])
        assert.is_true(res[2].ops.get.latency.sum_ms > res[1].ops.get.latency.sum_ms)
        assert.equal(1, d["connections.opened"])
        assert.equal(19, d["connections.reused"])
        assert.equal(0, d["connections.failed"])
    end)

    it("counts a refused connection as an error of class connect and a failed open", function()
        local cfg = { port = h.unused_port() }
        local res = run("content", [[
            local s = H.storage(ARGS.cfg)
            local before = H.hiredis.stats()
            local out = { s:get("session", "k") }
            return before, H.hiredis.stats(), out
        ]], { cfg = cfg })
        assert.same({ nil, "connection refused" }, { res[3][1], res[3][2] })
        assert.same({
            ["get.calls"] = 1, ["get.errors"] = 1, ["get.latency"] = 1,
            ["errors.connect"] = 1, ["connections.failed"] = 1,
        }, sd.changed(res[1], res[2]))
    end)

    it("shows concurrent calls sharing pipelined writes: pipeline.calls > pipeline.batches", function()
        local cfg = { port = h.port, prefix = h.unique("ngx-st"), pool = h.unique("pool") }
        local res = run("content", BURST, { cfg = cfg, storage = h.unique("s"), n = 50 })
        for i = 1, 50 do assert.equal("v", res[3][i]) end
        local d = sd.delta(res[1], res[2])
        assert.equal(50, d["get.calls"])
        assert.equal(50, d["get.latency"])
        assert.is_true(d["pipeline.batches"] >= 1, "no batch")
        assert.is_true(d["pipeline.calls"] > d["pipeline.batches"],
                       d["pipeline.calls"] .. " calls in " .. d["pipeline.batches"] .. " batches")
        assert.is_true(res[2].pipeline.max_calls >= 2)
        assert.is_true(d["pipeline.calls"] <= 50)
    end)

    it("counts native calls (phases without cosockets) in the same worker's table", function()
        local cfg = { port = h.port, prefix = h.unique("ngx-st") }
        local before = run("content", "return H.hiredis.stats()")[1]
        local res = run("log", "return { H.storage(ARGS.cfg):set('session', 'k', 'v', 60) }", { cfg = cfg })
        assert.same({ true }, res[1])
        assert.equal(0, res.cosocket, "served natively")
        local after = run("content", "return H.hiredis.stats()")[1]
        local d = sd.delta(before, after)
        assert.equal(1, d["set.calls"])
        assert.equal(0, d["set.errors"])
        assert.equal(1, d["connections.opened"] + d["connections.reused"])
    end)

    it("stats_reset zeroes the worker's counters; stats_enabled(false) stops counting", function()
        local cfg = { port = h.port }
        local res = run("content", [[
            local s = H.storage(ARGS.cfg)
            s:get("session", "k")
            H.hiredis.stats_reset()
            local zero = H.hiredis.stats()
            H.hiredis.stats_enabled(false)
            s:get("session", "k")
            local off = H.hiredis.stats()
            H.hiredis.stats_enabled(true)
            s:get("session", "k")
            return zero, off, H.hiredis.stats()
        ]], { cfg = cfg })
        local zero, off, on = res[1], res[2], res[3]
        assert.equal(0, zero.ops.get.calls)
        assert.equal(0, zero.connections.reused + zero.connections.opened)
        assert.same({}, sd.changed(zero, off))
        assert.equal(1, on.ops.get.calls)
    end)
end)
