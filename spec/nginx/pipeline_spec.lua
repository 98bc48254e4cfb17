-- Auto-pipelining (cosocket driver): concurrent calls of one worker share one
-- connection per pool; each call gets its own results, its own timeout and its
-- own errors, whatever else travels in the same write.
local h = require "helpers"
local nginx = require "nginx"

-- Runs every call of ARGS.calls in its own light thread of one request; returns
-- each call's results in order, and how many cosockets the burst created.
local BURST = [[
    local calls = ARGS.calls
    local storages = {}
    local function storage(i)
        local c = calls[i]
        local key = c.storage or "default"
        storages[key] = storages[key] or H.storage(ARGS.cfgs[key], ARGS.prefix .. key)
        return storages[key]
    end
    -- prove each pool first (its first handshake runs on a round trip of its own)
    local warmed = {}
    for i = 1, #calls do
        local s = storage(i)
        if not warmed[s] then
            warmed[s] = true
            s:get(ARGS.name, "warm-up")
        end
    end
    local before = H.tcp_calls
    local threads = {}
    for i = 1, #calls do
        local c = calls[i]
        threads[i] = ngx.thread.spawn(function()
            local s = storage(i)
            local out = { s[c.method](s, ARGS.name, unpack(c.args, 1, c.args.n or #c.args)) }
            return out
        end)
    end
    local results = {}
    for i = 1, #threads do
        local ok, out = ngx.thread.wait(threads[i])
        results[i] = ok and out or { "thread failed: " .. tostring(out) }
    end
    return results, H.tcp_calls - before
]]

-- Sets every ARGS.values[i] under key "k<i>", each call in its own light thread.
local SETS = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    if ARGS.warm then
        s:get(ARGS.name, "warm-up")  -- proves the pool: later connections prefix their handshake
    end
    local threads = {}
    for i, value in ipairs(ARGS.values) do
        threads[i] = ngx.thread.spawn(function()
            local meta = i % 2 == 0 and { audiences = { "web" }, subjects = { "u" .. i } } or nil
            return s:set(ARGS.name, "k" .. i, value, 300, ngx.time(), nil, nil, meta)
        end)
    end
    local out = {}
    for i = 1, #threads do
        local ok, r1, r2 = ngx.thread.wait(threads[i])
        out[i] = ok and (r1 and "ok" or tostring(r2)) or ("thread failed: " .. tostring(r1))
    end
    H.wait_pipelines_idle()  -- later specs want calls that go direct
    return out, require("resty.session.hiredis").stats().pipeline.calls
]]

-- Lingering (see pipeline.lua): call A goes direct and call B out on the pipeline,
-- both behind a proxy that delays every reply; call C is queued behind B's round
-- trip. When B's reply comes, C waits for the next poll only if B's caller is
-- still there to resume (and end the wait); with ARGS.impatient, B's caller has
-- timed out already, and C goes out at once.
local LINGER = [[
    local pipeline = require "resty.session.hiredis.pipeline"
    local hiredis = require "resty.session.hiredis"
    local patient = H.storage(ARGS.cfg, ARGS.storage)
    local b_storage = ARGS.impatient and H.storage(ARGS.impatient, ARGS.storage .. "i") or patient
    patient:get(ARGS.name, "warm-up")  -- proves the pool: the later calls may pipeline
    local lingers, overruns = hiredis.stats().pipeline.lingers, pipeline.linger_overruns
    local function get(s, key)
        return ngx.thread.spawn(function() return { s:get(ARGS.name, key) } end)
    end
    local batches = hiredis.stats().pipeline.batches
    local a = get(patient, "k1")
    local b = get(b_storage, "k2")
    while hiredis.stats().pipeline.batches == batches do  -- until B's write is out
        ngx.sleep(0.005)
    end
    if ARGS.impatient then
        ngx.sleep(0.15)  -- B's caller is gone (its bound: 50 + 50 ms), its reply not back
    end
    local c = get(patient, "k3")
    local out = {}
    for i, t in ipairs({ a, b, c }) do
        local ok, res = ngx.thread.wait(t)
        out[i] = ok and res or { "thread failed: " .. tostring(res) }
    end
    H.wait_pipelines_idle()
    return out, hiredis.stats().pipeline.lingers - lingers, pipeline.linger_overruns - overruns
]]

-- Each of ARGS.threads light threads sets then reads back its own keys,
-- ARGS.rounds times, so that calls keep arriving while round trips are in flight.
-- Returns the calls whose results were not their own, and the lingers that went
-- to their bound.
local CHAINS = [[
    local pipeline = require "resty.session.hiredis.pipeline"
    local s = H.storage(ARGS.cfg, ARGS.storage)
    s:get(ARGS.name, "warm-up")
    local overruns = pipeline.linger_overruns
    local threads, wrong = {}, {}
    for t = 1, ARGS.threads do
        threads[t] = ngx.thread.spawn(function()
            for r = 1, ARGS.rounds do
                local key, value = "t" .. t .. "r" .. r, string.rep(string.char(64 + t), t + r)
                local ok, err = s:set(ARGS.name, key, value, 60, ngx.time())
                local got, gerr = s:get(ARGS.name, key)
                if not ok or got ~= value then
                    wrong[#wrong + 1] = key .. ": " .. tostring(err or gerr or got)
                end
            end
        end)
    end
    for t = 1, #threads do
        local ok, err = ngx.thread.wait(threads[t])
        if not ok then wrong[#wrong + 1] = "thread failed: " .. tostring(err) end
    end
    H.wait_pipelines_idle()
    return wrong, pipeline.linger_overruns - overruns
]]

local function values(n)
    local out = {}
    for i = 1, n do
        -- RESP-looking and binary bytes, sizes on both sides of the threshold
        out[i] = "\r\n$-1\r\n*2\r\n" .. h.all_bytes() .. string.rep(string.char(64 + i), 100 * i)
    end
    out[n + 1] = string.rep("s", 127)  -- just under the threshold: one string, as before
    out[n + 2] = string.rep("t", 128)
    return out
end

describe("nginx auto-pipelining", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function burst(calls, cfgs, name, prefix)
        local res = srv:run("content", BURST, { calls = calls, cfgs = cfgs, name = name,
                                                prefix = prefix or h.unique("p") })
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res[2]
    end

    it("hands every concurrent call its own reply, in any mix of methods", function()
        local name = h.unique("order")
        local r = h.raw()
        local calls, expected = {}, {}
        local now = os.time()
        for i = 1, 60 do
            r:call("SET", name .. ":k" .. i, "value-" .. i)
        end
        for i = 1, 60 do
            local kind = i % 4
            if kind == 0 then
                calls[#calls + 1] = { method = "get", args = { "k" .. i } }
                expected[#calls] = { "value-" .. i }
            elseif kind == 1 then
                calls[#calls + 1] = { method = "set", args = { "n" .. i, "new-" .. i, 300, now, "k" .. i, 10,
                                      { audiences = { "web" }, subjects = { "u" .. i } } } }
                expected[#calls] = { true }
            elseif kind == 2 then
                calls[#calls + 1] = { method = "get", args = { "missing" .. i } }
                expected[#calls] = {}
            else
                calls[#calls + 1] = { method = "delete", args = { "k" .. i } }
                expected[#calls] = { true }
            end
        end
        local results, sockets = burst(calls, { default = { port = h.port } }, name)
        assert.same(expected, results)
        -- one direct call and one pipeline connection, not one connection per call
        assert.is_true(sockets <= 3, "cosockets created: " .. tostring(sockets))
        for i = 1, 60 do
            local kind = i % 4
            if kind == 1 then
                assert.equal("new-" .. i, r:call("GET", name .. ":n" .. i))
                assert.equal(1, r:call("ZCARD", name .. ":web:u" .. i))
                assert.is_true(r:call("TTL", name .. ":k" .. i) <= 10)
            elseif kind == 3 then
                assert.equal(0, r:call("EXISTS", name .. ":k" .. i))
            end
        end
        r:close()
    end)

    it("opens a connection per call when pipelining = false (the control)", function()
        local calls = {}
        for i = 1, 20 do calls[i] = { method = "get", args = { "k" .. i } } end
        local _, sockets = burst(calls, { default = { port = h.port, pipelining = false, pool_size = 64 } },
                                 h.unique("control"))
        assert.equal(20, sockets)
    end)

    it("keeps a Redis error with the call it belongs to", function()
        local name = h.unique("errors")
        local r = h.raw()
        r:call("SET", name .. ":web:bad", "a string, not a sorted set")
        local calls, expected = {}, {}
        local now = os.time()
        for i = 1, 30 do
            r:call("SET", name .. ":k" .. i, "v" .. i)
            if i % 3 == 0 then
                calls[i] = { method = "set", args = { "x" .. i, "v", 300, now, nil, nil,
                             { audiences = { "web" }, subjects = { "bad" } }, n = 7 } }
                expected[i] = "WRONGTYPE"
            else
                calls[i] = { method = "get", args = { "k" .. i } }
                expected[i] = "v" .. i
            end
        end
        local results = burst(calls, { default = { port = h.port } }, name)
        for i = 1, 30 do
            if expected[i] == "WRONGTYPE" then
                assert.is_nil(results[i][1])
                assert.matches("^WRONGTYPE", results[i][2])
            else
                assert.same({ expected[i] }, results[i])
            end
        end
        r:close()
    end)

    it("times out each call by its own read_timeout; the others get their replies", function()
        local proxy_port, stop_proxy = nginx.delay_proxy(h.host, h.port, 300)
        local name = h.unique("timeouts")
        local r = h.raw()
        for i = 1, 6 do r:call("SET", name .. ":k" .. i, "v" .. i) end
        local ok, err = pcall(function()
            local calls = {}
            for i = 1, 6 do
                calls[i] = { method = "get", args = { "k" .. i }, storage = i % 2 == 0 and "impatient" or "patient" }
            end
            local results = burst(calls, {
                patient = { port = proxy_port, read_timeout = 3000 },
                impatient = { port = proxy_port, connect_timeout = 100, read_timeout = 100 },
            }, name)
            for i = 1, 6 do
                if i % 2 == 0 then
                    assert.same({ nil, "timeout" }, results[i], "call " .. i)
                else
                    assert.same({ "v" .. i }, results[i], "call " .. i)
                end
            end
            -- the connection still carries the timed-out calls' replies: later calls
            -- must each get their own
            local again = burst({ { method = "get", args = { "k2" }, storage = "patient" },
                                  { method = "get", args = { "k4" }, storage = "patient" },
                                  { method = "get", args = { "k5" }, storage = "patient" } },
                                { patient = { port = proxy_port, read_timeout = 3000 } }, name)
            assert.same({ { "v2" }, { "v4" }, { "v5" } }, again)
        end)
        stop_proxy()
        r:close()
        assert(ok, err)
    end)

    it("fails exactly the calls in flight when the server closes mid-batch", function()
        local port, stop = h.fake_server("echo_close")
        local ok, err = pcall(function()
            -- call 1 runs directly on the warmed-up connection; calls 2..10 go out in
            -- one write on the pipeline's connection, which the server closes after
            -- answering 5 of them
            local calls = {}
            for i = 1, 10 do calls[i] = { method = "get", args = { "k" .. i } } end
            local results = burst(calls, { default = { port = port, read_timeout = 3000 } }, "echo")
            assert.same({ "echo:k1" }, results[1])
            for i = 2, 6 do
                assert.same({ "echo:k" .. i }, results[i], "call " .. i)
            end
            for i = 7, 10 do
                assert.same({ nil, "closed" }, results[i], "call " .. i)
            end
        end)
        stop()
        assert(ok, err)
    end)

    describe("with calls queued behind a round trip", function()
        local proxy_port, stop_proxy, name, quiet
        lazy_setup(function()
            proxy_port, stop_proxy = nginx.delay_proxy(h.host, h.port, 200)
            name = h.unique("linger")
            local r = h.raw()
            for i = 1, 3 do r:call("SET", name .. ":k" .. i, "v" .. i) end
            r:close()
            -- ngx.sleep(0) waits for the next poll silently where warnings are not
            -- logged (stock nginx; OpenResty's at any level): there, lanes linger
            quiet = nginx.start_kit({ workers = 1, log_level = "error" })
        end)
        lazy_teardown(function()
            if stop_proxy then stop_proxy() end
            if quiet then assert.same({}, quiet:shutdown()) end
        end)

        local function linger(on, impatient)
            local res = on:run("content", LINGER, {
                cfg = { port = proxy_port, read_timeout = 3000 }, storage = h.unique("s"), name = name,
                impatient = impatient and { port = proxy_port, connect_timeout = 50, read_timeout = 50 } or nil })
            assert.is_true(res.ok, tostring(res[1]))
            return res[1], res[2], res[3]
        end

        it("sends them after the next poll, woken by the answered caller", function()
            local out, lingers, overruns = linger(quiet)
            assert.same({ { "v1" }, { "v2" }, { "v3" } }, out)
            assert.equal(1, lingers)
            assert.equal(0, overruns)  -- never held to the bound
        end)

        it("sends them at once when the round trip answered nobody (its caller timed out)", function()
            local out, lingers, overruns = linger(quiet, true)
            assert.same({ { "v1" }, { nil, "timeout" }, { "v3" } }, out)
            assert.equal(0, lingers)
            assert.equal(0, overruns)
        end)

        it("sends them at once where ngx.sleep(0) would log a warning", function()
            local out, lingers, overruns = linger(srv)  -- (info level, stock nginx)
            assert.same({ { "v1" }, { "v2" }, { "v3" } }, out)
            local patched = srv:run("content", [[
                local ffi = require "ffi"
                pcall(ffi.cdef, "extern int ngx_posted_delayed_events;")
                return (pcall(function() return ffi.C.ngx_posted_delayed_events end))
            ]])[1]
            assert.equal(patched and 1 or 0, lingers)
            assert.equal(0, overruns)
        end)

        it("hands every call of chained callers its own reply while lanes linger", function()
            local res = quiet:run("content", CHAINS, { cfg = { port = h.port }, storage = h.unique("s"),
                                                      name = h.unique("chains"), threads = 12, rounds = 20 })
            assert.is_true(res.ok, tostring(res[1]))
            local wrong, overruns = res[1], res[2]
            assert.same({}, wrong)
            assert.equal(0, overruns)
            assert.is_nil(quiet:error_log():find("ngx.sleep(0)", 1, true))
        end)
    end)

    -- A set's large value (128 bytes or more) goes
    -- out from the caller's own Lua string, between the request's other bytes
    -- (op:start hands the cosocket driver the pieces, so no request-sized Lua string
    -- is made per call). The bytes Redis stores must be the caller's on every path:
    -- a call alone, calls sharing a pipelined write, a transaction (metadata), and a
    -- new connection whose handshake goes in front of the request.
    local function run_sets(cfg, name, vals, warm)
        local res = srv:run("content", SETS, { cfg = cfg, name = name, values = vals, storage = h.unique("s"),
                                               warm = warm })
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res[2]
    end

    it("stores the caller's bytes, alone, pipelined and in transactions", function()
        local name = h.unique("large")
        local vals = values(20)
        local calls_before = select(2, run_sets({ port = h.port }, h.unique("large0"), { "x" }, true))
        local results, calls_after = run_sets({ port = h.port }, name, vals, true)
        for i = 1, #vals do
            assert.equal("ok", results[i], "set " .. i)
        end
        local r = h.raw()
        for i, value in ipairs(vals) do
            assert.equal(value, r:call("GET", name .. ":k" .. i), "value " .. i)
        end
        assert.equal(1, r:call("ZCARD", name .. ":web:u2"))
        assert.is_true(calls_after > calls_before, "some calls shared a pipelined write")
        r:close()
    end)

    it("stores them behind a new connection's handshake (SELECT in the same write)", function()
        local name = h.unique("large-db")
        local r = h.raw()
        local cfg = { port = h.port, database = 3, pool = h.unique("db3") }
        -- the first request proves the pool; then its connections go away, and the
        -- first set of the next request opens a new one: its handshake goes in front
        run_sets(cfg, name, { "warm" }, true)
        h.kill_others(r)
        local vals = values(4)
        local results = run_sets(cfg, name, vals)
        for i = 1, #vals do
            assert.equal("ok", results[i], "set " .. i)
        end
        assert.equal("OK", r:call("SELECT", 3))
        for i, value in ipairs(vals) do
            assert.equal(value, r:call("GET", name .. ":k" .. i), "value " .. i)
        end
        r:close()
        local db0 = h.raw()
        assert.equal(0, db0:call("EXISTS", name .. ":k1"))
        db0:close()
    end)
end)
