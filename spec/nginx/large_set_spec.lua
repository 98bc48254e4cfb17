-- Inside a real nginx (one worker): a set's large value (128 bytes or more) goes
-- out from the caller's own Lua string, between the request's other bytes
-- (op:start hands the cosocket driver the pieces, so no request-sized Lua string
-- is made per call). The bytes Redis stores must be the caller's on every path:
-- a call alone, calls sharing a pipelined write, a transaction (metadata), and a
-- new connection whose handshake goes in front of the request.
local h = require "helpers"
local nginx = require "nginx"

-- Sets every ARGS.values[i] under key "k<i>", each call in its own light thread.
local SETS = [[
    local s = H.storage(ARGS.cfg, ARGS.storage)
    if ARGS.warm then
        s:get(ARGS.name, "warm-up")  -- proves the pool: later connections prefix their handshake
    end
    local threads = {}
    for i, value in ipairs(ARGS.values) do
        threads[i] = ngx.thread.spawn(function()
            local meta = i % 2 == 0 and { audiences = { "web" }, subjects = { "u" .. i } } or nil
            return s:set(ARGS.name, "k" .. i, value, 300, ngx.time(), nil, nil, meta)
        end)
    end
    local out = {}
    for i = 1, #threads do
        local ok, r1, r2 = ngx.thread.wait(threads[i])
        out[i] = ok and (r1 and "ok" or tostring(r2)) or ("thread failed: " .. tostring(r1))
    end
    H.wait_pipelines_idle()  -- later specs want calls that go direct
    return out, require("resty.session.hiredis").stats().pipeline.calls
]]

local function values(n)
    local out = {}
    for i = 1, n do
        -- RESP-looking and binary bytes, sizes on both sides of the threshold
        out[i] = "\r\n$-1\r\n*2\r\n" .. h.all_bytes() .. string.rep(string.char(64 + i), 100 * i)
    end
    out[n + 1] = string.rep("s", 127)  -- just under the threshold: one string, as before
    out[n + 2] = string.rep("t", 128)
    return out
end

describe("nginx large set values", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function run_sets(cfg, name, vals, warm)
        local res = srv:run("content", SETS, { cfg = cfg, name = name, values = vals, storage = h.unique("s"),
                                               warm = warm })
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res[2]
    end

    it("stores the caller's bytes, alone, pipelined and in transactions", function()
        local name = h.unique("large")
        local vals = values(20)
        local calls_before = select(2, run_sets({ port = h.port }, h.unique("large0"), { "x" }, true))
        local results, calls_after = run_sets({ port = h.port }, name, vals, true)
        for i = 1, #vals do
            assert.equal("ok", results[i], "set " .. i)
        end
        local r = h.raw()
        for i, value in ipairs(vals) do
            assert.equal(value, r:call("GET", name .. ":k" .. i), "value " .. i)
        end
        assert.equal(1, r:call("ZCARD", name .. ":web:u2"))
        assert.is_true(calls_after > calls_before, "some calls shared a pipelined write")
        r:close()
    end)

    it("stores them behind a new connection's handshake (SELECT in the same write)", function()
        local name = h.unique("large-db")
        local r = h.raw()
        local cfg = { port = h.port, database = 3, pool = h.unique("db3") }
        -- the first request proves the pool; then its connections go away, and the
        -- first set of the next request opens a new one: its handshake goes in front
        run_sets(cfg, name, { "warm" }, true)
        h.kill_others(r)
        local vals = values(4)
        local results = run_sets(cfg, name, vals)
        for i = 1, #vals do
            assert.equal("ok", results[i], "set " .. i)
        end
        assert.equal("OK", r:call("SELECT", 3))
        for i, value in ipairs(vals) do
            assert.equal(value, r:call("GET", name .. ":k" .. i), "value " .. i)
        end
        r:close()
        local db0 = h.raw()
        assert.equal(0, db0:call("EXISTS", name .. ":k1"))
        db0:close()
    end)
end)
