-- Inside a real nginx: which transport serves each phase, and every method through
-- both. Cosocket phases (content, access, rewrite, timer) must call ngx.socket.tcp;
-- the others (set, header_filter, body_filter, log, init_worker) must not, and cannot:
-- nginx raises "API disabled" there, so a success proves the native transport.
local h = require "helpers"
local nginx = require "nginx"

local COSOCKET = { "content", "access", "rewrite", "timer" }
local NATIVE = { "set", "header_filter", "body_filter", "log" }

-- Every method, in one chunk: returns a table of each call's results.
local EVERY_METHOD = [[
    local s = H.storage(ARGS.cfg)
    local name, now = ARGS.name, ARGS.now
    local meta = { audiences = { "aud" }, subjects = { "sub" } }
    local out = {}
    local function call(label, ...)
        out[label] = { n = select("#", ...), ... }
    end
    call("set", s:set(name, "k1", ARGS.value, 100, now))
    call("get", s:get(name, "k1"))
    call("get_missing", s:get(name, "nope"))
    call("set_meta", s:set(name, "k2", "v2", 200, now, "k1", 10, meta, false))
    call("get_k2", s:get(name, "k2"))
    call("read_metadata", s:read_metadata(name, "aud", "sub", now))
    call("delete_meta", s:delete(name, "k2", now, meta))
    call("read_metadata_after", s:read_metadata(name, "aud", "sub", now))
    call("delete", s:delete(name, "k1", now))
    call("delete_missing", s:delete(name, "k1", now))
    call("get_deleted", s:get(name, "k1"))
    call("invalid", s:set(name, "k3", 42, 100, now))
    return out
]]

local function check_every_method(res, r, name, value)
    assert.is_true(res.ok, tostring(res[1]))
    local out = res[1]
    assert.same({ n = 1, true }, out.set)
    assert.same({ n = 1, value }, out.get)
    assert.is_nil(out.get_missing[1])
    assert.is_nil(out.get_missing[2])
    assert.same({ n = 1, true }, out.set_meta)
    assert.same({ n = 1, "v2" }, out.get_k2)
    assert.same({ n = 1, { k2 = tostring(1700000000 + 200) } }, out.read_metadata)
    assert.same({ n = 1, true }, out.delete_meta)
    assert.same({ n = 1, {} }, out.read_metadata_after)
    assert.same({ n = 1, true }, out.delete)
    assert.same({ n = 1, true }, out.delete_missing)
    assert.is_nil(out.get_deleted[1])
    assert.is_nil(out.get_deleted[2])
    assert.is_nil(out.invalid[1])
    assert.matches("^invalid value", out.invalid[2])
    -- what the calls left in Redis
    assert.equal(0, r:call("EXISTS", name .. ":k1"))
    assert.equal(0, r:call("EXISTS", name .. ":k2"))
    assert.equal(0, r:call("EXISTS", name .. ":aud:sub"))
end

describe("nginx phases", function()
    local srv, r

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
        r = h.raw()
    end)

    lazy_teardown(function()
        if r then r:close() end
        if srv then assert.same({}, srv:shutdown()) end
    end)

    -- Runs every method in phase and checks results and Redis data; returns the
    -- number of ngx.socket.tcp() calls made.
    local function serves_every_method(phase)
        local name = h.unique(phase)
        local value = "v\0\r\n" .. h.all_bytes()
        local res = srv:run(phase, EVERY_METHOD,
                            { cfg = { port = h.port }, name = name, now = 1700000000, value = value })
        assert.equal(phase, res.phase)
        check_every_method(res, r, name, value)
        return res.tcp
    end

    for _, phase in ipairs(COSOCKET) do
        it("serves every method through cosockets in " .. phase, function()
            -- one socket per call that reached the network (11); the invalid call never connects
            assert.equal(11, serves_every_method(phase))
        end)
    end

    for _, phase in ipairs(NATIVE) do
        it("serves every method through the native transport in " .. phase, function()
            assert.equal(0, serves_every_method(phase))
        end)
    end

    it("validates arguments before connecting (cosocket)", function()
        -- nothing listens on that port: an argument error must come first
        local res = srv:run("content", [[
            local s = H.storage({ port = ARGS.port })
            local a, aerr = s:set("n", "k", "v", -1, 0)
            local b, berr = s:get("n", 1)
            local c, cerr = s:get("n", "k")
            return { a, aerr, b, berr, c, cerr }
        ]], { port = h.unused_port() })
        assert.is_true(res.ok, tostring(res[1]))
        local out = res[1]
        assert.is_nil(out[1])
        assert.matches("^invalid ttl", out[2])
        assert.is_nil(out[3])
        assert.matches("^invalid key", out[4])
        assert.is_nil(out[5])
        assert.equal("connection refused", out[6])
        assert.equal(1, res.tcp)
    end)

    it("transport = 'native' forces the native transport in content", function()
        local name = h.unique("forced")
        local res = srv:run("content", [[
            local s = H.storage({ port = ARGS.port, transport = "native" })
            return { s:set(ARGS.name, "k", "v", 60, 0), s:get(ARGS.name, "k") }
        ]], { port = h.port, name = name })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ true, "v" }, res[1])
        assert.equal(0, res.cosocket)
    end)

    it("transport = 'cosocket' in a phase without cosockets fails cleanly", function()
        local res = srv:run("log", [[
            local s = H.storage({ port = ARGS.port, transport = "cosocket" })
            return { s:get("n", "k") }
        ]], { port = h.port })
        assert.is_true(res.ok, tostring(res[1]))
        assert.is_nil(res[1][1])
        assert.matches("^cosocket transport unavailable", res[1][2])
    end)

    it("the transport field is readable and writable at run time", function()
        local name = h.unique("switch")
        local res = srv:run("content", [[
            local s = H.storage({ port = ARGS.port })
            local before = H.tcp_calls
            assert(s:set(ARGS.name, "k", "v", 60, 0))
            local cosocket_calls = H.tcp_calls - before
            s.transport = "native"
            before = H.tcp_calls
            local v = s:get(ARGS.name, "k")
            return { cosocket_calls, H.tcp_calls - before, v, s.transport }
        ]], { port = h.port, name = name })
        assert.is_true(res.ok, tostring(res[1]))
        assert.same({ 1, 0, "v", "native" }, res[1])
    end)
end)

describe("nginx init_worker", function()
    local srv, r, name

    lazy_setup(function()
        name = h.unique("init-worker")
        r = h.raw()
        srv = nginx.start_kit({
            workers = 1,
            vars = { port = h.port, name = name },
            init_worker = [[
                local s = H.hiredis.new({ port = T.port })
                -- directly in init_worker: no cosockets, the native transport serves
                local before = H.tcp_calls
                local ok, err = s:set(T.name, "direct", "from init_worker", 60, 0)
                local v, gerr = s:get(T.name, "direct")
                ngx.shared.results:set("direct", H.literal({
                    phase = ngx.get_phase(), ok = ok, err = err, v = v, gerr = gerr,
                    tcp = H.tcp_calls - before,
                }))
                -- in a timer started there: cosockets
                assert(ngx.timer.at(0, function()
                    local before2 = H.tcp_calls
                    local ok2, err2 = s:set(T.name, "timer", "from a timer", 60, 0)
                    local v2, gerr2 = s:get(T.name, "timer")
                    ngx.shared.results:set("timer", H.literal({
                        phase = ngx.get_phase(), ok = ok2, err = err2, v = v2, gerr = gerr2,
                        tcp = H.tcp_calls - before2,
                    }))
                end))
            ]],
        })
    end)

    lazy_teardown(function()
        if r then r:close() end
        if srv then assert.same({}, srv:shutdown()) end
    end)

    it("uses the native transport directly in init_worker_by_lua", function()
        local res = srv:wait_result("direct")
        assert.same({ phase = "init_worker", ok = true, v = "from init_worker", tcp = 0 }, res)
        assert.equal("from init_worker", r:call("GET", name .. ":direct"))
    end)

    it("uses cosockets in a timer started from init_worker_by_lua", function()
        local res = srv:wait_result("timer")
        assert.same({ phase = "timer", ok = true, v = "from a timer", tcp = 2 }, res)
        assert.equal("from a timer", r:call("GET", name .. ":timer"))
    end)
end)
