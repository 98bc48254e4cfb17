-- resty.session.hiredis.cluster inside a real nginx: cosockets in request phases
-- and timers (per-node light threads), the native transport in log and the
-- other phases without cosockets, the same data either way; upstream's
-- resty.session.redis.cluster (Kong's resty-redis-cluster) reading what we write
-- and the other way round. Failovers under cosocket writers: spec/cluster/failover_spec.lua.
local kit = require "cluster_kit"

if not kit.available then
    describe("cluster in nginx", function() pending(kit.skip_reason) end)
    return
end

local nginx = require "nginx"
local upstream = require "upstream"

local NOW = os.time()

-- Upstream's cluster storage also needs Kong's cluster client, lua-resty-lock
-- and lua-resty-string; from UPSTREAM_LUA_PATH, or ../shared/third_party.
local extra = {}
if upstream.origin == "../shared/third_party" then
    for _, dir in ipairs({ "kong-redis-cluster", "lua-resty-lock", "lua-resty-string" }) do
        extra[#extra + 1] = nginx.root .. "/../shared/third_party/" .. dir .. "/lib/?.lua"
    end
end
local lua_path = upstream.lua_path and (upstream.lua_path .. ";" .. table.concat(extra, ";")) or nil
local cluster_missing = upstream.redis_missing
if not cluster_missing then
    for _, module in ipairs({ "resty.rediscluster", "resty.lock", "resty.string", "resty.session.redis.cluster" }) do
        local found = package.searchpath(module, lua_path)
        if not found then
            cluster_missing = module .. " not found in " .. upstream.origin
                              .. " (Kong's resty-redis-cluster, lua-resty-lock, lua-resty-string; see README)"
            break
        end
    end
end
if cluster_missing then
    io.stderr:write("cluster in nginx: upstream interop skipped: ", cluster_missing, "\n")
end

describe("cluster in nginx", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({
            workers = 1,
            lua_path = lua_path,
            -- upstream's cluster client keeps its slot-cache lock here (ours needs none)
            http = "  lua_shared_dict redis_cluster_slot_locks 1m;\n",
            init = "H.cluster = require 'resty.session.hiredis.cluster'",
        })
    end)

    lazy_teardown(function()
        if srv then srv:shutdown() end
    end)

    local function run(phase, code, args)
        local res = srv:run(phase, code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    local WRITE = [[
        local s = H.hiredis.new(ARGS.cfg)
        local m = { audiences = { "web", "api" }, subjects = { ARGS.subject, ARGS.subject } }
        assert(s:set("session", ARGS.old, "old", 600, ARGS.now, nil, nil, m))
        return { s:set("session", ARGS.key, ARGS.value, 300, ARGS.now, ARGS.old, 10, m) }
    ]]
    local READ = [[
        local s = H.hiredis.new(ARGS.cfg)
        return {
            value = s:get("session", ARGS.key),
            web = s:read_metadata("session", "web", ARGS.subject, ARGS.now),
            api = s:read_metadata("session", "api", ARGS.subject, ARGS.now),
            deleted = s:delete("session", ARGS.old, ARGS.now, { audiences = { "web" }, subjects = { ARGS.subject } }),
            old = s:get("session", ARGS.old),
        }
    ]]

    for _, case in ipairs({ { "content", "log" }, { "log", "content" }, { "timer", "header_filter" },
                            { "access", "body_filter" } }) do
        local writer, reader = case[1], case[2]
        it(string.format("written in %s, read in %s", writer, reader), function()
            local args = { cfg = kit.config({ prefix = "nginx" }), key = "k" .. math.random(1e9),
                           old = "o" .. math.random(1e9), subject = "s" .. math.random(1e9),
                           value = "v\0\r\n" .. string.rep("x", 5000), now = NOW }
            local written, wres = run(writer, WRITE, args)
            assert.same({ true }, written)
            local read, rres = run(reader, READ, args)
            assert.is_true(read.value == args.value)
            assert.same({ [args.key] = tostring(NOW + 300) }, read.web)
            assert.same({ [args.key] = tostring(NOW + 300) }, read.api)
            assert.is_true(read.deleted)
            assert.is_nil(read.old)
            -- one side on cosockets, the other native
            assert.is_true((wres.cosocket == 0) ~= (rres.cosocket == 0))
            local redis_key = "nginx:session:" .. args.key
            assert.is_true(kit.key_call(redis_key, "TTL", redis_key) > 290)
        end)
    end

    it("stores the caller's bytes of concurrent large sets (sent from the caller's string)", function()
        local key = "k" .. math.random(1e9) .. "-"
        local values = {}
        for i = 1, 20 do
            values[i] = "\r\n$-1\r\n*2\r\n" .. string.rep(string.char(64 + i), 100 * i) .. "\0end"
        end
        local out = run("content", [[
            local s = H.storage(ARGS.cfg, "large")
            local threads = {}
            for i, value in ipairs(ARGS.values) do
                threads[i] = ngx.thread.spawn(function()
                    local m = i % 2 == 0 and { audiences = { "web" }, subjects = { ARGS.key .. "u" .. i } } or nil
                    local ok, err = s:set("session", ARGS.key .. i, value, 300, ngx.time(), nil, nil, m)
                    return ok or err
                end)
            end
            local results = {}
            for i = 1, #threads do
                local ok, r = ngx.thread.wait(threads[i])
                results[i] = ok and r or ("thread failed: " .. tostring(r))
            end
            H.wait_pipelines_idle()  -- later specs want calls that go direct
            return results
        ]], { cfg = kit.config({ prefix = "large" }), values = values, key = key })
        for i, value in ipairs(values) do
            assert.equal(true, out[i], "set " .. i)
            local redis_key = "large:session:" .. key .. i
            assert.is_true(kit.key_call(redis_key, "GET", redis_key) == value, "value " .. i)
        end
        local zset = "large:session:web:" .. key .. "u2"
        assert.equal(1, kit.key_call(zset, "ZCARD", zset))
    end)

    -- Lingering node pipelines (pipeline.lua; only where ngx.sleep(0) is silent, so
    -- an nginx at error level): chained callers whose calls span several masters (a
    -- set with metadata and old_key, two phases) each get their own results.
    it("hands every chained caller its own results while node pipelines linger", function()
        local quiet = nginx.start_kit({ workers = 1, log_level = "error",
                                        init = "H.cluster = require 'resty.session.hiredis.cluster'" })
        local ok, err = pcall(function()
            local res = quiet:run("content", [[
                local pipeline = require "resty.session.hiredis.pipeline"
                local stats = require("resty.session.hiredis").stats
                local s = H.storage(ARGS.cfg, "chains")
                assert(s:get("session", "warm-up") == nil)
                local lingers, overruns = stats().pipeline.lingers, pipeline.linger_overruns
                local threads, wrong = {}, {}
                for t = 1, 8 do
                    threads[t] = ngx.thread.spawn(function()
                        local subject = ARGS.key .. "u" .. t
                        local m = { audiences = { "web", "api" }, subjects = { subject, subject } }
                        local old
                        for r = 1, 10 do
                            local key, value = ARGS.key .. t .. "-" .. r, string.rep(string.char(64 + t), r)
                            local set, serr = s:set("session", key, value, 300, ARGS.now, old, 10, m)
                            local got, gerr = s:get("session", key)
                            local web, werr = s:read_metadata("session", "web", subject, ARGS.now)
                            if not set or got ~= value or not (web and web[key]) then
                                wrong[#wrong + 1] = key .. ": " .. tostring(serr or gerr or werr or got)
                            end
                            old = key
                        end
                    end)
                end
                for t = 1, #threads do
                    local done, terr = ngx.thread.wait(threads[t])
                    if not done then wrong[#wrong + 1] = "thread failed: " .. tostring(terr) end
                end
                H.wait_pipelines_idle()
                return { wrong = wrong, lingers = stats().pipeline.lingers - lingers,
                         overruns = pipeline.linger_overruns - overruns }
            ]], { cfg = kit.config({ prefix = "chains" }), key = "c" .. math.random(1e9), now = NOW })
            assert.is_true(res.ok, tostring(res[1]))
            assert.same({}, res[1].wrong)
            assert.equal(0, res[1].overruns)
            io.stderr:write("cluster chains: ", res[1].lingers, " lingering writes\n")
            assert.is_nil(quiet:error_log():find("ngx.sleep(0)", 1, true))
        end)
        assert.same({}, quiet:shutdown())
        assert(ok, err)
    end)

    it("runs every node of a call in parallel light threads and fails cleanly", function()
        local out = run("content", [[
            local s = H.hiredis.new(ARGS.cfg)
            local subjects, audiences = {}, {}
            for i = 1, 12 do audiences[i] = "a" .. i; subjects[i] = "s" end
            local m = { audiences = audiences, subjects = subjects }
            local ok, err = s:set("session", "k", "v", 60, ARGS.now, nil, nil, m)
            local bad = H.hiredis.new(ARGS.bad)
            local bok, berr = bad:get("session", "k")
            return { ok = ok, err = err, count = #audiences, bok = bok, berr = berr,
                     listed = s:read_metadata("session", "a7", "s", ARGS.now) }
        ]], { cfg = kit.config({ prefix = "par" }), bad = kit.config({ password = "wrong" }), now = NOW })
        assert.is_true(out.ok, out.err)
        assert.same({ k = tostring(NOW + 60) }, out.listed)
        assert.is_nil(out.bok)
        assert.matches("^WRONGPASS", out.berr)
    end)

    it("sends a node that timed out a lone PING over cosockets before the next call's commands", function()
        local args = { cfg = kit.config({ prefix = "ngxstall", read_timeout = 200 }),
                       name = "stall" .. math.random(1e9), key = "k" .. math.random(1e9) }
        kit.stalled_node_probe(function(value)
            args.value = value
            local out, res = run("content", [[
                local s = H.storage(ARGS.cfg, ARGS.name)
                return { { s:set("session", ARGS.key, ARGS.value, 600, ngx.time()) }, { s:get("session", ARGS.key) } }
            ]], args)
            assert.is_true(res.cosocket > 0, "served over cosockets")
            return out
        end, "ngxstall", args.key)
    end)

    it("serves a call to one node with begin, its reads and finish, and no light thread", function()
        local args = { cfg = kit.config({ prefix = "{ngxcross}" }), name = "cross" .. math.random(1e9) }
        local out = run("content", [=[
            local core = require "resty.session.hiredis.core"
            local s = H.storage(ARGS.cfg, ARGS.name)
            assert(s:set("session", "k", "v", 600))
            assert(s:get("session", "k") == "v")  -- warm: slot map loaded, connection pooled
            H.wait_pipelines_idle()  -- an earlier spec's lane would carry these calls
            -- count every C method of the cluster and single-node operations, and spawns
            local counts, saved = {}, {}
            local function wrap(index)
                for name, f in pairs(index) do
                    saved[#saved + 1] = { index, name, f }
                    index[name] = function(...)
                        counts[name] = (counts[name] or 0) + 1
                        return f(...)
                    end
                end
            end
            wrap(getmetatable(core.cluster_operation()).__index)
            wrap(getmetatable(core.operation()).__index)
            local spawn = ngx.thread.spawn
            ngx.thread.spawn = function(...)
                counts.spawn = (counts.spawn or 0) + 1
                return spawn(...)
            end
            local values = {}
            for i = 1, 10 do values[i] = s:get("session", "k") end
            ngx.thread.spawn = spawn
            for _, entry in ipairs(saved) do entry[1][entry[2]] = entry[3] end
            return { counts = counts, values = values }
        ]=], args)
        for i = 1, 10 do assert.equal("v", out.values[i]) end
        local reads = (out.counts.read or 0) + (out.counts.read_from or 0)
        out.counts.read, out.counts.read_from = nil, nil
        assert.same({ begin = 10, finish = 10 }, out.counts)
        assert.equal(10, reads, "one read per call: the reply in one chunk")
    end)

    -- the auto-pipeline runs only on Redis >= 7 pools (one round trip per operation)
    require("helpers").it_since(70000, "auto-pipelining",
        "queues a round's node batches on the nodes' auto-pipelines, with no light thread", function()
        local core = require "resty.session.hiredis.core"
        local function owner(key) return kit.owner(core.key_slot("ngxround:session:" .. key)) end
        -- metadata keys on two masters, the session keys (old and new) on the third
        local subjects, masters = {}, {}
        for i = 1, 1e5 do
            local node = owner("web:s" .. i)
            if not masters[node] then
                masters[node] = true
                subjects[#subjects + 1] = "s" .. i
                if #subjects == 2 then break end
            end
        end
        local keys = {}
        for i = 1, 1e5 do
            if not masters[owner("k" .. i)] then
                keys[#keys + 1] = "k" .. i
                if #keys == 6 then break end
            end
        end
        local args = { cfg = kit.config({ prefix = "ngxround" }), name = "round" .. math.random(1e9),
                       keys = keys, subjects = subjects, now = NOW }
        local out = run("content", [=[
            local s = H.storage(ARGS.cfg, ARGS.name)
            local m = { audiences = { "web", "web" }, subjects = ARGS.subjects }
            local old = ARGS.keys[6]
            assert(s:set("session", old, "v", 600, ARGS.now, nil, nil, m))  -- warm: every node's pool proven
            local spawned, submitted = 0, H.pipelined
            local spawn = ngx.thread.spawn
            ngx.thread.spawn = function(...)
                spawned = spawned + 1
                return spawn(...)
            end
            local results = {}
            for i = 1, 5 do results[i] = { s:set("session", ARGS.keys[i], "v" .. i, 600, ARGS.now, old, 10, m) } end
            ngx.thread.spawn = spawn
            submitted = H.pipelined - submitted
            local listed = {}
            for i = 1, 2 do listed[i] = s:read_metadata("session", "web", ARGS.subjects[i], ARGS.now) end
            return { results = results, spawned = spawned, submitted = submitted, listed = listed }
        ]=], args)
        for i = 1, 5 do assert.same({ true }, out.results[i]) end
        assert.equal(0, out.spawned, "no light thread")
        -- per call: the add round's three node batches, the remove round's three
        assert.equal(5 * 6, out.submitted, "batches queued on pipelines")
        for i = 1, 2 do
            for j = 1, 5 do
                assert.equal(tostring(NOW + 600), out.listed[i][keys[j]])
            end
            assert.is_nil(out.listed[i][keys[6]])
        end
    end)

    require("helpers").it_since(70000, "auto-pipelining",
        "ends a round whose node stalls at the read_timeout, with the other nodes' answers taken", function()
        local core = require "resty.session.hiredis.core"
        local function owner(key) return kit.owner(core.key_slot("ngxgroup:session:" .. key)) end
        local stalled = owner("web:a1")
        local subjects = { "a1" }
        for i = 1, 1e5 do
            if owner("web:b" .. i) ~= stalled then
                subjects[2] = "b" .. i
                break
            end
        end
        local args = { cfg = kit.config({ prefix = "ngxgroup", read_timeout = 200 }),
                       name = "group" .. math.random(1e9), subjects = subjects, now = NOW,
                       key = "k" .. math.random(1e9) }
        local CALLS = [=[
            local s = H.storage(ARGS.cfg, ARGS.name)
            local m = { audiences = { "web", "web" }, subjects = ARGS.subjects }
            local threads = {}
            for i = 1, 3 do
                threads[i] = ngx.thread.spawn(function()
                    return { s:set("session", ARGS.key .. i, "v", 600, ARGS.now, nil, nil, m) }
                end)
            end
            local out = {}
            for i = 1, 3 do out[i] = select(2, ngx.thread.wait(threads[i])) end
            return out
        ]=]
        assert.same({ { true }, { true }, { true } }, run("content", CALLS, args))  -- pools proven
        local pid = kit.pid_of(stalled)
        local stopped = os.execute("kill -STOP " .. pid)
        assert.is_true(stopped == 0 or stopped == true, "kill -STOP " .. pid)
        local ok, err = pcall(function()
            assert.same({ { nil, "timeout" }, { nil, "timeout" }, { nil, "timeout" } }, run("content", CALLS, args))
        end)
        os.execute("kill -CONT " .. pid)
        if not ok then error(err, 0) end
        -- the node is suspect (a lone PING first), then the calls go through again
        local out
        for _ = 1, 20 do
            out = run("content", CALLS, args)
            if out[1][1] then break end
        end
        assert.same({ { true }, { true }, { true } }, out)
        local listed = run("content", [[
            return H.storage(ARGS.cfg, ARGS.name):read_metadata("session", "web", ARGS.subjects[2], ARGS.now)
        ]], args)
        for i = 1, 3 do assert.equal(tostring(NOW + 600), listed[args.key .. i]) end
    end)

    -- the auto-pipeline runs only on Redis >= 7 pools (one round trip per operation)
    require("helpers").it_since(70000, "auto-pipelining",
        "runs concurrent calls to one node on that node's auto-pipeline", function()
        local sd = require "stats_delta"
        local args = { cfg = kit.config({ prefix = "{ngxpipe}" }), name = "pipe" .. math.random(1e9) }
        local out = run("content", [[
            local s = H.storage(ARGS.cfg, ARGS.name)
            for i = 1, 40 do assert(s:set("session", "k" .. i, "v" .. i, 600)) end
            local before = H.hiredis.stats()
            local threads = {}
            for i = 1, 40 do
                threads[i] = ngx.thread.spawn(function() return s:get("session", "k" .. i) end)
            end
            local values = {}
            for i = 1, 40 do
                local ok, value = ngx.thread.wait(threads[i])
                values[i] = ok and value or false
            end
            return { before = before, after = H.hiredis.stats(), values = values }
        ]], args)
        for i = 1, 40 do assert.equal("v" .. i, out.values[i]) end
        local d = sd.delta(out.before, out.after)
        assert.equal(40, d["get.calls"])
        assert.equal(0, d["get.errors"])
        assert.is_true(d["pipeline.calls"] > d["pipeline.batches"], string.format(
            "calls share writes: %d calls in %d batches", d["pipeline.calls"], d["pipeline.batches"]))
    end)

    require("helpers").it_since(70000, "auto-pipelining",
        "follows a MOVED of a metadata key's slot in a round of several nodes", function()
        local core = require "resty.session.hiredis.core"
        local sd = require "stats_delta"
        local args = { cfg = kit.config({ prefix = "ngxmovedmeta" }), name = "movedmeta" .. math.random(1e9),
                       key = "k" .. math.random(1e9), subject = "s" .. math.random(1e9), now = NOW }
        local meta_slot = core.key_slot("ngxmovedmeta:session:web:" .. args.subject)
        local CALL = [[
            local s = H.storage(ARGS.cfg, ARGS.name)
            local m = { audiences = { "web", "api" }, subjects = { ARGS.subject, ARGS.subject } }
            local before = H.hiredis.stats()
            local ok, err = s:set("session", ARGS.key, "v", 600, ARGS.now, nil, nil, m)
            return { ok = ok, err = err, before = before, after = H.hiredis.stats(),
                     listed = s:read_metadata("session", "web", ARGS.subject, ARGS.now) }
        ]]
        assert.is_true(run("content", CALL, args).ok)  -- the map loaded, the pools proven
        local from = kit.owner(meta_slot)
        kit.move_slot(meta_slot, from, kit.other_master(from))
        args.key = args.key .. "b"
        local out, res = run("content", CALL, args)
        assert.is_true(res.cosocket > 0, "served over cosockets")
        assert.is_true(out.ok, tostring(out.err))
        local d = sd.delta(out.before, out.after)
        assert.equal(1, d["cluster.moved"])
        assert.equal(1, d["set.calls"])
        assert.equal(0, d["set.errors"])
        assert.equal(tostring(NOW + 600), out.listed[args.key])
    end)

    it("counts a MOVED followed over cosockets in stats(), the call once", function()
        local core = require "resty.session.hiredis.core"
        local sd = require "stats_delta"
        local args = { cfg = kit.config({ prefix = "ngxmoved" }), name = "moved" .. math.random(1e9),
                       key = "k" .. math.random(1e9) }
        local slot = core.key_slot("ngxmoved:session:" .. args.key)
        assert.same({ true }, run("content", [[
            return { H.storage(ARGS.cfg, ARGS.name):set("session", ARGS.key, "v", 600) }
        ]], args))
        local from = kit.owner(slot)
        kit.move_slot(slot, from, kit.other_master(from))
        local out, res = run("content", [[
            local before = H.hiredis.stats()
            local value = H.storage(ARGS.cfg, ARGS.name):get("session", ARGS.key)
            return { before = before, after = H.hiredis.stats(), value = value }
        ]], args)
        assert.is_true(res.cosocket > 0, "served over cosockets")
        assert.equal("v", out.value)
        local d = sd.delta(out.before, out.after)
        assert.equal(1, d["cluster.moved"])
        assert.equal(1, d["cluster.retries"])
        assert.equal(1, d["get.calls"])
        assert.equal(0, d["get.errors"])
    end)

    upstream.it("upstream's resty.session.redis.cluster reads what we write, and we read what it writes", function()
        if cluster_missing then pending("skipped: " .. cluster_missing) return end
        if require("helpers").server_version() < 60200 then
            -- upstream's read_metadata sends ZRANGE ... BYSCORE
            pending("skipped: upstream's read_metadata needs Redis 6.2 (ZRANGE ... BYSCORE)")
            return
        end
        local nodes = kit.nodes()
        local args = { cfg = kit.config({ prefix = "interop" }),
                       up = { name = "interop", prefix = "interop", nodes = nodes, password = kit.password,
                              lock_zone = "redis_cluster_slot_locks", connect_timeout = 1000,
                              read_timeout = 1000, send_timeout = 1000 },
                       subject = "s" .. math.random(1e9), now = NOW }
        local out = run("content", [[
            local ours = H.hiredis.new(ARGS.cfg)
            local theirs = require("resty.session.redis.cluster").new(ARGS.up)
            local m = { audiences = { "web" }, subjects = { ARGS.subject } }
            local r = {}
            -- ours writes, upstream reads
            r.ours_set = ours:set("session", "a", "from-ours", 300, ARGS.now, nil, nil, m)
            r.up_get, r.up_get_err = theirs:get("session", "a")
            r.up_meta = theirs:read_metadata("session", "web", ARGS.subject, ARGS.now)
            -- upstream writes (rotating a to b), ours reads
            local ok, err = theirs:set("session", "b", "from-upstream", 300, ARGS.now, "a", 10, m)
            r.up_set_ok, r.up_set_err = ok ~= nil, err
            r.ours_get = ours:get("session", "b")
            r.ours_meta = ours:read_metadata("session", "web", ARGS.subject, ARGS.now)
            -- ours deletes what upstream wrote; upstream sees it gone
            r.ours_delete = ours:delete("session", "b", ARGS.now, m)
            r.up_after = theirs:get("session", "b")
            return r
        ]], args)
        assert.is_true(out.ours_set)
        assert.equal("from-ours", out.up_get, tostring(out.up_get_err))
        assert.same({ a = tostring(NOW + 300) }, out.up_meta)
        assert.is_true(out.up_set_ok, tostring(out.up_set_err))
        assert.equal("from-upstream", out.ours_get)
        assert.same({ b = tostring(NOW + 300) }, out.ours_meta)
        assert.is_true(out.ours_delete)
        assert.is_nil(out.up_after)
        local old = "interop:session:a"
        local ttl = kit.key_call(old, "TTL", old)
        assert.is_true(ttl > 0 and ttl <= 10)
    end, true)
end)
