-- resty.session.hiredis.cluster over TLS, native transport (plain LuaJIT), against
-- the TLS-only 3 + 3 cluster (`cluster_tls`: no plain port at all, so every call
-- that succeeds went over TLS): verified certificates and SNI on every master, the
-- TLS ports from CLUSTER SHARDS, a MOVED that opens a new TLS connection on its
-- target, and a wrong CA as `nil, err`.
local kit = require "cluster_tls_kit"

if not kit.available then
    describe("cluster over TLS (native)", function() pending(kit.skip_reason) end)
    return
end

local cluster = require "resty.session.hiredis.cluster"

local counter = 0
local function unique(what)
    counter = counter + 1
    return string.format("%s-%d-%d-%d", what, os.time(), math.random(1e6), counter)
end

describe("cluster over TLS (native)", function()
    it("runs on nodes that have no plain port (the premise of these tests)", function()
        for _, port in ipairs(kit.ports) do
            assert.equal("port\n0", kit.cli(port, "CONFIG", "GET", "port"))
            assert.equal("tls-port\n" .. port, kit.cli(port, "CONFIG", "GET", "tls-port"))
            assert.equal("tls-cluster\nyes", kit.cli(port, "CONFIG", "GET", "tls-cluster"))
        end
        local masters = 0
        for _ in pairs(kit.masters()) do masters = masters + 1 end
        assert.equal(3, masters)
    end)

    it("sets, gets, reads metadata and deletes across slots on every master, verified", function()
        local prefix = unique("tls")
        local s = cluster.new(kit.config({ prefix = prefix }))
        local now = os.time()
        local subject = unique("alice")
        local m = { audiences = { "web", "api" }, subjects = { subject, subject } }
        local ids, expected = {}, {}
        -- enough sessions that every master holds some (checked below)
        for i = 1, 24 do
            ids[i] = unique("id")
            assert.same({ true }, { s:set("session", ids[i], "value-" .. i, 300, now, nil, nil, m) })
            expected[ids[i]] = tostring(now + 300)
        end
        for i, id in ipairs(ids) do
            assert.equal("value-" .. i, s:get("session", id))
        end
        assert.same(expected, s:read_metadata("session", "web", subject, now))
        assert.same(expected, s:read_metadata("session", "api", subject, now))

        -- server side: the session keys are spread over all three masters
        local total = 0
        for port in pairs(kit.masters()) do
            local here = #kit.local_keys(port, prefix .. ":session:id-*")
            assert.is_true(here > 0, "no session key on master " .. port)
            total = total + here
        end
        assert.equal(#ids, total)

        for _, id in ipairs(ids) do
            assert.is_true(s:delete("session", id, now, m))
            assert.is_nil(s:get("session", id))
        end
        assert.same({}, s:read_metadata("session", "web", subject, now))
        for port in pairs(kit.masters()) do
            assert.same({}, kit.local_keys(port, prefix .. ":*"))
        end
    end)

    it("follows a MOVED to another master with a new verified TLS connection there", function()
        -- a custom pool: no connection to any node from the tests above
        local s = cluster.new(kit.config({ prefix = unique("moved"), pool = unique("pool") }))
        local masters = kit.masters()
        -- the slot map is loaded by a first call
        assert.is_nil(s:get("session", unique("warm")))
        local id, slot, from
        repeat
            id = unique("id")
            slot = kit.slot(s.prefix .. ":session:" .. id)
            from = kit.owner(slot)
        until tonumber(kit.cli(from, "CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
        local to
        for port in pairs(masters) do
            if port ~= from then to = port break end
        end
        kit.move_empty_slot(slot, from, to)
        finally(function()
            kit.cli(to, "UNLINK", s.prefix .. ":session:" .. id)
            kit.move_empty_slot(slot, to, from)
        end)

        local moved_before = require("resty.session.hiredis").stats().cluster.moved
        local connections_before = kit.info_number(to, "stats", "total_connections_received")
        assert.is_true(s:set("session", id, "moved-value", 300, os.time()))
        -- the stale map sent it to `from`, which answered MOVED with its TLS port (counted
        -- by stats(): INFO errorstats, Redis 6.2, is not on every server make servers runs)
        assert.is_true(require("resty.session.hiredis").stats().cluster.moved > moved_before)
        assert.is_true(kit.info_number(to, "stats", "total_connections_received") > connections_before)
        assert.equal("moved-value", kit.cli(to, "GET", s.prefix .. ":session:" .. id))
        assert.equal("moved-value", s:get("session", id))
    end)

    it("fails with the TLS reason against a CA that did not sign the nodes' certificates", function()
        local s = cluster.new(kit.config({ prefix = unique("wrong-ca"), pool = unique("pool"),
                                           ssl_trusted_certificate = kit.certs .. "/self.crt" }))
        local ok, err = s:set("session", unique("id"), "v", 60, os.time())
        assert.is_nil(ok)
        assert.matches("ssl handshake failed: certificate verify failed", err, 1, true)
        local v, gerr = s:get("session", unique("id"))
        assert.is_nil(v)
        assert.matches("ssl handshake failed: certificate verify failed", gerr, 1, true)
        assert.is_nil(gerr:find(kit.password, 1, true))
    end)

    it("fails with the TLS reason when server_name does not match the certificates", function()
        local s = cluster.new(kit.config({ prefix = unique("wrong-name"), pool = unique("pool"),
                                           server_name = "other.invalid" }))
        local v, err = s:get("session", unique("id"))
        assert.is_nil(v)
        assert.matches("ssl handshake failed: hostname mismatch", err, 1, true)
    end)

    it("fails as a connection error without ssl: the nodes speak TLS only", function()
        local s = cluster.new(kit.config({ prefix = unique("plain"), ssl = false, ssl_verify = false,
                                           connect_timeout = 300, read_timeout = 300 }))
        local v, err = s:get("session", unique("id"))
        assert.is_nil(v)
        -- the node drops the connection on the plain-text command it takes for a handshake
        assert.is_true(err:find("connection reset", 1, true) ~= nil or err:find("closed", 1, true) ~= nil
                       or err:find("timeout", 1, true) ~= nil, "unexpected error: " .. tostring(err))
    end)

    it("encrypts without verification with ssl_verify = false (as upstream)", function()
        local s = cluster.new(kit.config({ prefix = unique("noverify"), pool = unique("pool"), ssl_verify = false,
                                           ssl_trusted_certificate = kit.certs .. "/self.crt" }))
        local id = unique("id")
        assert.is_true(s:set("session", id, "v", 60, os.time()))
        assert.equal("v", s:get("session", id))
        assert.is_true(s:delete("session", id, os.time()))
    end)
end)
