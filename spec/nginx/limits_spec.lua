-- max_reply_size inside a real nginx (cosockets): a value of exactly the limit
-- reads back, one byte more is refused at set before any socket is made (single
-- node, cluster; sentinel: before the master is written), and the 512 MiB default stores and reads back a
-- 64 MiB value, alone and through the auto-pipeline's shared reply stream.
local h = require "helpers"
local nginx = require "nginx"
local group = require "sentinel_group"
local kit = require "cluster_kit"

local REFUSED_1025 = "invalid value: 1025 bytes exceed max_reply_size (1024 bytes)"

describe("max_reply_size in nginx", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function run(code, args)
        local res = srv:run("content", code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    it("a value of exactly max_reply_size reads back; one byte more is refused at set", function()
        local name = h.unique("ngx-limit-exact")
        local out = run([[
            local s = H.storage({ port = ARGS.port, max_reply_size = 1024 })
            local exact = string.rep("e", 1024)
            return {
                exact = { s:set(ARGS.name, "exact", exact, 60, ngx.time()) },
                got = s:get(ARGS.name, "exact") == exact,
                over = { s:set(ARGS.name, "over", exact .. "x", 60, ngx.time()) },
                over_meta = { s:set(ARGS.name, "over", exact .. "x", 60, ngx.time(), "exact", 10,
                                    { audiences = { "a" }, subjects = { "s" } }) },
            }
        ]], { port = h.port, name = name })
        assert.same({ true }, out.exact)
        assert.is_true(out.got)
        assert.same({ nil, REFUSED_1025 }, out.over)
        assert.same({ nil, REFUSED_1025 }, out.over_meta)
        local r = h.raw()
        assert.is_nil(r:call("GET", name .. ":over"))
        assert.is_true(r:call("TTL", name .. ":exact") > 10)  -- old_key not shortened
        r:close()
    end)

    it("a refused set opens no socket: single node and cluster", function()
        local port = h.unused_port()
        for _, cfg in ipairs({
            { port = port, max_reply_size = 1024 },
            { nodes = { { ip = "127.0.0.1", port = port } }, max_reply_size = 1024 },
        }) do
            local out, res = run([[
                local s = H.storage(ARGS.cfg)
                return { s:set("n", "k", string.rep("x", 1025), 60, ngx.time()) }
            ]], { cfg = cfg })
            assert.same({ nil, REFUSED_1025 }, out)
            assert.equal(0, res.cosocket)
        end
    end)

    it("cluster over cosockets: a value of exactly max_reply_size reads back, one byte more is refused", function()
        if not kit.available then
            pending(kit.skip_reason)
            return
        end
        local name = h.unique("ngx-cl-limit")
        local out = run([[
            local s = H.storage(ARGS.cfg)
            local exact = string.rep("c", 1024)
            return {
                exact = { s:set(ARGS.name, "k", exact, 60, ngx.time()) },
                got = s:get(ARGS.name, "k") == exact,
                over = { s:set(ARGS.name, "k", exact .. "x", 60, ngx.time()) },
                still = s:get(ARGS.name, "k") == exact,
            }
        ]], { cfg = kit.config({ max_reply_size = 1024, transport = "cosocket" }), name = name })
        assert.same({ true }, out.exact)
        assert.is_true(out.got)
        assert.same({ nil, REFUSED_1025 }, out.over)
        assert.is_true(out.still)
    end)

    it("sentinel: the master is never written", function()
        if not group.available then
            pending(group.why_absent)
            return
        end
        local master = group.wait_stable(30)
        local name = h.unique("ngx-se-limit")
        local out = run([[
            local s = H.storage(ARGS.cfg)
            local exact = string.rep("s", 1024)
            return {
                over = { s:set(ARGS.name, "k", exact .. "x", 60, ngx.time()) },
                exact = { s:set(ARGS.name, "exact", exact, 60, ngx.time()) },
                got = s:get(ARGS.name, "exact") == exact,
            }
        ]], { cfg = group.config({ max_reply_size = 1024 }), name = name })
        assert.same({ nil, REFUSED_1025 }, out.over)
        assert.same({ true }, out.exact)
        assert.is_true(out.got)
        local raw = group.raw_server(master)
        assert.is_nil(raw:call("GET", name .. ":k"))
        raw:close()
    end)

    it("a large call, failed or not, keeps none of its memory (cosockets)", function()
        -- measured across requests: nginx keeps a request's send buffers until it ends
        local RSS = [[
            collectgarbage()
            collectgarbage()
            local f = assert(io.open("/proc/self/statm"))
            local _, resident = f:read("*n", "*n")
            f:close()
            return resident * 4096
        ]]
        local args = { port = h.port, dead = h.unused_port(), name = h.unique("ngx-mem") }
        assert.same({ true }, run([[
            return { H.storage({ port = ARGS.port }, "mem"):set(ARGS.name, "k", "small", 60, ngx.time()) }
        ]], args))
        local before = run(RSS)
        local out = run([[
            local s = H.storage({ port = ARGS.port }, "mem")
            local dead = H.storage({ port = ARGS.dead })
            local value = string.rep("m", 64 * 1024 * 1024)
            return {
                set = { s:set(ARGS.name, "k", value, 60, ngx.time()) },
                get = #s:get(ARGS.name, "k"),
                -- last, failed once the request was built: nothing trims it later
                refused = { dead:set(ARGS.name, "k", value, 60, ngx.time()) },
            }
        ]], args)
        local grown = run(RSS) - before
        assert.same({ true }, out.set)
        assert.equal(64 * 1024 * 1024, out.get)
        assert.same({ nil, "connection refused" }, out.refused)
        assert.is_true(grown < 16 * 1024 * 1024, string.format("%.1f MiB kept", grown / 1048576))
    end)

    it("the 512 MiB default stores and reads back a 64 MiB value over cosockets", function()
        local name = h.unique("ngx-huge")
        local out = run([[
            local value = string.rep("0123456789abcdef", 4 * 1024 * 1024)  -- 64 MiB
            local s = H.storage({ port = ARGS.port, read_timeout = 30000, send_timeout = 30000 })
            local function ms(t0)
                ngx.update_time()
                return math.floor((ngx.now() - t0) * 1000)
            end
            ngx.update_time()
            local t0 = ngx.now()
            local set = { s:set(ARGS.name, "huge", value, 60, ngx.time()) }
            local set_ms = ms(t0)
            t0 = ngx.now()
            local got, err = s:get(ARGS.name, "huge")
            local get_ms = ms(t0)
            local same = got == value
            got = nil
            -- two at once: the second joins the pipeline's shared reply stream
            t0 = ngx.now()
            local threads = {}
            for i = 1, 2 do
                threads[i] = ngx.thread.spawn(function()
                    local v, e = s:get(ARGS.name, "huge")
                    return v == value, e
                end)
            end
            local both = {}
            for i = 1, 2 do both[i] = { select(2, ngx.thread.wait(threads[i])) } end
            local pipelined_ms = ms(t0)
            return { max = s.max_reply_size, set = set, same = same, err = err, both = both,
                     set_ms = set_ms, get_ms = get_ms, pipelined_ms = pipelined_ms }
        ]], { port = h.port, name = name })
        assert.equal(536870912, out.max)
        assert.same({ true }, out.set)
        assert.is_nil(out.err)
        assert.is_true(out.same)
        assert.same({ { true }, { true } }, out.both)
        print(string.format("\n64 MiB cosocket: set %d ms, get %d ms, 2 concurrent gets %d ms",
                            out.set_ms, out.get_ms, out.pipelined_ms))
        local r = h.raw()
        r:call("DEL", name .. ":huge")
        r:close()
    end)
end)
