-- resty.session.hiredis.sentinel inside a real nginx: cosockets in request
-- phases, the native transport in log; a hung first sentinel; and interop both
-- ways with upstream's resty.session.redis.sentinel (lua-resty-redis-connector).
-- Failovers under writers: spec/sentinel/failover_spec.lua.
local h = require "helpers"
local nginx = require "nginx"
local group = require "sentinel_group"
local upstream = require "upstream"
local socket = require "socket"
local raw = require "raw_redis"

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
        if srv then assert.same({}, srv:shutdown()) end
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
                    assert.is_true(res.tcp > 0)
                else
                    assert.equal(0, res.tcp)
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
        ]], { cfg = group.config({ sentinels = list, read_timeout = 300 }), name = h.unique("hung"), now = NOW })
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

    -- Counts the connections the server on `port` accepts from now on; close() when done.
    local function connection_counter(port)
        local r = group.raw_server(port)
        local function received()
            return tonumber(assert(r:info("stats")).total_connections_received)
        end
        local base = received()
        return function() return received() - base end, function() r:close() end
    end

    local function set_answer(fake_port, named, epoch, promoted)
        local c = assert(raw.connect(fake_port))
        assert.equal("OK", c:call("SENTINEL", "SET-ANSWER", named, epoch, promoted))
        c:close()
    end

    local SET_GET = [[
        local s = H.storage(ARGS.cfg, ARGS.label)
        return { { s:set(ARGS.name, ARGS.key, ARGS.value, 60, ngx.time()) }, { s:get(ARGS.name, ARGS.key) } }
    ]]

    it("follows the sentinel with the highest config-epoch over cosockets, whatever the order", function()
        local master = group.wait_stable(30, true)
        local replica = group.replica_port()
        local behind, stop_behind = h.fake_server("sentinel:" .. replica .. ":41")
        local ahead, stop_ahead = h.fake_server("sentinel:" .. master .. ":42")
        local orders = {
            { { host = "127.0.0.1", port = behind }, { host = "127.0.0.1", port = ahead } },
            { { host = "127.0.0.1", port = ahead }, { host = "127.0.0.1", port = behind } },
        }
        local name = h.unique("ngx-epoch")
        local replica_connections, done = connection_counter(replica)
        for i, list in ipairs(orders) do
            local res = srv:run("content", SET_GET, { cfg = group.config({ sentinels = list }), name = name,
                                                      key = "k" .. i, value = "v" .. i })
            assert.is_true(res.ok, tostring(res[1]))
            assert.same({ { true }, { "v" .. i } }, res[1])
        end
        stop_behind()
        stop_ahead()
        assert.equal(0, replica_connections())
        done()
        local r = group.raw_server(master)
        assert.equal("v2", r:call("GET", name .. ":k2"))
        r:close()
    end)

    it("during a failover, cosocket writes go to the promoted replica once it is master, fail before", function()
        local master = group.wait_stable(30, true)
        local replica = group.replica_port()
        local leader, stop_leader = h.fake_server("sentinel:" .. replica .. ":50")
        set_answer(leader, replica, 50, master)
        local follower, stop_follower = h.fake_server("sentinel:" .. replica .. ":50")
        local list = { { host = "127.0.0.1", port = follower }, { host = "127.0.0.1", port = leader } }
        local name = h.unique("ngx-promoted")
        local replica_connections, done = connection_counter(replica)
        local res = srv:run("content", SET_GET, { cfg = group.config({ sentinels = list }), name = name,
                                                  key = "k", value = "v" })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ { true }, { "v" } }, res[1])
        assert.equal(0, replica_connections(), "the master both still name was left alone")
        done()
        set_answer(leader, master, 51, replica)
        set_answer(follower, master, 51)
        res = srv:run("content", SET_GET, { cfg = group.config({ sentinels = list }), name = name,
                                            key = "k2", value = "v" })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ nil, "failover in progress: the promoted replica is not master yet" }, res[1][1])
        local r = group.raw_server(master)
        assert.equal("v", r:call("GET", name .. ":k"))
        assert.equal(0, r:call("EXISTS", name .. ":k2"))
        r:close()
        stop_leader()
        stop_follower()
    end)

    it("never reuses cosockets pooled for an address the sentinels stopped naming", function()
        local master = group.wait_stable(30, true)
        local replica = group.replica_port()
        local fake, stop = h.fake_server("sentinel:" .. master .. ":1")
        local label = h.unique("ngx-demoted")
        local args = { cfg = group.config({ sentinels = { { host = "127.0.0.1", port = fake } } }),
                       label = label, name = label, key = "k", value = "v1" }
        local function call()
            local res = srv:run("content", SET_GET, args)
            assert.is_true(res.ok, tostring(res[1]))
            return res[1]
        end
        assert.same({ { true }, { "v1" } }, call())
        local master_connections, done = connection_counter(master)
        args.value = "v2"
        assert.same({ { true }, { "v2" } }, call())
        assert.equal(0, master_connections(), "the pooled connection serves the same master")
        set_answer(fake, replica, 2)
        assert.same({ { nil, "role mismatch: expected master, got slave" },
                      { nil, "role mismatch: expected master, got slave" } }, call())
        set_answer(fake, master, 3)
        args.value = "v3"
        assert.same({ { true }, { "v3" } }, call())
        stop()
        -- one new connection (its handshake with ROLE), the pooled one left alone
        assert.equal(1, master_connections())
        done()
    end)

    it("retries a hung sentinel within a few milliseconds past the others' answers (cosockets)", function()
        group.wait_stable(30)
        local hung = assert(socket.bind("127.0.0.1", 0, 64))
        local _, hung_port = hung:getsockname()
        hung:settimeout(0)
        local list = group.sentinels()
        table.insert(list, 2, { host = "127.0.0.1", port = hung_port })
        local args = { cfg = group.config({ sentinels = list, read_timeout = 600 }), label = h.unique("ngx-retry") }
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
