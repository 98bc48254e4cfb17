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
        assert.equal("OK", ra:call("ACL", "SETUSER", user, "on", ">pw-one", ">pw-two", "~*", "&*", "+@all"))
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
        assert.equal("mine", core.new({ port = h.port, pool = "mine" }):pool_name())
    end)
end)
