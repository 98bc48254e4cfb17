-- The per-process connection pool: reuse (same CLIENT ID across calls),
-- isolation by identity, custom pool names, keepalive expiry, connections the
-- server closed meanwhile.
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

describe("connection pool", function()
    local r, name

    before_each(function()
        r = h.raw()
        h.kill_others(r)
        name = h.unique("pool")
    end)

    after_each(function()
        r:close()
        collectgarbage()
    end)

    it("reuses one connection across calls (CLIENT ID stays the same)", function()
        local store = hiredis.new({ port = h.port })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local ids = h.other_ids(r)
        assert.equal(1, #ids)
        for _ = 1, 20 do
            assert.equal("v", store:get(name, "k"))
            assert.equal(true, store:set(name, "k", "v", 60, os.time(), "old", 5,
                { audiences = { "a" }, subjects = { "s" } }))
            assert.is_table(store:read_metadata(name, "a", "s", os.time()))
        end
        assert.equal(true, store:delete(name, "k", os.time()))
        assert.same(ids, h.other_ids(r))
    end)

    it("shares the pool between instances with the same configuration", function()
        local a = hiredis.new({ port = h.port, prefix = "x" })
        local b = hiredis.new({ port = h.port, prefix = "y" })
        assert.equal(true, a:set(name, "k", "v", 60, os.time()))
        local ids = h.other_ids(r)
        assert.equal(1, #ids)
        assert.equal(true, b:set(name, "k", "v", 60, os.time()))
        assert.same(ids, h.other_ids(r))
    end)

    it("keeps databases in separate pools", function()
        local db0 = hiredis.new({ port = h.port })
        local db1 = hiredis.new({ port = h.port, database = 1 })
        for _ = 1, 3 do
            assert.equal(true, db0:set(name, "k", "v0", 60, os.time()))
            assert.equal(true, db1:set(name, "k", "v1", 60, os.time()))
        end
        assert.equal(1, #h.other_ids(r, { db = "0" }))
        assert.equal(1, #h.other_ids(r, { db = "1" }))
        assert.equal(2, #h.other_ids(r))
        assert.equal("v0", db0:get(name, "k"))
        assert.equal("v1", db1:get(name, "k"))
    end)

    it("keeps usernames in separate pools", function()
        local ra = h.raw_acl()
        h.kill_others(ra)
        local app = hiredis.new({ port = h.acl_port, username = h.acl_user, password = h.acl_password })
        local default = hiredis.new({ port = h.acl_port, password = h.acl_default_password })
        for _ = 1, 3 do
            assert.equal(true, app:set(name, "k", "v", 60, os.time()))
            assert.equal(true, default:set(name, "k", "v", 60, os.time()))
        end
        -- the raw client is "app" too: other_ids excludes it
        assert.equal(1, #h.other_ids(ra, { user = h.acl_user }))
        assert.equal(1, #h.other_ids(ra, { user = "default" }))
        ra:close()
    end)

    it("keeps passwords in separate pools", function()
        local ra = h.raw_acl()
        local user = h.unique("user")
        assert.equal("OK", ra:call("ACL", "SETUSER", user, "on", ">pw-one", ">pw-two", h.acl_everything(ra)))
        h.kill_others(ra)
        local one = hiredis.new({ port = h.acl_port, username = user, password = "pw-one" })
        local two = hiredis.new({ port = h.acl_port, username = user, password = "pw-two" })
        for _ = 1, 3 do
            assert.equal(true, one:set(name, "k", "v", 60, os.time()))
            assert.equal(true, two:set(name, "k", "v", 60, os.time()))
        end
        assert.equal(2, #h.other_ids(ra, { user = user }))
        -- a removed password only breaks the pool that used it... on its next new connection
        assert.equal(1, ra:call("ACL", "DELUSER", user))
        ra:close()
    end)

    it("keeps TCP and unix socket endpoints in separate pools", function()
        local tcp = hiredis.new({ port = h.port })
        local unix = hiredis.new({ socket = h.socket })
        for _ = 1, 3 do
            assert.equal(true, tcp:set(name, "k", "v", 60, os.time()))
            assert.equal(true, unix:set(name, "k", "v", 60, os.time()))
        end
        assert.equal(2, #h.other_ids(r))
    end)

    it("shares a custom pool name between instances", function()
        local pool = h.unique("custom")
        local a = hiredis.new({ port = h.port, pool = pool })
        local b = hiredis.new({ port = h.port, pool = pool, prefix = "other" })
        assert.equal(true, a:set(name, "k", "v", 60, os.time()))
        local ids = h.other_ids(r)
        assert.equal(1, #ids)
        assert.equal(true, b:set(name, "k", "v", 60, os.time()))
        assert.equal("v", a:get(name, "k"))
        assert.same(ids, h.other_ids(r))
    end)

    it("serves each instance's database from a shared custom pool", function()
        local pool = h.unique("shared")
        local a = hiredis.new({ port = h.port, pool = pool })
        local b = hiredis.new({ port = h.port, pool = pool, database = 1 })
        assert.equal(true, a:set(name, "k", "db0", 60, os.time()))
        assert.equal(true, b:set(name, "k", "db1", 60, os.time()))
        assert.equal("db0", a:get(name, "k"))
        assert.equal("db1", b:get(name, "k"))
        local r1 = h.raw(h.port, { database = 1 })
        assert.equal("db1", r1:call("GET", name .. ":k"))
        r1:close()
        assert.equal("db0", r:call("GET", name .. ":k"))
    end)

    it("separates instances with different custom pool names", function()
        local a = hiredis.new({ port = h.port, pool = h.unique("p1") })
        local b = hiredis.new({ port = h.port, pool = h.unique("p2") })
        assert.equal(true, a:set(name, "k", "v", 60, os.time()))
        assert.equal(true, b:set(name, "k", "v", 60, os.time()))
        assert.equal(2, #h.other_ids(r))
    end)

    it("closes idle connections after keepalive_timeout", function()
        local store = hiredis.new({ port = h.port, keepalive_timeout = 100, pool = h.unique("ka") })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local first = h.other_ids(r)
        assert.equal(1, #first)
        h.sleep(300)
        assert.equal("v", store:get(name, "k"))
        local ok = h.wait_until(function()
            local now = h.other_ids(r)
            return #now == 1 and now[1] ~= first[1]
        end, 2000)
        assert.is_true(ok, "expected one new connection, got " .. table.concat(h.other_ids(r), ","))
    end)

    it("keeps idle connections within keepalive_timeout", function()
        local store = hiredis.new({ port = h.port, keepalive_timeout = 5000, pool = h.unique("ka") })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local first = h.other_ids(r)
        h.sleep(300)
        assert.equal("v", store:get(name, "k"))
        assert.same(first, h.other_ids(r))
    end)

    it("replaces a pooled connection the server killed, without failing the call", function()
        local store = hiredis.new({ port = h.port, pool = h.unique("kill") })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local first = h.other_ids(r)
        assert.equal(1, #first)
        assert.is_true(r:call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1)
        h.wait_until(function() return #h.other_ids(r) == 0 end, 2000)
        local value, err = store:get(name, "k")
        assert.is_nil(err)
        assert.equal("v", value)
        local now = h.other_ids(r)
        assert.equal(1, #now)
        assert.are_not.equal(first[1], now[1])
        -- and every method survives it
        for _, call in ipairs({
            function() return store:set(name, "k", "v", 60, os.time()) end,
            function() return store:delete(name, "x", os.time()) end,
            function() return store:read_metadata(name, "a", "s", os.time()) end,
            function() return store:set(name, "k", "v", 60, os.time(), "old", 5,
                { audiences = { "a" }, subjects = { "s" } }) end,
        }) do
            assert.is_true(r:call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1)
            h.wait_until(function() return #h.other_ids(r) == 0 end, 2000)
            local res, cerr = call()
            assert.is_nil(cerr)
            assert.truthy(res)
        end
    end)

    it("replaces a killed connection on a unix socket and after CLIENT KILL ID", function()
        local store = hiredis.new({ socket = h.socket, pool = h.unique("kill") })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local first = h.other_ids(r)
        assert.equal(1, #first)
        assert.equal(1, r:call("CLIENT", "KILL", "ID", first[1]))
        h.wait_until(function() return #h.other_ids(r) == 0 end, 2000)
        assert.equal("v", store:get(name, "k"))
    end)

    it("replaces a connection closed by the server's idle timeout", function()
        local store = hiredis.new({ port = h.port, pool = h.unique("idle") })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        assert.equal("OK", r:call("CONFIG", "SET", "timeout", "1"))
        local closed = h.wait_until(function() return #h.other_ids(r) == 0 end, 4000)
        assert.equal("OK", r:call("CONFIG", "SET", "timeout", "0"))
        assert.is_true(closed)
        assert.equal("v", store:get(name, "k"))
    end)

    it("works with pool_size = 1", function()
        local store = hiredis.new({ port = h.port, pool_size = 1, pool = h.unique("one") })
        for i = 1, 5 do
            assert.equal(true, store:set(name, "k" .. i, "v", 60, os.time()))
        end
        assert.equal(1, #h.other_ids(r))
    end)

    it("derives pool names without the password (core)", function()
        local core = require "resty.session.hiredis.core"
        local secret = "very-secret-" .. h.unique("pw")
        local inst = core.new({ port = h.port, password = secret })
        local pool = inst:pool_name()
        assert.is_string(pool)
        assert.is_nil(pool:find(secret, 1, true))
        local other = core.new({ port = h.port, password = secret .. "x" })
        assert.are_not.equal(pool, other:pool_name())
        assert.are_not.equal(core.new({ port = h.port, database = 1 }):pool_name(),
            core.new({ port = h.port }):pool_name())
        assert.are_not.equal(core.new({ port = h.port, username = "a", password = "p" }):pool_name(),
            core.new({ port = h.port, username = "b", password = "p" }):pool_name())
        -- a custom name is namespaced by the session identity (TLS, credentials, database)
        local mine = core.new({ port = h.port, pool = "mine" }):pool_name()
        assert.matches("^mine:id=%x+$", mine)
        assert.equal(mine, core.new({ port = h.port + 1, pool = "mine", prefix = "p" }):pool_name())
        assert.are_not.equal(mine, core.new({ port = h.port, pool = "mine", ssl = true }):pool_name())
        assert.are_not.equal(mine, core.new({ port = h.port, pool = "mine", password = "p" }):pool_name())
        assert.are_not.equal(mine, core.new({ port = h.port, pool = "mine", database = 2 }):pool_name())
    end)
end)

-- A custom pool name shared by configurations of different identities: each call
-- still runs on a connection of its own kind (checked on the server side).
describe("shared custom pool names never cross identities", function()
    local certs = h.env("HIREDIS_TEST_CERTS")
    local tls_port = tonumber(h.env("HIREDIS_TEST_TLS_PORT"))

    -- redis-cli over TLS (the raw Lua client speaks plain TCP only)
    local function tls_cli(...)
        local args = { "redis-cli", "--tls", "--cacert", certs .. "/ca.crt", "-h", "127.0.0.1",
                       "-p", tostring(tls_port), ... }
        for i, a in ipairs(args) do args[i] = "'" .. tostring(a):gsub("'", "'\\''") .. "'" end
        local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
        local out = p:read("*a"):gsub("%s+$", "")
        p:close()
        return out
    end

    it("plain and TLS: a TLS call never runs on a pooled plaintext connection", function()
        if not tls_port then
            pending("no tls server (HIREDIS_TEST_TLS_PORT): run through spec/support/with-servers.sh")
            return
        end
        local pool = h.unique("shared-tls")
        local name = h.unique("cross-tls")
        local plain = hiredis.new({ port = h.port, pool = pool })
        assert.equal(true, plain:set(name, "k", "on the plain server", 60, os.time()))  -- now pooled
        local tls = hiredis.new({ port = tls_port, ssl = true, pool = pool })
        -- before: served by the pooled plaintext connection to the plain server
        assert.same({ nil }, { tls:get(name, "k") })
        assert.equal(true, tls:set(name, "k", "on the TLS server", 60, os.time()))
        assert.equal("on the TLS server", tls_cli("GET", name .. ":k"))
        local r = h.raw()
        assert.equal("on the plain server", r:call("GET", name .. ":k"))
        r:close()
        assert.equal("on the plain server", plain:get(name, "k"))
    end)

    it("two ACL users: each call runs authenticated as its own user", function()
        if not h.acl_port then
            pending("no acl server (HIREDIS_TEST_ACL_PORT): run through spec/support/with-servers.sh")
            return
        end
        local r = h.raw_acl()
        h.kill_others(r)
        local pool = h.unique("shared-acl")
        local name = h.unique("cross-acl")
        local app = hiredis.new({ port = h.acl_port, username = h.acl_user, password = h.acl_password, pool = pool })
        local default = hiredis.new({ port = h.acl_port, password = h.acl_default_password, pool = pool })
        local me = tostring(r:call("CLIENT", "ID"))
        local function users()
            local out = {}
            for _, c in ipairs(assert(r:client_list("TYPE", "normal"))) do
                if c.id ~= me then out[#out + 1] = c.user .. "=" .. c.id end
            end
            table.sort(out)
            return out
        end
        assert.equal(true, app:set(name, "k", "v", 60, os.time()))
        assert.equal("v", default:get(name, "k"))
        local seen = users()
        assert.equal(2, #seen)
        assert.matches("^" .. h.acl_user .. "=", seen[1])
        assert.matches("^default=", seen[2])
        for _ = 1, 3 do  -- alternating calls keep to their own connections
            assert.equal("v", app:get(name, "k"))
            assert.equal("v", default:get(name, "k"))
        end
        assert.same(seen, users())
        r:close()
    end)

    it("two databases: one connection each, and the data lands in its database", function()
        local r = h.raw()
        h.kill_others(r)
        local pool = h.unique("shared-db")
        local name = h.unique("cross-db")
        local db0 = hiredis.new({ port = h.port, pool = pool })
        local db3 = hiredis.new({ port = h.port, pool = pool, database = 3 })
        for _ = 1, 3 do
            assert.equal(true, db0:set(name, "k", "zero", 60, os.time()))
            assert.equal(true, db3:set(name, "k", "three", 60, os.time()))
        end
        local r3 = h.raw(h.port, { database = 3 })
        local me3 = tostring(r3:call("CLIENT", "ID"))
        assert.equal("zero", r:call("GET", name .. ":k"))
        assert.equal("three", r3:call("GET", name .. ":k"))
        assert.equal(1, #h.other_ids(r, { db = "0" }))
        local on3 = {}
        for _, id in ipairs(h.other_ids(r, { db = "3" })) do
            if id ~= me3 then on3[#on3 + 1] = id end
        end
        assert.equal(1, #on3)
        r3:close()
        r:close()
    end)
end)
