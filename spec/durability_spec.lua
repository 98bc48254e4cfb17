-- wait_replicas / wait_timeout over the native transport: every write of the
-- three modules (single node, cluster, sentinel) also waits for replica
-- acknowledgements in the same round trip; a shortfall is nil, err naming it,
-- and reads never wait. The failover loops (spec/cluster/failover_spec.lua,
-- spec/sentinel_spec.lua) show that no acknowledged write is lost with it.
local h = require "helpers"
local kit = require "cluster_kit"
local group = require "sentinel_group"
local socket = require "socket"

local hiredis = require "resty.session.hiredis"

local SHORTFALL = "^write not durable: (%d+) of (%d+) replicas %(wait_replicas%) acknowledged it"
    .. " within (%d+) ms %(wait_timeout%)$"

local function meta()
    return h.meta({ "aud" }, { "sub" })
end

-- Asserts a shortfall error: k of n within t ms.
local function assert_shortfall(k, n, t, ok, err)
    assert.is_nil(ok)
    assert.is_string(err)
    local got_k, got_n, got_t = err:match(SHORTFALL)
    assert.is_truthy(got_k, "not a shortfall: " .. err)
    assert.equal(k, tonumber(got_k))
    assert.equal(n, tonumber(got_n))
    assert.equal(t, tonumber(got_t))
end

describe("durability (native)", function()
    describe("configuration", function()
        local modules = {
            { "single node", function(extra) return hiredis.new(extra) end },
            { "cluster", function(extra)
                extra.nodes = { { ip = "127.0.0.1", port = 7000 } }
                return hiredis.new(extra)
            end },
            { "sentinel", function(extra)
                extra.sentinels = { { host = "127.0.0.1", port = 26379 } }
                return hiredis.new(extra)
            end },
        }
        local bad = {
            { "wait_replicas", -1 }, { "wait_replicas", "x" }, { "wait_replicas", 1.5 },
            { "wait_replicas", 2 ^ 31 }, { "wait_replicas", {} }, { "wait_replicas", true },
            { "wait_timeout", 0 }, { "wait_timeout", -5 }, { "wait_timeout", 2 ^ 31 },
            { "wait_timeout", 1.5 }, { "wait_timeout", "soon" }, { "wait_timeout", 0 / 0 },
        }
        for _, m in ipairs(modules) do
            for _, case in ipairs(bad) do
                local field, value = case[1], case[2]
                it(string.format("%s rejects %s = %s at new()", m[1], field, tostring(value)), function()
                    local ok, err = pcall(m[2], { [field] = value })
                    assert.is_false(ok)
                    assert.matches("^invalid " .. field .. ": ", tostring(err))
                end)
            end
            it(m[1] .. " accepts the fields (numeric strings too)", function()
                local s = m[2]({ wait_replicas = "2", wait_timeout = "150" })
                local d = m[2]({})
                if m[1] == "cluster" then
                    -- the cluster module reads fields back as given, as upstream's does
                    assert.equal("2", s.wait_replicas)
                    assert.is_nil(d.wait_replicas)
                else
                    assert.equal(2, s.wait_replicas)
                    assert.equal(150, s.wait_timeout)
                    assert.equal(0, d.wait_replicas)
                    assert.equal(1000, d.wait_timeout)
                end
            end)
        end
    end)

    describe("single node without replicas", function()
        it("a write is applied but not acknowledged: nil, err naming the shortfall", function()
            local s = hiredis.new({ port = h.port, wait_replicas = 1, wait_timeout = 50 })
            local name = h.unique("lonely")
            local now = os.time()
            local started = socket.gettime()
            assert_shortfall(0, 1, 50, s:set(name, "k", "v", 60, now))
            assert_shortfall(0, 1, 50, s:set(name, "k2", "v2", 60, now, "k", 10, meta()))
            assert.is_true(socket.gettime() - started < 5)  -- WAIT returned at its timeout
            -- reads never wait
            assert.equal("v2", s:get(name, "k2"))
            assert.same({ k2 = tostring(now + 60) }, s:read_metadata(name, "aud", "sub", 0))
            assert_shortfall(0, 1, 50, s:delete(name, "k2", now, meta()))
            assert_shortfall(0, 1, 50, s:delete(name, "k"))
            -- the same connection serves the next call (WAIT's reply was read with the write's)
            local plain = hiredis.new({ port = h.port })
            assert.same({ [1] = nil }, { plain:get(name, "k2") })
        end)

        it("wait_replicas = 0 sends no WAIT", function()
            local r = h.raw()
            local before = h.command_calls(r, "wait")
            local s = hiredis.new({ port = h.port, wait_replicas = 0 })
            assert.is_true(s:set(h.unique("nowait"), "k", "v", 60, os.time()))
            assert.equal(before, h.command_calls(r, "wait"))
            r:close()
        end)
    end)

    describe("a master with a replica (the sentinel group's, as a single node)", function()
        if not group.available then
            pending(group.why_absent)
            return
        end
        it("acknowledges a write once the replica has it", function()
            local master = group.wait_stable(30, true)
            local replica = group.replica_port()
            local s = hiredis.new({ port = master, password = group.password, wait_replicas = 1,
                                    wait_timeout = 2000 })
            local name = h.unique("durable")
            local now = os.time()
            assert.is_true(s:set(name, "k", "v", 60, now))
            assert.is_true(s:set(name, "k2", "v2", 60, now, "k", 10, meta()))
            -- acknowledged means on the replica already: read there at once, no polling
            local r = group.raw_server(replica)
            assert.equal("v2", r:call("GET", name .. ":k2"))
            assert.equal(tostring(now + 60), r:call("ZSCORE", name .. ":aud:sub", "k2"))
            assert.is_true(s:delete(name, "k2", now, meta()))
            assert.equal(0, r:call("EXISTS", name .. ":k2"))
            r:close()
            local two = hiredis.new({ port = master, password = group.password, wait_replicas = 2,
                                      wait_timeout = 100 })
            assert_shortfall(1, 2, 100, two:set(name, "k3", "v", 60, now))
        end)
    end)

    describe("sentinel", function()
        if not group.available then
            pending(group.why_absent)
            return
        end
        it("waits for the master's replica", function()
            group.wait_stable(30, true)
            local replica = group.replica_port()
            local s = hiredis.new(group.config({ wait_replicas = 1, wait_timeout = 2000 }))
            local name = h.unique("sdurable")
            assert.is_true(s:set(name, "k", "v", 60, os.time(), nil, nil, meta()))
            local r = group.raw_server(replica)
            assert.equal("v", r:call("GET", name .. ":k"))
            r:close()
            local two = hiredis.new(group.config({ wait_replicas = 2, wait_timeout = 100 }))
            assert_shortfall(1, 2, 100, two:set(name, "k2", "v", 60, os.time()))
        end)
    end)

    describe("cluster", function()
        if not kit.available then
            pending(kit.skip_reason)
            return
        end
        it("every node a write touches waits for its replica", function()
            assert(kit.wait_stable(15000))
            local s = hiredis.new(kit.config({ prefix = "durable", wait_replicas = 1, wait_timeout = 2000 }))
            local name = h.unique("cdurable")
            local now = os.time()
            -- the session key and the metadata key land on different slots (two phases, several nodes)
            assert.is_true(s:set(name, "k", "v", 60, now))
            assert.is_true(s:set(name, "k2", "v2", 60, now, "k", 10, meta()))
            assert.equal("v2", s:get(name, "k2"))
            assert.same({ k2 = tostring(now + 60) }, s:read_metadata(name, "aud", "sub", now))
            assert.is_true(s:delete(name, "k2", now, meta()))
            local two = hiredis.new(kit.config({ prefix = "durable", wait_replicas = 2, wait_timeout = 100 }))
            assert_shortfall(1, 2, 100, two:set(name, "k3", "v", 60, now))
        end)
    end)
end)
