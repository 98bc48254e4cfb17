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
            -- strings are converted as tonumber() does, then checked like numbers
            { "port", "0" }, { "port", "65536" }, { "port", "6379x" }, { "port", "" }, { "port", "1.5" },
            { "database", "-1" }, { "database", "db3" },
            { "connect_timeout", "-1" }, { "read_timeout", "1e13" },
            { "pool_size", "0" }, { "backlog", "many" },
            -- cosockets take at most 2^31-1 ms
            { "connect_timeout", 2147483648 }, { "send_timeout", 1e13 }, { "read_timeout", 1e16 },
            { "keepalive_timeout", 2 ^ 31 }, { "read_timeout", math.huge },
            { "max_reply_size", 1023 }, { "max_reply_size", 2 ^ 31 }, { "max_reply_size", 4096.5 },
            { "max_reply_size", "big" },
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
            { connect_timeout = 0, send_timeout = 0, read_timeout = 0 },
            { connect_timeout = 2147483647, send_timeout = 2147483647, read_timeout = 2147483647,
              keepalive_timeout = 2147483647 },
            { connect_timeout = 1, send_timeout = 1, read_timeout = 1 },
            { max_reply_size = 1024 }, { max_reply_size = 2147483647 },
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

    describe("as upstream accepts it", function()
        it("numeric strings, converted as tonumber() does (configurations from the environment)", function()
            local store = hiredis.new({
                port = tostring(h.port), database = "3", connect_timeout = "1000", send_timeout = "1500",
                read_timeout = " 2000 ", keepalive_timeout = "0", pool_size = "7", backlog = "4",
                max_reply_size = "65536",
            })
            assert.equal(h.port, store.port)
            assert.equal(3, store.database)
            assert.equal(1000, store.connect_timeout)
            assert.equal(1500, store.send_timeout)
            assert.equal(2000, store.read_timeout)
            assert.equal(0, store.keepalive_timeout)
            assert.equal(7, store.pool_size)
            assert.equal(4, store.backlog)
            assert.equal(65536, store.max_reply_size)
            -- and it works: the data lands in database 3
            local name = h.unique("strings")
            assert.equal(true, store:set(name, "k", "v3", 60, os.time()))
            local r3 = h.raw(h.port, { database = 3 })
            assert.equal("v3", r3:call("GET", name .. ":k"))
            r3:close()
            local r0 = h.raw()
            assert.is_nil(r0:call("GET", name .. ":k"))
            r0:close()
        end)

        it("numeric strings on field writes", function()
            local store = hiredis.new()
            store.port = "6380"
            store.read_timeout = "250"
            store.database = "2"
            assert.equal(6380, store.port)
            assert.equal(250, store.read_timeout)
            assert.equal(2, store.database)
        end)

        it("0 timeouts: the transport's default (native: 60000 ms), read back as 0", function()
            local store = hiredis.new({ port = h.port, connect_timeout = 0, send_timeout = 0, read_timeout = 0 })
            assert.equal(0, store.connect_timeout)
            assert.equal(0, store.read_timeout)
            local name = h.unique("zero")
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("0 read_timeout waits for a slow reply instead of timing out at once", function()
            local nginx = require "nginx"
            local proxy_port, stop = nginx.delay_proxy(h.host, h.port, 100)
            local ok, err = pcall(function()
                local name = h.unique("zero-slow")
                local r = h.raw()
                r:call("SET", name .. ":k", "slow")
                r:close()
                local store = hiredis.new({ port = proxy_port, connect_timeout = 0, read_timeout = 0 })
                assert.same({ "slow" }, { store:get(name, "k") })
            end)
            stop()
            assert(ok, err)
        end)

        it("the largest timeouts do not overflow the deadline arithmetic", function()
            -- before: 1e13 made every call time out at once, ~1e16 overflowed (UBSan);
            -- now the maximum, 2^31-1 ms, is a real (long) deadline
            local nginx = require "nginx"
            local proxy_port, stop = nginx.delay_proxy(h.host, h.port, 50)
            local ok, err = pcall(function()
                local name = h.unique("max-timeout")
                local r = h.raw()
                r:call("SET", name .. ":k", "patient")
                r:close()
                local store = hiredis.new({ port = proxy_port, connect_timeout = 2147483647,
                                            send_timeout = 2147483647, read_timeout = 2147483647 })
                assert.same({ "patient" }, { store:get(name, "k") })
            end)
            stop()
            assert(ok, err)
        end)

        it("names the maximum timeout in the error, at new() and on field writes", function()
            local ok, err = pcall(hiredis.new, { read_timeout = 1e13 })
            assert.is_false(ok)
            assert.matches("invalid read_timeout: must be a number of milliseconds from 0 to 2147483647",
                           tostring(err), 1, true)
            local store = hiredis.new()
            ok, err = pcall(function() store.connect_timeout = 2 ^ 31 end)
            assert.is_false(ok)
            assert.matches("invalid connect_timeout: must be a number of milliseconds from 0 to 2147483647",
                           tostring(err), 1, true)
            assert.equal(60000, store.connect_timeout)
        end)

        it("storage.options mirrors upstream's { pool, pool_size, backlog, ssl, ssl_verify, server_name }", function()
            local store = hiredis.new({ pool = "mine", pool_size = 12, backlog = 3 })
            assert.same({ pool = "mine", pool_size = 12, backlog = 3, ssl = false }, store.options)
            store.pool_size = 20
            store.ssl = true
            store.server_name = "redis.example"
            assert.same({ pool = "mine", pool_size = 20, backlog = 3, ssl = true, server_name = "redis.example" },
                        store.options)
            -- defaults: the values in effect
            assert.same({ pool_size = 30, ssl = false }, hiredis.new().options)
        end)

        it("storage.options is a view: writing into it never changes the configuration", function()
            local store = hiredis.new({ pool_size = 12 })
            local options = store.options
            options.pool_size = 99
            assert.equal(12, store.pool_size)
            assert.equal(12, store.options.pool_size)
            assert_rejects("field", function() store.options = { pool_size = 1 } end)
        end)

        it("the core refuses nodes and sentinels: never a silent single node", function()
            -- resty.session.hiredis.new routes them to its cluster and sentinel clients
            local core = require "resty.session.hiredis.core"
            for _, case in ipairs({
                { { nodes = { { ip = "127.0.0.1", port = h.port } } }, "invalid nodes: Redis Cluster %(nodes%)" },
                { { nodes = {} }, "invalid nodes: Redis Cluster %(nodes%)" },
                { { sentinels = { { host = "127.0.0.1" } } }, "invalid sentinels: Redis Sentinel %(sentinels%)" },
            }) do
                local ok, err = pcall(core.new, case[1])
                assert.is_false(ok)
                assert.matches(case[2] .. " is served by resty.session.hiredis, not by the core", tostring(err))
            end
        end)
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
