-- Runtime failures (nil, err): connection refused, timeouts, protocol errors,
-- and bad method arguments (nil, "invalid <arg>: <why>", nothing sent).
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

describe("errors", function()
    local name

    before_each(function()
        name = h.unique("err")
    end)

    after_each(function()
        collectgarbage()
    end)

    describe("connection failures", function()
        it("returns nil, \"connection refused\" for a port nothing listens on", function()
            local store = hiredis.new({ port = h.unused_port(), connect_timeout = 1000 })
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.equal("connection refused", err)
            local value, gerr = store:get(name, "k")
            assert.is_nil(value)
            assert.equal("connection refused", gerr)
            local res, rerr = store:read_metadata(name, "a", "s", os.time())
            assert.is_nil(res)
            assert.equal("connection refused", rerr)
            local dok, derr = store:delete(name, "k", os.time())
            assert.is_nil(dok)
            assert.equal("connection refused", derr)
        end)

        it("returns an error for a unix socket that does not exist", function()
            local store = hiredis.new({ socket = (h.tmp or "/tmp") .. "/no-such.sock" })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.is_true(#err > 0)
        end)

        it("returns an error for a host name that does not resolve", function()
            local store = hiredis.new({ host = "no-such-host.invalid", port = h.port, connect_timeout = 2000 })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.is_true(#err > 0)
        end)

        it("times out against a server that never answers (connect_timeout covers the handshake)", function()
            local listener, port = h.silent_listener()
            local store = hiredis.new({ port = port, connect_timeout = 200, read_timeout = 200, send_timeout = 200 })
            local t0 = h.now()
            local value, err = store:get(name, "k")
            local elapsed = h.now() - t0
            listener:close()
            assert.is_nil(value)
            assert.equal("timeout", err)
            assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
        end)

        it("applies read_timeout to a command the server does not answer", function()
            local port, stop = h.fake_server("silent")
            local store = hiredis.new({ port = port, connect_timeout = 5000, read_timeout = 200 })
            local t0 = h.now()
            local value, err = store:get(name, "k")
            local elapsed = h.now() - t0
            stop()
            assert.is_nil(value)
            assert.equal("timeout", err)
            assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
        end)

        it("closes a pooled connection after a read timeout and opens a new one", function()
            local r = h.raw()
            h.kill_others(r)
            local store = hiredis.new({ port = h.port, read_timeout = 200, pool = h.unique("rt") })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            local first = h.other_ids(r)
            assert.equal(1, #first)
            -- another process blocks the server for a second
            os.execute(string.format("redis-cli -h %s -p %d DEBUG SLEEP 1 >/dev/null 2>&1 &", h.host, h.port))
            -- blocked: a PING on a new connection gets no answer within 50 ms
            assert.is_true(h.wait_until(function()
                local probe = h.raw(nil, { timeout = 0.05 })
                local pong = probe:call("PING")
                probe:close()
                return pong == nil
            end, 2000))
            local t0 = h.now()
            local value, err = store:get(name, "k")
            local elapsed = h.now() - t0
            assert.is_nil(value)
            assert.equal("timeout", err)
            assert.is_true(elapsed < 0.9, "took " .. elapsed .. " s")
            -- once DEBUG SLEEP is over (a PING answers), the late GET reply must not
            -- reach the next call
            local pinger = h.raw()
            assert.equal("PONG", pinger:call("PING"))
            pinger:close()
            assert.equal(true, store:set(name, "k2", "other", 60, os.time()))
            assert.equal("other", store:get(name, "k2"))
            assert.equal("v", store:get(name, "k"))
            -- the probes' and redis-cli's connections close as the server gets to them:
            -- wait until only the store's is left (a second one of the store's stays)
            local now
            h.wait_until(function()
                now = h.other_ids(r)
                return #now == 1
            end, 3000)
            assert.equal(1, #now)
            assert.are_not.equal(first[1], now[1])
            r:close()
        end)

        it("returns a protocol error for an invalid reply and does not reuse the connection", function()
            local port, stop = h.fake_server("garbage")
            local store = hiredis.new({ port = port, connect_timeout = 2000, read_timeout = 2000 })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.matches("^protocol error", err)
            local value2, err2 = store:get(name, "k")
            stop()
            assert.is_nil(value2)
            assert.matches("^protocol error", err2)
        end)

        it("never pools a connection that received more than the expected replies", function()
            local port, stop = h.fake_server("extra")
            local store = hiredis.new({ port = port, connect_timeout = 2000, read_timeout = 500 })
            local value, err = store:get(name, "k")
            -- either the stray reply is detected now, or the connection is dropped;
            -- it must never be the answer to the next call
            if value ~= nil then
                assert.equal("value", value)
            else
                assert.matches("^protocol error", err)
            end
            local value2, err2 = store:get(name, "k")
            stop()
            assert.is_true(value2 == "value" or (value2 == nil and err2 ~= nil),
                "second call got " .. tostring(value2) .. ", " .. tostring(err2))
            assert.are_not.equal("STRAY", value2)
        end)

        it("returns an error for a reply cut short by a closed connection", function()
            local port, stop = h.fake_server("partial")
            local store = hiredis.new({ port = port, connect_timeout = 2000, read_timeout = 2000 })
            local value, err = store:get(name, "k")
            stop()
            assert.is_nil(value)
            assert.equal("closed", err)
        end)
    end)

    describe("invalid method arguments", function()
        local r, store

        before_each(function()
            r = h.raw()
            store = hiredis.new({ port = h.port })
            -- a pooled connection exists, so a bad call has nothing to open either
            assert.equal(true, store:set(name, "warm", "v", 60, os.time()))
        end)

        after_each(function()
            r:close()
        end)

        -- Runs fn, asserts nil, "invalid <arg>: ..." and that the server saw
        -- no command and no connection meanwhile.
        local function assert_invalid(arg, fn)
            local commands, connections = h.server_counters(r)
            local res, err = fn()
            local commands2, connections2 = h.server_counters(r)
            assert.is_nil(res)
            assert.is_string(err)
            assert.equal("invalid " .. arg .. ": ", err:sub(1, #arg + 10), "message: " .. tostring(err))
            assert.is_true(#err > #arg + 10, "no reason in: " .. err)
            assert.equal(commands + 1, commands2, "commands were sent")
            assert.equal(connections, connections2, "a connection was opened")
        end

        local md = { audiences = { "a" }, subjects = { "s" } }

        it("set: name, key, value must be strings", function()
            for _, bad in ipairs({ {}, true }) do
                assert_invalid("name", function() return store:set(bad, "k", "v", 60, os.time()) end)
                assert_invalid("key", function() return store:set(name, bad, "v", 60, os.time()) end)
                assert_invalid("value", function() return store:set(name, "k", bad, 60, os.time()) end)
            end
            assert_invalid("name", function() return store:set(nil, "k", "v", 60, os.time()) end)
            assert_invalid("key", function() return store:set(name, nil, "v", 60, os.time()) end)
            assert_invalid("value", function() return store:set(name, "k", nil, 60, os.time()) end)
        end)

        it("set: ttl must be a non-negative number", function()
            assert_invalid("ttl", function() return store:set(name, "k", "v", nil, os.time()) end)
            assert_invalid("ttl", function() return store:set(name, "k", "v", {}, os.time()) end)
            assert_invalid("ttl", function() return store:set(name, "k", "v", -1, os.time()) end)
            assert_invalid("ttl", function() return store:set(name, "k", "v", "soon", os.time()) end)
        end)

        it("set: metadata must be { audiences = {...}, subjects = {...} } of equal length", function()
            local now = os.time()
            local cases = {
                "not a table",
                { audiences = { "a", "b" }, subjects = { "s" } },
                { audiences = { "a" } },
                { subjects = { "s" } },
                { audiences = "a", subjects = "s" },
                { audiences = { "a", {} }, subjects = { "s", "t" } },
                { audiences = { "a" }, subjects = { true } },
            }
            for _, bad in ipairs(cases) do
                assert_invalid("metadata", function() return store:set(name, "k", "v", 60, now, nil, nil, bad) end)
            end
            assert.equal(0, r:call("EXISTS", name .. ":k"))
        end)

        it("delete: name and key must be strings, metadata well formed", function()
            assert_invalid("name", function() return store:delete({}, "k", os.time()) end)
            assert_invalid("key", function() return store:delete(name, nil, os.time()) end)
            assert_invalid("metadata", function()
                return store:delete(name, "k", os.time(), { audiences = { "a", "b" }, subjects = { "s" } })
            end)
            assert_invalid("metadata", function()
                return store:delete(name, "k", { audiences = { "a" }, subjects = {} })
            end)
        end)

        it("get: name and key must be strings", function()
            assert_invalid("name", function() return store:get(nil, "k") end)
            assert_invalid("key", function() return store:get(name, {}) end)
        end)

        it("read_metadata: name, audience and subject must be strings", function()
            assert_invalid("name", function() return store:read_metadata(nil, "a", "s", os.time()) end)
            assert_invalid("audience", function() return store:read_metadata(name, {}, "s", os.time()) end)
            assert_invalid("subject", function() return store:read_metadata(name, "a", true, os.time()) end)
        end)

        it("a valid call after invalid ones still works", function()
            assert_invalid("metadata", function() return store:set(name, "k", "v", 60, os.time(), nil, nil, "x") end)
            assert.equal(true, store:set(name, "k", "v", 60, os.time(), nil, nil, md))
            assert.equal("v", store:get(name, "k"))
        end)
    end)
end)
