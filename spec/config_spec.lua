-- new(config): defaults, validation (errors name the field), fields readable
-- and writable at run time with the same validation.
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

-- pcall(fn) must fail with a message containing "invalid <field>".
local function assert_rejects(field, fn, label)
    local ok, err = pcall(fn)
    assert.is_false(ok, (label or field) .. " was accepted")
    err = tostring(err)
    assert.is_truthy(err:find("invalid " .. field .. ":", 1, true),
        (label or field) .. ": error does not name the field: " .. err)
end

describe("configuration", function()
    after_each(function()
        collectgarbage()
    end)

    it("exposes new and _VERSION", function()
        assert.is_function(hiredis.new)
        assert.is_string(hiredis._VERSION)
        local core = require "resty.session.hiredis.core"
        assert.is_function(core.new)
        assert.equal("0.1.0", core._VERSION)
    end)

    it("gives defaults with no argument", function()
        local store = hiredis.new()
        assert.equal("127.0.0.1", store.host)
        assert.equal(6379, store.port)
        assert.equal(60000, store.connect_timeout)
        assert.equal(60000, store.send_timeout)
        assert.equal(60000, store.read_timeout)
        assert.equal(60000, store.keepalive_timeout)
        assert.equal(30, store.pool_size)
        assert.is_falsy(store.ssl)
        assert.is_falsy(store.ssl_verify)
        assert.is_nil(store.prefix)
        assert.is_nil(store.suffix)
        assert.is_nil(store.socket)
        assert.is_nil(store.username)
        assert.is_nil(store.password)
        assert.is_nil(store.database)
        assert.is_nil(store.pool)
        assert.is_nil(store.backlog)
        assert.is_nil(store.server_name)
        assert.is_falsy(store.force_auth)
    end)

    it("gives defaults with an empty table", function()
        local store = hiredis.new({})
        assert.equal("127.0.0.1", store.host)
        assert.equal(6379, store.port)
    end)

    it("has the storage methods", function()
        local store = hiredis.new()
        for _, method in ipairs({ "set", "get", "delete", "read_metadata" }) do
            assert.is_not_nil(store[method], method)
        end
    end)

    it("reads back every configured field", function()
        local config = {
            prefix = "p", suffix = "s", host = "localhost", port = 6380, socket = "/tmp/x.sock",
            username = "u", password = "pw", database = 3, connect_timeout = 100, send_timeout = 200,
            read_timeout = 300, keepalive_timeout = 400, pool = "mypool", pool_size = 7, backlog = 9,
            ssl = true, ssl_verify = true, server_name = "example.test", force_auth = true,
        }
        local store = hiredis.new(config)
        for k, v in pairs(config) do
            assert.equal(v, store[k], k)
        end
    end)

    it("applies the configuration that lua-resty-session passes by name", function()
        -- session.init({ storage = "resty.session.hiredis", ["resty.session.hiredis"] = {...} })
        -- ends in require(name).new(conf[name])
        local store = require("resty.session.hiredis").new({ port = h.port, prefix = "via-name" })
        local name = h.unique("cfg")
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local r = h.raw()
        assert.equal("v", r:call("GET", "via-name:" .. name .. ":k"))
        r:close()
    end)

    describe("rejects at new()", function()
        local cases = {
            { "prefix", {} }, { "prefix", true },
            { "suffix", {} }, { "suffix", false },
            { "host", {} }, { "host", 123 }, { "host", "" },
            { "port", 0 }, { "port", 65536 }, { "port", 1.5 }, { "port", -1 }, { "port", "abc" }, { "port", {} },
            { "port", 0 / 0 }, { "port", math.huge },
            { "socket", {} }, { "socket", 5 },
            { "username", {} }, { "password", {} }, { "password", true },
            { "database", -1 }, { "database", 1.5 }, { "database", "one" }, { "database", {} },
            { "connect_timeout", -1 }, { "connect_timeout", "x" }, { "connect_timeout", 0 / 0 },
            { "send_timeout", -1 }, { "send_timeout", {} },
            { "read_timeout", -1 }, { "read_timeout", "slow" },
            { "keepalive_timeout", -1 }, { "keepalive_timeout", "x" },
            { "pool", {} }, { "pool", 1 },
            { "pool_size", 0 }, { "pool_size", -1 }, { "pool_size", 1.5 }, { "pool_size", "x" },
            { "backlog", -1 }, { "backlog", 1.5 }, { "backlog", "x" },
            { "ssl", "yes" }, { "ssl", 1 },
            { "ssl_verify", "yes" },
            { "server_name", {} }, { "server_name", 1 },
            { "force_auth", "yes" }, { "force_auth", 1 },
        }
        for _, case in ipairs(cases) do
            local field, value = case[1], case[2]
            local label = string.format("%s = %s (%s)", field, tostring(value), type(value))
            it(label, function()
                assert_rejects(field, function() return hiredis.new({ [field] = value }) end, label)
            end)
        end

        it("a non-table configuration", function()
            local ok = pcall(hiredis.new, "port=6379")
            assert.is_false(ok)
        end)

        it("never echoes a password in the error", function()
            local ok, err = pcall(hiredis.new, { password = "secret-in-config", port = 0 })
            assert.is_false(ok)
            assert.is_nil(tostring(err):find("secret-in-config", 1, true))
        end)
    end)

    describe("accepts", function()
        local cases = {
            { port = 1 }, { port = 65535 }, { port = 6379.0 },
            { database = 0 }, { database = 15 },
            { keepalive_timeout = 0 },
            { connect_timeout = 1, send_timeout = 1, read_timeout = 1 },
            { connect_timeout = 1.5 },
            { pool_size = 1 }, { backlog = 0 },
            { host = "::1" }, { host = "localhost" },
            { socket = "/tmp/redis.sock" }, { socket = "unix:/tmp/redis.sock" },
            { ssl = false, ssl_verify = false, force_auth = false },
            { prefix = "", suffix = "" },
        }
        for i, config in ipairs(cases) do
            local parts = {}
            for k, v in pairs(config) do parts[#parts + 1] = k .. "=" .. tostring(v) end
            it(table.concat(parts, " ") .. " (#" .. i .. ")", function()
                local ok, err = pcall(hiredis.new, config)
                assert.is_true(ok, tostring(err))
            end)
        end
    end)

    describe("run-time fields", function()
        it("are writable and read back", function()
            local store = hiredis.new()
            store.host = "localhost"
            store.port = 7000
            store.prefix = "np"
            store.read_timeout = 1234
            store.password = "new-token"
            store.database = 2
            store.pool_size = 5
            assert.equal("localhost", store.host)
            assert.equal(7000, store.port)
            assert.equal("np", store.prefix)
            assert.equal(1234, store.read_timeout)
            assert.equal("new-token", store.password)
            assert.equal(2, store.database)
            assert.equal(5, store.pool_size)
            store.prefix = nil
            assert.is_nil(store.prefix)
        end)

        it("are validated like new()", function()
            local store = hiredis.new()
            assert_rejects("port", function() store.port = 0 end)
            assert_rejects("port", function() store.port = 70000 end)
            assert_rejects("read_timeout", function() store.read_timeout = -5 end)
            assert_rejects("pool_size", function() store.pool_size = 0 end)
            assert_rejects("password", function() store.password = {} end)
            assert_rejects("database", function() store.database = "x" end)
            -- a rejected write leaves the old value
            assert.equal(6379, store.port)
            assert.equal(60000, store.read_timeout)
        end)

        it("take effect on the next call (host/port)", function()
            local store = hiredis.new({ port = h.unused_port(), connect_timeout = 1000 })
            local name = h.unique("cfg")
            local _, err = store:get(name, "k")
            assert.equal("connection refused", err)
            store.port = h.port
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("take effect on the next call (prefix/suffix)", function()
            local store = hiredis.new({ port = h.port })
            local name = h.unique("cfg")
            store.prefix = "rt"
            store.suffix = "x"
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            local r = h.raw()
            assert.equal("v", r:call("GET", "rt:" .. name .. ":k:x"))
            r:close()
        end)

        it("take effect on the next call (socket wins once set)", function()
            local store = hiredis.new({ port = h.unused_port() })
            store.socket = h.socket
            local name = h.unique("cfg")
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            store.socket = nil
            local _, err = store:get(name, "k")
            assert.equal("connection refused", err)
        end)
    end)
end)
