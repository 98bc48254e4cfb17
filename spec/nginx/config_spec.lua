-- Inside a real nginx: configurations upstream accepts (numeric strings, 0 timeouts
-- meaning nginx's lua_socket_*_timeout), timeouts capped where cosockets cap them,
-- options, shared custom pools that never cross
-- identities, and reply limits at the header; through cosockets and, in the log
-- phase, the native transport.
local h = require "helpers"
local nginx = require "nginx"

local certs = h.env("HIREDIS_TEST_CERTS")
local tls_port = tonumber(h.env("HIREDIS_TEST_TLS_PORT"))

local GET = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    return { s:get(ARGS.name, "k") }
]]
local SET = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    return { s:set(ARGS.name, "k", ARGS.value, 60, ngx.time()) }
]]

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

describe("nginx configuration", function()
    local srv

    lazy_setup(function()
        -- a short nginx default: a 0 read_timeout must mean this one in cosocket phases
        srv = nginx.start_kit({ workers = 1, http = "  lua_socket_read_timeout 150ms;\n" })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function run(phase, code, args)
        local res = srv:run(phase, code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    it("numeric strings work through cosockets and the native transport", function()
        local name = h.unique("ngx-strings")
        local cfg = { port = tostring(h.port), database = "3", connect_timeout = "1000",
                      read_timeout = "2000", send_timeout = "2000", pool_size = "5", backlog = "3" }
        local out, res = run("content", SET, { cfg = cfg, name = name, value = "cosocket" })
        assert.same({ true }, out)
        assert.is_true(res.cosocket > 0)
        local r3 = h.raw(h.port, { database = 3 })
        assert.equal("cosocket", r3:call("GET", name .. ":k"))
        local native
        native, res = run("log", GET, { cfg = cfg, name = name })
        assert.same({ "cosocket" }, native)
        assert.equal(0, res.cosocket)
        r3:close()
    end)

    it("0 timeouts: nginx's lua_socket_*_timeout in cosocket phases, 60 s in the native transport", function()
        local proxy_port, stop = nginx.delay_proxy(h.host, h.port, 400)
        local ok, err = pcall(function()
            local name = h.unique("ngx-zero")
            local r = h.raw()
            r:call("SET", name .. ":k", "slow")
            r:close()
            local zero = { port = proxy_port, connect_timeout = 0, send_timeout = 0, read_timeout = 0 }
            -- lua_socket_read_timeout 150ms < the proxy's 400 ms
            assert.same({ nil, "timeout" }, run("content", GET, { cfg = zero, name = name }))
            assert.same({ "slow" }, run("log", GET, { cfg = zero, name = name }))
            local patient = { port = proxy_port, read_timeout = 5000 }
            assert.same({ "slow" }, run("content", GET, { cfg = patient, name = name }))
        end)
        stop()
        assert(ok, err)
    end)

    it("0 timeouts through the auto-pipeline: concurrent calls wait for nginx's timeouts", function()
        local name = h.unique("ngx-zero-pipe")
        local r = h.raw()
        for i = 1, 20 do r:call("SET", name .. ":k" .. i, "v" .. i) end
        r:close()
        local out = run("content", [[
            local s = H.storage({ port = ARGS.port, connect_timeout = 0, send_timeout = 0, read_timeout = 0 })
            s:get(ARGS.name, "warm-up")  -- proves the pool: later concurrent calls pipeline
            local threads = {}
            for i = 1, 20 do
                threads[i] = ngx.thread.spawn(function() return s:get(ARGS.name, "k" .. i) end)
            end
            local results = {}
            for i = 1, 20 do
                local _, v, err = ngx.thread.wait(threads[i])
                results[i] = v or ("error: " .. tostring(err))
            end
            return results
        ]], { port = h.port, name = name })
        for i = 1, 20 do
            -- before: a 0 read_timeout made every queued caller's wait time out at once
            assert.equal("v" .. i, out[i])
        end
    end)

    it("timeouts above 2^31-1 ms raise at new() and on writes; the maximum works", function()
        local out = run("content", [[
            local results = {}
            for _, field in ipairs({ "connect_timeout", "send_timeout", "read_timeout", "keepalive_timeout" }) do
                local ok, err = pcall(H.hiredis.new, { port = ARGS.port, [field] = 2 ^ 31 })
                results[field] = ok and "accepted" or err
            end
            local s = H.hiredis.new({ port = ARGS.port })
            local ok, err = pcall(function() s.read_timeout = 1e13 end)
            results.write = ok and "accepted" or err
            local max = H.hiredis.new({ port = ARGS.port, connect_timeout = 2147483647, send_timeout = 2147483647,
                                        read_timeout = 2147483647, keepalive_timeout = 2147483647 })
            results.call = { max:set(ARGS.name, "k", "v", 60, ngx.time()) }
            return results
        ]], { port = h.port, name = h.unique("ngx-max") })
        for _, field in ipairs({ "connect_timeout", "send_timeout", "read_timeout", "keepalive_timeout" }) do
            assert.matches("invalid " .. field .. ": must be a number of milliseconds from 0 to 2147483647",
                           out[field], 1, true)
        end
        assert.matches("invalid read_timeout: must be a number of milliseconds from 0 to 2147483647",
                       out.write, 1, true)
        assert.same({ true }, out.call)  -- no "bad timeout value" from settimeouts
    end)

    it("options as in plain LuaJIT", function()
        local out = run("content", [[
            local s = H.hiredis.new({ pool = "p", pool_size = "8" })
            return { options = s.options }
        ]])
        assert.same({ pool = "p", pool_size = 8, ssl = false }, out.options)
    end)

    describe("a custom pool shared by configurations of different identities", function()
        it("plain and TLS: the TLS call never runs on a pooled plaintext connection", function()
            if not tls_port then
                pending("no tls server (HIREDIS_TEST_TLS_PORT): run through spec/support/with-servers.sh")
                return
            end
            local pool = h.unique("ngx-shared-tls")
            local name = h.unique("ngx-cross-tls")
            local plain = { port = h.port, pool = pool }
            local tls = { port = tls_port, ssl = true, pool = pool }
            assert.same({ true }, run("content", SET, { cfg = plain, name = name, value = "plain" }))
            -- before: the pooled plaintext connection to the plain server answered
            assert.same({}, run("content", GET, { cfg = tls, name = name }))
            assert.same({ true }, run("content", SET, { cfg = tls, name = name, value = "tls" }))
            assert.equal("tls", tls_cli("GET", name .. ":k"))
            local r = h.raw()
            assert.equal("plain", r:call("GET", name .. ":k"))
            r:close()
        end)

        it("two ACL users: each call runs as its own user", function()
            local r = h.raw_acl()
            h.kill_others(r)
            local pool = h.unique("ngx-shared-acl")
            local name = h.unique("ngx-cross-acl")
            r:call("SET", name .. ":k", "v")
            local app = { port = h.acl_port, username = h.acl_user, password = h.acl_password, pool = pool }
            local default = { port = h.acl_port, password = h.acl_default_password, pool = pool }
            for _ = 1, 3 do
                assert.same({ "v" }, run("content", GET, { cfg = app, name = name }))
                assert.same({ "v" }, run("content", GET, { cfg = default, name = name }))
            end
            local me = tostring(r:call("CLIENT", "ID"))
            local users = {}
            for _, c in ipairs(assert(r:client_list("TYPE", "normal"))) do
                if c.id ~= me then users[#users + 1] = c.user end
            end
            table.sort(users)
            -- before: one connection, authenticated as the first user, served both
            assert.same({ h.acl_user, "default" }, users)
            r:close()
        end)

        it("two databases: the data lands in each configuration's database", function()
            local pool = h.unique("ngx-shared-db")
            local name = h.unique("ngx-cross-db")
            local db0 = { port = h.port, pool = pool }
            local db3 = { port = h.port, pool = pool, database = 3 }
            for _ = 1, 2 do
                assert.same({ true }, run("content", SET, { cfg = db0, name = name, value = "zero" }))
                assert.same({ true }, run("content", SET, { cfg = db3, name = name, value = "three" }))
            end
            local r, r3 = h.raw(), h.raw(h.port, { database = 3 })
            -- before: db3's SET ran on the pooled db 0 connection (no SELECT)
            assert.equal("zero", r:call("GET", name .. ":k"))
            assert.equal("three", r3:call("GET", name .. ":k"))
            r:close()
            r3:close()
        end)
    end)

    for _, case in ipairs({
        { mode = "huge_bulk",
          err = "protocol error: reply larger than 536870912 bytes (a bulk string of 999999999999 bytes)" },
        { mode = "huge_array",
          err = "protocol error: more than 1048576 elements in one reply (an array of 999999999)" },
        { mode = "deep", err = "protocol error: arrays nested beyond depth 8" },
    }) do
        it("refuses " .. case.mode .. " at the header through both transports", function()
            local port, stop, output = h.fake_server(case.mode)
            local ok, err = pcall(function()
                local args = { cfg = { port = port, read_timeout = 20000 }, name = "n" }
                assert.same({ nil, case.err }, run("content", GET, args))
                local sent = h.fake_server_sent(output)
                assert.is_true(sent < 64 * 1024 * 1024, "server sent " .. tostring(sent))
                assert.same({ nil, case.err }, run("log", GET, args))
            end)
            stop()
            assert(ok, err)
        end)
    end

    it("max_reply_size applies to cosocket calls", function()
        local name = h.unique("ngx-limit")
        local r = h.raw()
        r:call("SET", name .. ":k", string.rep("x", 5000))
        r:close()
        local small = { port = h.port, max_reply_size = 4096 }
        assert.same({ nil, "protocol error: reply larger than 4096 bytes (a bulk string of 5000 bytes)" },
                    run("content", GET, { cfg = small, name = name }))
        local out = run("content", GET, { cfg = { port = h.port, max_reply_size = 8192 }, name = name })
        assert.equal(5000, #out[1])
    end)

    it("max_reply_size applies to the auto-pipeline's shared reply stream", function()
        local name = h.unique("ngx-limit-pipe")
        local r = h.raw()
        r:call("SET", name .. ":big", string.rep("x", 5000))
        r:call("SET", name .. ":small", "fits")
        r:close()
        local out = run("content", [[
            -- the same pool with the default limit pipelines first (its lane, its reader)
            local default = H.storage({ port = ARGS.port })
            default:get(ARGS.name, "small")
            local warm = {}
            for i = 1, 4 do
                warm[i] = ngx.thread.spawn(function() return default:get(ARGS.name, "big") end)
            end
            for i = 1, 4 do assert(#select(2, ngx.thread.wait(warm[i])) == 5000) end
            local s = H.storage({ port = ARGS.port, max_reply_size = 4096 })
            s:get(ARGS.name, "small")  -- proves the pool: later concurrent calls pipeline
            local threads = {}
            for i = 1, 6 do
                local key = i % 2 == 0 and "big" or "small"
                threads[i] = ngx.thread.spawn(function() return { s:get(ARGS.name, key) } end)
            end
            local results = {}
            for i = 1, 6 do
                local _, res = ngx.thread.wait(threads[i])
                results[i] = res
            end
            return { results = results, after = { s:get(ARGS.name, "small") } }
        ]], { port = h.port, name = name })
        local refused = 0
        for i = 1, 6 do
            local res = out.results[i]
            if i % 2 == 0 then
                assert.same({ nil, "protocol error: reply larger than 4096 bytes (a bulk string of 5000 bytes)" }, res)
            end
            -- a small get in the same batch as a refused reply fails with it (its
            -- connection is closed); never with another call's data
            if res[1] == nil then refused = refused + 1 else assert.same({ "fits" }, res) end
        end
        assert.is_true(refused >= 3)
        assert.same({ "fits" }, out.after)
    end)
end)
