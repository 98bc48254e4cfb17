-- resty.session.hiredis.sentinel inside a real nginx: cosockets in request
-- phases, the native transport in log; a hung first sentinel; and interop both
-- ways with upstream's resty.session.redis.sentinel (lua-resty-redis-connector).
-- Failovers under writers: spec/sentinel/failover_spec.lua.
local h = require "helpers"
local nginx = require "nginx"
local group = require "sentinel_group"
local upstream = require "upstream"
local socket = require "socket"
local cases = require "sentinel_cases"

if not group.available then
    describe("sentinel in nginx", function()
        pending(group.why_absent)
    end)
    return
end

-- Upstream's sentinel storage needs lua-resty-redis-connector besides lua-resty-redis.
local CONNECTOR_DIR = nginx.root .. "/../shared/third_party/lua-resty-redis-connector/lib"
local connector_missing = upstream.redis_missing
if not connector_missing then
    local f = io.open(CONNECTOR_DIR .. "/resty/redis/connector.lua")
    if f then
        f:close()
    else
        connector_missing = "resty.redis.connector (lua-resty-redis-connector) not found in ../shared/third_party"
    end
end
if connector_missing then
    io.stderr:write("sentinel interop specs skipped: ", connector_missing, "\n")
end

local NOW = 1700000000

local EVERY_METHOD = [[
    local s = H.storage(ARGS.cfg)
    local meta = { audiences = { "aud" }, subjects = { "sub" } }
    local name = ARGS.name
    return {
        set = { s:set(name, "k1", "v1", 100, ARGS.now) },
        set_meta = { s:set(name, "k2", "v2", 200, ARGS.now, "k1", 10, meta) },
        get = { s:get(name, "k2") },
        missing = { s:get(name, "nope") },
        read_metadata = { s:read_metadata(name, "aud", "sub", ARGS.now) },
        delete = { s:delete(name, "k2", ARGS.now, meta) },
        after = { s:get(name, "k2") },
    }
]]

describe("sentinel in nginx", function()
    local srv

    lazy_setup(function()
        local lua_path = upstream.lua_path
        if not connector_missing then
            lua_path = lua_path .. ";" .. CONNECTOR_DIR .. "/?.lua"
        end
        srv = nginx.start_kit({ workers = 1, lua_path = lua_path })
    end)

    lazy_teardown(function()
        if srv then
            local log = srv:error_log()
            assert.same({}, srv:shutdown())
            -- the lookup runner waits for the rest of each turn without stock nginx's
            -- ngx.sleep(0) warning (this log is at info level)
            assert.is_nil(log:find("ngx.sleep(0)", 1, true))
        end
    end)

    for _, case in ipairs({ { phase = "content", cosocket = true }, { phase = "log", cosocket = false } }) do
        it("serves every method in " .. case.phase .. (case.cosocket and " over cosockets" or " natively"),
            function()
                group.wait_stable(30)
                local name = h.unique("ngx-" .. case.phase)
                local res = srv:run(case.phase, EVERY_METHOD,
                                    { cfg = group.config({ prefix = "ns" }), name = name, now = NOW })
                assert.is_true(res.ok, tostring(res[1]))
                local out = res[1]
                assert.same({ true }, out.set)
                assert.same({ true }, out.set_meta)
                assert.same({ "v2" }, out.get)
                assert.same({}, out.missing)
                assert.same({ { k2 = tostring(NOW + 200) } }, out.read_metadata)
                assert.same({ true }, out.delete)
                assert.same({}, out.after)
                if case.cosocket then
                    assert.is_true(res.cosocket > 0)
                else
                    assert.equal(0, res.cosocket)
                end
            end)
    end

    it("answers `invalid master name` over cosockets", function()
        local res = srv:run("content", "return { H.storage(ARGS.cfg):get('n', 'k') }",
                            { cfg = group.config({ master = "no-such-master" }) })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ nil, "invalid master name" }, res[1])
    end)

    it("transport = 'cosocket' in a phase without cosockets fails cleanly", function()
        local res = srv:run("log", "return { H.storage(ARGS.cfg):get('n', 'k') }",
                            { cfg = group.config({ transport = "cosocket" }) })
        assert.is_true(res.ok, tostring(res[1]))
        assert.is_nil(res[1][1])
        assert.matches("^cosocket transport unavailable", res[1][2])
    end)

    it("moves a hung first sentinel out of the way after one call (cosockets)", function()
        group.wait_stable(30)
        local hung = assert(socket.bind("127.0.0.1", 0, 16))
        local _, hung_port = hung:getsockname()
        hung:settimeout(0)
        local list = group.sentinels()
        table.insert(list, 1, { host = "127.0.0.1", port = hung_port })
        local res = srv:run("content", [[
            local s = H.storage(ARGS.cfg, "hung")
            local out = {}
            for i = 1, 6 do out[i] = s:set(ARGS.name, "k", "v", 60, ARGS.now) end
            return out
        ]], { cfg = group.config({ sentinels = list, read_timeout = 300, sentinel_watch = false }),
              name = h.unique("hung"), now = NOW })  -- (the lookups' connections alone)
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ true, true, true, true, true, true }, res[1])
        local connections = 0
        while hung:accept() do connections = connections + 1 end
        hung:close()
        assert.equal(1, connections)
    end)

    local function interop(label, writer, reader)
        it("interop: " .. label, function()
            if connector_missing then
                pending("skipped: " .. connector_missing)
                return
            end
            if h.server_version() < 60200 then
                -- upstream's read_metadata sends ZRANGE ... BYSCORE
                pending("skipped: upstream's read_metadata needs Redis 6.2 (ZRANGE ... BYSCORE)")
                return
            end
            group.wait_stable(30)
            local name = h.unique("sinterop")
            local cfg = group.config({ prefix = "pre", suffix = "suf" })
            local res = srv:run("content", [[
                local function storage(which)
                    if which == "upstream" then
                        return require("resty.session.redis.sentinel").new(ARGS.cfg)
                    end
                    return require("resty.session.hiredis").new(ARGS.cfg)
                end
                local w, r = storage(ARGS.writer), storage(ARGS.reader)
                local meta = { audiences = { "aud" }, subjects = { "sub" } }
                local out = {}
                out.set = { w:set(ARGS.name, "key", "value\0bin", 300, ARGS.now, nil, nil, meta) }
                out.get = { r:get(ARGS.name, "key") }
                out.meta = { r:read_metadata(ARGS.name, "aud", "sub", ARGS.now) }
                out.delete = { r:delete(ARGS.name, "key", ARGS.now, meta) }
                out.gone = { w:get(ARGS.name, "key") }
                out.meta_gone = { w:read_metadata(ARGS.name, "aud", "sub", ARGS.now) }
                return out
            ]], { cfg = cfg, name = name, now = NOW, writer = writer, reader = reader })
            assert.is_true(res.ok, tostring(res[1]))
            local out = res[1]
            assert.is_truthy(out.set[1], tostring(out.set[2]))
            assert.same({ "value\0bin" }, out.get)
            assert.same({ { key = tostring(NOW + 300) } }, out.meta)
            assert.is_truthy(out.delete[1], tostring(out.delete[2]))
            assert.is_nil(out.gone[1])
            assert.is_nil(out.gone[2])
            assert.same({}, out.meta_gone[1])
        end)
    end
    interop("upstream's sentinel storage writes, this module reads and deletes", "upstream", "hiredis")
    interop("this module writes, upstream's sentinel storage reads and deletes", "hiredis", "upstream")

    local SET_GET = [[
        local s = H.storage(ARGS.cfg, ARGS.label)
        return { { s:set(ARGS.name, ARGS.key, ARGS.value, 60, ngx.time()) }, { s:get(ARGS.name, ARGS.key) } }
    ]]

    -- one storage on cfg (kept by the worker under a label of its own), as the
    -- cases of spec/support/sentinel_cases.lua use it
    local function open(cfg)
        local label = h.unique("ngx-storage")
        return function(name, key, value)
            local res = srv:run("content", SET_GET, { cfg = cfg, label = label, name = name, key = key, value = value })
            assert.is_true(res.ok, tostring(res[1]))
            return res[1]
        end
    end

    it("follows the sentinel with the highest config-epoch over cosockets, whatever the order", function()
        cases.highest_epoch(open, "ngx-")
    end)

    it("during a failover, cosocket writes go to the promoted replica once it is master, fail before", function()
        cases.promoted_replica(open, "ngx-")
    end)

    it("sends a server that timed out a lone PING over cosockets, then writes after a new lookup", function()
        cases.stalled_server_probe(open, "ngx-", function()
            local res = srv:run("content", "return H.hiredis.stats()")
            assert.is_true(res.ok, tostring(res[1]))
            return res[1]
        end)
    end)

    -- Single flight: concurrent calls share a lookup, but only one that began after they arrived.
    -- A fake sentinel naming the group's master, answering `delay_ms` late, and a
    -- session "k" = "v" on the master: replica, fake_port, stop, name.
    local function slow_sentinel(delay_ms, tag)
        local master = group.wait_stable(30, true)
        local fake_port, stop = h.fake_server("sentinel:" .. master .. ":1")
        local name = h.unique(tag)
        local r = group.raw_server(master)
        assert.equal("OK", r:call("SET", name .. ":k", "v"))
        r:close()
        local c = assert(require("raw_redis").connect(fake_port))
        assert.equal("OK", c:call("SENTINEL", "SET-DELAY", delay_ms))
        c:close()
        return group.replica_port(), fake_port, stop, name
    end

    -- Runs code in a content handler (ARGS.cfg: a storage whose only sentinel is
    -- the fake one, with `extra` configuration; ARGS.label: its own), stops the fake
    -- sentinel and returns what the handler returned.
    local function run_slow(fake_port, stop, code, args, extra)
        local cfg = extra or {}
        cfg.sentinels = { { host = "127.0.0.1", port = fake_port } }
        args.cfg = group.config(cfg)
        args.label = h.unique("ngx-storage")
        local res = srv:run("content", code, args)
        stop()
        assert.is_true(res.ok, tostring(res[1]))
        return res[1]
    end

    -- A handler's function: returns once a lookup begun since `before` (a count of
    -- sentinel.lookups) is under way (polled; the worker's lookup runner is a timer).
    local LOOKUP_BEGUN = [[
        local function lookups()
            return H.hiredis.stats().sentinel.lookups
        end
        local function until_lookup_begun(before)
            for _ = 1, 2000 do
                if lookups() > before then
                    return
                end
                ngx.sleep(0.001)
            end
            error("no lookup began")
        end
    ]]

    -- A handler's function: n concurrent s:get(ARGS.name, "k") in light threads, their
    -- values (or errors).
    local CONCURRENT_GETS = [[
        local function concurrent_gets(s, n)
            local threads = {}
            for i = 1, n do
                threads[i] = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            end
            local values = {}
            for i = 1, n do
                local ok, value, err = ngx.thread.wait(threads[i])
                values[i] = ok and (value or tostring(err)) or false
            end
            return values
        end
    ]]

    it("shares one lookup among the concurrent cosocket calls that arrived before it began", function()
        local _, fake_port, stop, name = slow_sentinel(100, "ngx-flight")
        local out = run_slow(fake_port, stop, CONCURRENT_GETS .. [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            local before = H.hiredis.stats()
            local values = concurrent_gets(s, 20)
            return { values = values, before = before, after = H.hiredis.stats() }
        ]], { name = name })
        for i = 1, 20 do assert.equal("v", out.values[i]) end
        local d = require("stats_delta").delta(out.before, out.after)
        assert.equal(20, d["get.calls"])
        -- the 20 calls arrived before the worker's lookup runner (a timer) began the
        -- lookup they share
        assert.equal(1, d["sentinel.lookups"])
    end)

    -- A handler's function: the fake sentinel (ARGS.fake) names the replica (ARGS.replica)
    -- from now on.
    local NAME_THE_REPLICA = [[
        local function name_the_replica()
            local c = ngx.socket.tcp()
            assert(c:connect("127.0.0.1", ARGS.fake))
            local replica = tostring(ARGS.replica)
            assert(c:send("*4\r\n$8\r\nSENTINEL\r\n$10\r\nSET-ANSWER\r\n$" .. #replica .. "\r\n"
                          .. replica .. "\r\n$1\r\n2\r\n"))
            assert(c:receive() == "+OK")
            c:close()
        end
    ]]

    it("routes a cosocket call by a lookup begun after it arrived, not by one under way", function()
        local replica, fake_port, stop, name = slow_sentinel(300, "ngx-after")
        local out = run_slow(fake_port, stop, LOOKUP_BEGUN .. NAME_THE_REPLICA .. [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            local count = lookups()
            local first = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            until_lookup_begun(count)
            name_the_replica()  -- while the first call's lookup is under way
            local second = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            local _, v1, e1 = ngx.thread.wait(first)
            local _, v2, e2 = ngx.thread.wait(second)
            return { { v1, e1 }, { v2, e2 } }
        ]], { name = name, fake = fake_port, replica = replica })
        -- the first call follows the answer it asked for; the second one the answer
        -- given after it arrived (the replica, refused by its ROLE), never the first's
        assert.same({ { "v" }, { nil, "role mismatch: expected master, got slave" } }, out)
    end)

    -- A call that finds the next lookup not begun parks on it: its request goes out on
    -- the master's pipeline when that lookup names the server it was built for.
    h.it_since(70000, "auto-pipelining",
        "sends the calls parked on a shared lookup on the master's pipeline, in one write", function()
        -- (each lookup takes 100 ms: the first call's is under way while the 20 others arrive)
        local _, fake_port, stop, name = slow_sentinel(100, "ngx-parked")
        local out = run_slow(fake_port, stop, LOOKUP_BEGUN .. CONCURRENT_GETS .. [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            assert(s:get(ARGS.name, "k") == "v")  -- the master followed, its pool proven
            local count = lookups()
            local first = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            until_lookup_begun(count)
            local before = H.hiredis.stats()
            -- the 20 park on the next lookup, which begins when the first call's has ended
            local values = concurrent_gets(s, 20)
            local _, first_value = ngx.thread.wait(first)
            return { first = first_value, values = values, before = before, after = H.hiredis.stats() }
        ]], { name = name })
        assert.equal("v", out.first)
        for i = 1, 20 do assert.equal("v", out.values[i]) end
        local d = require("stats_delta").delta(out.before, out.after)
        assert.equal(1, d["sentinel.lookups"])
        -- the first call (parked on its own lookup) alone, then the 20 together, once their
        -- lookup was answered (without parking, the first of them goes direct when it wakes,
        -- and the others follow it)
        assert.equal(2, d["pipeline.batches"])
        assert.equal(21, d["pipeline.calls"])
    end)

    h.it_since(70000, "auto-pipelining",
        "routes a parked call by the lookup it parked on when that names another server", function()
        local replica, fake_port, stop, name = slow_sentinel(300, "ngx-parked-moved")
        local out = run_slow(fake_port, stop, LOOKUP_BEGUN .. NAME_THE_REPLICA .. [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            assert(s:get(ARGS.name, "k") == "v")  -- the master followed, its pool proven
            local count = lookups()
            local first = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            until_lookup_begun(count)
            name_the_replica()  -- while the first call's lookup is under way
            local second = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            local third = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)  -- parks
            local _, v1, e1 = ngx.thread.wait(first)
            local _, v2, e2 = ngx.thread.wait(second)
            local _, v3, e3 = ngx.thread.wait(third)
            return { { v1, e1 }, { v2, e2 }, { v3, e3 } }
        ]], { name = name, fake = fake_port, replica = replica })
        -- the parked call was built for the master, and is sent to the replica the lookup
        -- named (refused by its ROLE), never to the master it was built for
        local refused = { nil, "role mismatch: expected master, got slave" }
        assert.same({ { "v" }, refused, refused }, out)
    end)

    h.it_since(70000, "auto-pipelining",
        "serves the calls around a parked call that was killed, without waiting for it", function()
        local _, fake_port, stop, name = slow_sentinel(300, "ngx-parked-killed")
        local out = run_slow(fake_port, stop, [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            assert(s:get(ARGS.name, "k") == "v")  -- the master followed, its pool proven
            local first = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            ngx.sleep(0.05)
            -- a call parked on the next lookup, killed while it waits
            local second = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            assert(ngx.thread.kill(second))
            local third = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)  -- parks
            local _, v1, e1 = ngx.thread.wait(first)
            local _, v3, e3 = ngx.thread.wait(third)
            ngx.update_time()
            local started = ngx.now()
            local fourth = { s:get(ARGS.name, "k") }
            ngx.update_time()
            return { { v1, e1 }, { v3, e3 }, fourth, ngx.now() - started }
        ]], { name = name }, { connect_timeout = 500, send_timeout = 500, read_timeout = 500 })
        -- the killed call stalls nobody: the call after them waits for one lookup (300 ms),
        -- not 2 x 1.5 s + 1 s for one that never ends (when a caller led each lookup)
        assert.same({ { "v" }, { "v" }, { "v" } }, { out[1], out[2], out[3] })
        assert.is_true(out[4] < 2, "the call after it took " .. out[4] .. " s")
    end)

    it("serves the calls after one killed while it waited for a shared lookup", function()
        local _, fake_port, stop, name = slow_sentinel(300, "ngx-killed")
        local out = run_slow(fake_port, stop, [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            local first = ngx.thread.spawn(function() return s:get(ARGS.name, "k") end)
            ngx.sleep(0.05)
            assert(ngx.thread.kill(first))  -- killed while it waits for its lookup
            local second = { s:get(ARGS.name, "k") }
            local third = { s:get(ARGS.name, "k") }
            return { second, third }
        ]], { name = name }, { connect_timeout = 500, send_timeout = 500, read_timeout = 500 })
        -- the lookup runner is not the killed call: its lookup ends and serves the others
        assert.same({ { "v" }, { "v" } }, out)
    end)

    it("never reuses cosockets pooled for an address the sentinels stopped naming", function()
        cases.demoted_pool(open, "ngx-", function()
            local res = srv:run("content", "return H.hiredis.stats()")
            assert.is_true(res.ok, tostring(res[1]))
            return res[1]
        end)
    end)

    it("retries a hung sentinel within a few milliseconds past the others' answers (cosockets)", function()
        group.wait_stable(30)
        local hung = assert(socket.bind("127.0.0.1", 0, 64))
        local _, hung_port = hung:getsockname()
        hung:settimeout(0)
        local list = group.sentinels()
        table.insert(list, 2, { host = "127.0.0.1", port = hung_port })
        -- (the lookups' connections alone: sentinel_watch would connect there too)
        local args = { cfg = group.config({ sentinels = list, read_timeout = 600, sentinel_watch = false }),
                       label = h.unique("ngx-retry") }
        local TIMED_GET = [[
            local s = H.storage(ARGS.cfg, ARGS.label)
            local started = ngx.now()
            local out = { s:get("n", "missing") }
            ngx.update_time()
            return { out = out, seconds = ngx.now() - started }
        ]]
        local res = srv:run("content", TIMED_GET, args)
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({}, res[1].out)
        assert.is_true(res[1].seconds >= 0.59, "the first call waited for it")
        local accepted, slowest = 0, 0
        assert.is_true(h.wait_until(function()
            res = srv:run("content", TIMED_GET, args)
            assert.is_true(res.ok, tostring(res[1]))
            assert.same({}, res[1].out)
            slowest = math.max(slowest, res[1].seconds)
            while hung:accept() do accepted = accepted + 1 end
            return accepted == 2
        end, 5000), "never retried")
        hung:close()
        assert.is_true(slowest < 0.3, "a call took " .. slowest .. " s")
    end)
end)
