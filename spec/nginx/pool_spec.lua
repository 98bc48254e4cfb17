-- Inside a real nginx (one worker): cosocket connection pools. Reuse (the same
-- CLIENT ID across requests), isolation (a pool per database / user), AUTH only on
-- fresh connections, replaced connections, and connections never pooled after a
-- timeout. Errors read the same through both transports.
local h = require "helpers"
local nginx = require "nginx"

local GET = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    return { s:get(ARGS.name, "k") }
]]

describe("nginx cosocket pools", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function content(code, args)
        local res = srv:run("content", code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    it("reuses one connection across requests", function()
        local r = h.raw()
        h.kill_others(r)
        local name = h.unique("reuse")
        r:call("SET", name .. ":k", "v")
        local ids
        for i = 1, 5 do
            assert.same({ "v" }, content(GET, { cfg = { port = h.port }, name = name }))
            local now = h.other_ids(r)
            assert.equal(1, #now, "connections after request " .. i)
            if ids then
                assert.same(ids, now)
            end
            ids = now
        end
        r:close()
    end)

    it("reuses connections to a unix socket", function()
        local r = h.raw()
        h.kill_others(r)
        local name = h.unique("unix")
        r:call("SET", name .. ":k", "v")
        local ids
        for _ = 1, 3 do
            assert.same({ "v" }, content(GET, { cfg = { socket = h.socket }, name = name }))
            local now = h.other_ids(r)
            assert.equal(1, #now)
            if ids then assert.same(ids, now) end
            ids = now
        end
        -- the unix: prefixed form names the same endpoint
        assert.same({ "v" }, content(GET, { cfg = { socket = "unix:" .. h.socket }, name = name }))
        r:close()
    end)

    it("keeps databases apart: one pooled connection per database", function()
        local r = h.raw()
        h.kill_others(r)
        local name = h.unique("db")
        local r3 = h.raw(h.port, { database = 3 })
        r:call("SET", name .. ":k", "db0")
        r3:call("SET", name .. ":k", "db3")
        for _ = 1, 3 do
            assert.same({ "db0" }, content(GET, { cfg = { port = h.port }, name = name }))
            assert.same({ "db3" }, content(GET, { cfg = { port = h.port, database = 3 }, name = name }))
        end
        local me3 = tostring(r3:call("CLIENT", "ID"))
        local db0 = h.other_ids(r, { db = "0" })
        local db3 = {}
        for _, id in ipairs(h.other_ids(r, { db = "3" })) do
            if id ~= me3 then db3[#db3 + 1] = id end
        end
        assert.equal(1, #db0)
        assert.equal(1, #db3)
        assert.are_not.equal(db0[1], db3[1])
        r3:close()
        r:close()
    end)

    it("keeps users apart: one pooled connection per ACL user", function()
        local r = h.raw_acl()
        h.kill_others(r)
        local name = h.unique("acl")
        r:call("SET", name .. ":k", "v")
        local app = { port = h.acl_port, username = h.acl_user, password = h.acl_password }
        local default = { port = h.acl_port, password = h.acl_default_password }
        for _ = 1, 3 do
            assert.same({ "v" }, content(GET, { cfg = app, name = name }))
            assert.same({ "v" }, content(GET, { cfg = default, name = name }))
        end
        local me = tostring(r:call("CLIENT", "ID"))
        local users = {}
        for _, c in ipairs(assert(r:client_list("TYPE", "normal"))) do
            if c.id ~= me then
                users[#users + 1] = c.user
            end
        end
        table.sort(users)
        assert.same({ h.acl_user, "default" }, users)
        r:close()
    end)

    it("sends AUTH on fresh connections only, and on every call with force_auth", function()
        local r = h.raw_pass()
        h.kill_others(r)
        local name = h.unique("auth")
        r:call("SET", name .. ":k", "v")
        local cfg = { port = h.pass_port, password = h.password }
        local before = h.command_calls(r, "auth")
        for _ = 1, 5 do
            assert.same({ "v" }, content(GET, { cfg = cfg, name = name }))
        end
        assert.equal(before + 1, h.command_calls(r, "auth"))
        assert.equal(1, #h.other_ids(r))

        cfg.force_auth = true
        before = h.command_calls(r, "auth")
        for _ = 1, 5 do
            assert.same({ "v" }, content(GET, { cfg = cfg, name = name }))
        end
        assert.equal(before + 5, h.command_calls(r, "auth"))
        r:close()
    end)

    it("a wrong password fails with Redis's error and leaves nothing pooled", function()
        local r = h.raw_pass()
        h.kill_others(r)
        local cfg = { port = h.pass_port, password = "wrong" }
        for _ = 1, 2 do
            local out = content(GET, { cfg = cfg, name = "n" })
            assert.is_nil(out[1])
            assert.matches("^WRONGPASS", out[2])
        end
        assert.equal(0, #h.other_ids(r))
        -- the same error text through the native transport
        local res = srv:run("log", GET, { cfg = cfg, name = "n" })
        assert.is_true(res.ok, tostring(res[1]))
        assert.equal(content(GET, { cfg = cfg, name = "n" })[2], res[1][2])
        r:close()
    end)

    it("missing AUTH reads NOAUTH through both transports", function()
        local cfg = { port = h.pass_port }
        local out = content(GET, { cfg = cfg, name = "n" })
        assert.is_nil(out[1])
        assert.matches("^NOAUTH", out[2])
        local res = srv:run("log", GET, { cfg = cfg, name = "n" })
        assert.same(out, res[1])
    end)

    it("replaces a pooled connection the server closed", function()
        local r = h.raw()
        h.kill_others(r)
        local name = h.unique("killed")
        r:call("SET", name .. ":k", "v")
        local args = { cfg = { port = h.port }, name = name }
        assert.same({ "v" }, content(GET, args))
        local first = h.other_ids(r)
        assert.equal(1, #first)
        h.kill_others(r)
        assert.same({ "v" }, content(GET, args))
        local second = h.other_ids(r)
        assert.equal(1, #second)
        assert.are_not.same(first, second)
        r:close()
    end)

    it("connection refused reads the same through both transports", function()
        local args = { cfg = { port = h.unused_port() }, name = "n" }
        local out = content(GET, args)
        assert.same({ nil, "connection refused" }, { out[1], out[2] })
        local res = srv:run("log", GET, args)
        assert.same(out, res[1])
    end)
end)

describe("nginx cosocket timeouts", function()
    local srv, proxy_port, stop_proxy

    lazy_setup(function()
        proxy_port, stop_proxy = nginx.delay_proxy(h.host, h.port, 300)
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then
            srv:stop()
        end
        if stop_proxy then stop_proxy() end
    end)

    it("closes a connection that timed out; the next call gets its own reply", function()
        local r = h.raw()
        local name = h.unique("timeout")
        r:call("SET", name .. ":a", "A")
        r:call("SET", name .. ":b", "B")
        local res = srv:run("content", [[
            local s = H.storage({ port = ARGS.port, read_timeout = 100 }, ARGS.storage)
            local out = { { s:get(ARGS.name, "a") } }
            -- a longer timeout on the same instance: a fresh connection, never the
            -- one still waiting for "A"
            s.read_timeout = 5000
            out[2] = { s:get(ARGS.name, "b") }
            out[3] = { s:get(ARGS.name, "a") }
            return out
        ]], { port = proxy_port, name = name, storage = "timeouts" })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ { nil, "timeout" }, { "B" }, { "A" } }, res[1])
        r:close()
    end)

    it("a timeout reads the same through the native transport", function()
        local args = { cfg = { port = proxy_port, read_timeout = 100 }, name = "n" }
        local out = srv:run("content", GET, args)
        local native = srv:run("log", GET, args)
        assert.same({ nil, "timeout" }, out[1])
        assert.same(out[1], native[1])
    end)
end)

describe("nginx cosocket stale and broken connections", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    it("retries on a fresh connection when a reused one was closed before replying", function()
        -- each connection through the proxy is closed when it is used a third time.
        -- The pool's first connection spends chunk 1 on its own handshake (HELLO)
        -- and chunk 2 on the first GET; later connections of the proven pool send
        -- HELLO and GET in one chunk, so they serve one reused GET before closing.
        local proxy_port, stop_proxy = nginx.delay_proxy(h.host, h.port, 0, 2)
        local name = h.unique("stale")
        local r = h.raw()
        r:call("SET", name .. ":k", "v")
        local ok, err = pcall(function()
            for i = 1, 4 do
                local res = srv:run("content", GET, { cfg = { port = proxy_port }, name = name })
                assert.is_true(res.ok, tostring(res[1]))
                assert.same({ "v" }, res[1], "request " .. i)
                -- requests 2 and 4 find their pooled connection closed and retry
                -- on a fresh one; request 3 reuses the connection request 2 opened
                assert.equal(({ 1, 2, 1, 2 })[i], res.tcp, "request " .. i)
            end
        end)
        stop_proxy()
        r:close()
        assert(ok, err)
    end)

    for _, case in ipairs({
        { mode = "garbage", read_timeout = 2000 },
        { mode = "extra", read_timeout = 2000 },
        { mode = "partial", read_timeout = 2000 },
        { mode = "silent", read_timeout = 200 },
    }) do
        it("a misbehaving server (" .. case.mode .. ") gives the same error through both transports", function()
            local port, stop = h.fake_server(case.mode)
            local args = { cfg = { port = port, read_timeout = case.read_timeout }, name = "n" }
            local ok, err = pcall(function()
                local cosocket = srv:run("content", GET, args)
                local native = srv:run("log", GET, args)
                assert.is_true(cosocket.ok, tostring(cosocket[1]))
                assert.is_true(native.ok, tostring(native[1]))
                assert.is_nil(cosocket[1][1])
                assert.is_string(cosocket[1][2])
                assert.same(native[1], cosocket[1])
                if case.mode == "silent" then
                    assert.equal("timeout", cosocket[1][2])
                elseif case.mode == "partial" then
                    assert.equal("closed", cosocket[1][2])
                else
                    assert.matches("^protocol error", cosocket[1][2])
                end
                -- the connection was closed, not pooled: the next call starts over
                -- (the fake server serves one connection at a time)
                assert.same(cosocket[1], srv:run("content", GET, args)[1])
            end)
            stop()
            assert(ok, err)
        end)
    end
end)
