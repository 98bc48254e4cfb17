-- wait_replicas inside a real nginx: cosockets in content (auto-pipelined and
-- not), the native transport in log, on a single node without replicas (the
-- shortfall), a master with a replica, the sentinel group and the cluster.
local h = require "helpers"
local nginx = require "nginx"
local kit = require "cluster_kit"
local group = require "sentinel_group"

local NOW = 1700000000
local SHORTFALL = "^write not durable: (%d+) of (%d+) replicas %(wait_replicas%) acknowledged it"
    .. " within (%d+) ms %(wait_timeout%)$"

-- Every write and read of one storage; concurrent writes too (they share a
-- pipelined connection: each WAIT's reply must reach its own call).
local EVERY_METHOD = [[
    local s = H.storage(ARGS.cfg)
    local meta = { audiences = { "aud" }, subjects = { "sub" } }
    local name = ARGS.name
    local out = {
        set = { s:set(name, "k1", "v1", 100, ARGS.now) },
        set_meta = { s:set(name, "k2", "v2", 200, ARGS.now, "k1", 10, meta) },
        get = { s:get(name, "k2") },
        read_metadata = { s:read_metadata(name, "aud", "sub", ARGS.now) },
        delete = { s:delete(name, "k2", ARGS.now, meta) },
        after = { s:get(name, "k2") },
    }
    if ngx.get_phase() == "content" then
        local threads = {}
        for i = 1, 8 do
            threads[i] = ngx.thread.spawn(function()
                return s:set(name, "c" .. i, "v" .. i, 100, ARGS.now)
            end)
        end
        out.concurrent = {}
        for i = 1, 8 do
            local _, ok, err = ngx.thread.wait(threads[i])
            out.concurrent[i] = { ok, err }
        end
    end
    return out
]]

local function shortfall(err)
    local k, n, t = tostring(err):match(SHORTFALL)
    return k and { tonumber(k), tonumber(n), tonumber(t) } or err
end

describe("durability in nginx", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    it("a call of another configuration never queues behind a WAIT on a pipelined connection", function()
        -- same pool (same identity), different durability: the default instance's
        -- calls must not wait for the durable one's WAIT (no replicas: it waits it out)
        local res = srv:run("content", [[
            local durable = H.storage(ARGS.durable)
            local plain = H.storage(ARGS.plain)
            -- a proven pool (its server version known): concurrent calls pipeline
            assert(plain:get(ARGS.name, "warm-up") == nil)
            local waiting = {}
            for i = 1, 4 do
                waiting[i] = ngx.thread.spawn(function()
                    return durable:set(ARGS.name, "w" .. i, "v", 60, ARGS.now)
                end)
            end
            local quick = {}
            for i = 1, 4 do
                quick[i] = ngx.thread.spawn(function()
                    return plain:set(ARGS.name, "p" .. i, "v", 60, ARGS.now)
                end)
            end
            local out = { durable = {}, plain = {} }
            for i = 1, 4 do
                out.plain[i] = { select(2, ngx.thread.wait(quick[i])) }
                out.durable[i] = { select(2, ngx.thread.wait(waiting[i])) }
            end
            return out
        ]], {
            durable = { port = h.port, pool = "shared-lane", wait_replicas = 1, wait_timeout = 1500 },
            plain = { port = h.port, pool = "shared-lane", connect_timeout = 300, read_timeout = 300 },
            name = h.unique("ngx-lane"), now = NOW,
        })
        assert.is_true(res.ok, tostring(res[1]))
        for i = 1, 4 do
            assert.same({ true }, res[1].plain[i])
            assert.same({ 0, 1, 1500 }, shortfall(res[1].durable[i][2]))
        end
    end)

    local cases = {
        { phase = "content", label = "cosockets" },
        { phase = "content", label = "cosockets without pipelining", extra = { pipelining = false } },
        { phase = "log", label = "native (log phase)" },
    }

    local function config(base, case)
        for k, v in pairs(case.extra or {}) do base[k] = v end
        return base
    end

    for _, case in ipairs(cases) do
        it("single node without replicas, " .. case.label .. ": every write is nil, err naming the shortfall",
            function()
                local name = h.unique("ngx-lonely")
                local res = srv:run(case.phase, EVERY_METHOD, {
                    cfg = config({ port = h.port, wait_replicas = 1, wait_timeout = 20 }, case),
                    name = name, now = NOW })
                assert.is_true(res.ok, tostring(res[1]))
                local out = res[1]
                assert.same({ 0, 1, 20 }, shortfall(out.set[2]))
                assert.same({ 0, 1, 20 }, shortfall(out.set_meta[2]))
                assert.same({ "v2" }, out.get)  -- applied on the master, only not acknowledged
                assert.same({ { k2 = tostring(NOW + 200) } }, out.read_metadata)
                assert.same({ 0, 1, 20 }, shortfall(out.delete[2]))
                assert.same({}, out.after)
                if out.concurrent then
                    for i = 1, 8 do assert.same({ 0, 1, 20 }, shortfall(out.concurrent[i][2])) end
                end
                if case.phase == "content" then assert.is_true(res.cosocket > 0) else assert.equal(0, res.cosocket) end
            end)

        it("the sentinel group, " .. case.label .. ": writes acknowledged once the replica has them", function()
            if not group.available then
                pending(group.why_absent)
                return
            end
            group.wait_stable(30, true)
            local replica = group.replica_port()
            local name = h.unique("ngx-sdurable")
            local res = srv:run(case.phase, EVERY_METHOD, {
                cfg = config(group.config({ wait_replicas = 1, wait_timeout = 2000 }), case),
                name = name, now = NOW })
            assert.is_true(res.ok, tostring(res[1]))
            local out = res[1]
            assert.same({ true }, out.set)
            assert.same({ true }, out.set_meta)
            assert.same({ "v2" }, out.get)
            assert.same({ true }, out.delete)
            local r = group.raw_server(replica)
            assert.equal("v1", r:call("GET", name .. ":k1"))
            if out.concurrent then
                for i = 1, 8 do
                    assert.same({ true }, out.concurrent[i])
                    assert.equal("v" .. i, r:call("GET", name .. ":c" .. i))
                end
            end
            r:close()
            -- more replicas than there are: the shortfall
            res = srv:run(case.phase, "return { H.storage(ARGS.cfg):set(ARGS.name, 'k', 'v', 60, ARGS.now) }", {
                cfg = config(group.config({ wait_replicas = 2, wait_timeout = 50 }), case), name = name, now = NOW })
            assert.is_true(res.ok, tostring(res[1]))
            assert.same({ 1, 2, 50 }, shortfall(res[1][2]))
        end)

        it("the cluster, " .. case.label .. ": every node a write touches waits for its replica", function()
            if not kit.available then
                pending(kit.skip_reason)
                return
            end
            assert(kit.wait_stable(15000))
            local name = h.unique("ngx-cdurable")
            local res = srv:run(case.phase, EVERY_METHOD, {
                cfg = config(kit.config({ prefix = "ndurable", wait_replicas = 1, wait_timeout = 2000 }), case),
                name = name, now = NOW })
            assert.is_true(res.ok, tostring(res[1]))
            local out = res[1]
            assert.same({ true }, out.set)
            assert.same({ true }, out.set_meta)
            assert.same({ "v2" }, out.get)
            assert.same({ { k2 = tostring(NOW + 200) } }, out.read_metadata)
            assert.same({ true }, out.delete)
            if out.concurrent then
                for i = 1, 8 do assert.same({ true }, out.concurrent[i]) end
            end
            res = srv:run(case.phase, "return { H.storage(ARGS.cfg):set(ARGS.name, 'k', 'v', 60, ARGS.now) }", {
                cfg = config(kit.config({ prefix = "ndurable", wait_replicas = 2, wait_timeout = 50 }), case),
                name = name, now = NOW })
            assert.is_true(res.ok, tostring(res[1]))
            assert.same({ 1, 2, 50 }, shortfall(res[1][2]))
        end)
    end
end)
