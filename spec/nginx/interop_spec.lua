-- Inside a real nginx: the same data whichever transport wrote it, and the same
-- Redis layout as upstream's resty.session.redis (written and read here with
-- lua-resty-redis, the client upstream uses, exactly as upstream's code does).
local h = require "helpers"
local nginx = require "nginx"

local NOW = 1700000000

describe("nginx interop", function()
    local srv, value

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
        value = "\0\r\n$-1\r\n*2\r\n" .. h.all_bytes() .. string.rep("x", 70000)
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
    end)

    local function run(phase, code, args)
        local res = srv:run(phase, code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    local WRITE = [[
        local s = H.storage(ARGS.cfg)
        local meta = { audiences = { "aud1", "aud2" }, subjects = { "sub1", "sub2" } }
        return { s:set(ARGS.name, "key", ARGS.value, 300, ARGS.now, nil, nil, meta) }
    ]]
    local READ = [[
        local s = H.storage(ARGS.cfg)
        return {
            value = s:get(ARGS.name, "key"),
            meta1 = s:read_metadata(ARGS.name, "aud1", "sub1", ARGS.now),
            meta2 = s:read_metadata(ARGS.name, "aud2", "sub2", ARGS.now),
        }
    ]]

    local cases = {
        { writer = "content", reader = "log" },
        { writer = "log", reader = "content" },
        { writer = "access", reader = "header_filter" },
        { writer = "timer", reader = "set" },
    }
    for _, case in ipairs(cases) do
        it(string.format("written in %s, read in %s", case.writer, case.reader), function()
            local name = h.unique("interop")
            local cfg = { port = h.port, prefix = "pre", suffix = "suf" }
            local args = { cfg = cfg, name = name, value = value, now = NOW }
            local written, wres = run(case.writer, WRITE, args)
            assert.same({ true }, written)
            local read, rres = run(case.reader, READ, { cfg = cfg, name = name, now = NOW })
            assert.is_true(read.value == value, "value differs")
            assert.same({ key = tostring(NOW + 300) }, read.meta1)
            assert.same({ key = tostring(NOW + 300) }, read.meta2)
            -- one side went through cosockets, the other did not
            assert.is_true((wres.cosocket == 0) ~= (rres.cosocket == 0))
        end)
    end

    it("reads what upstream's layout holds (written with lua-resty-redis)", function()
        local name = h.unique("upstream-write")
        local args = { port = h.port, name = name, value = value, now = NOW }
        -- exactly upstream's SET and metadata commands (resty/session/redis/common.lua)
        local out = run("content", [[
            local red = require("nginx.redis"):new()
            assert(red:connect("127.0.0.1", ARGS.port))
            local key = "pre:" .. ARGS.name .. ":key:suf"
            assert(red:set(key, ARGS.value, "EX", 300))
            local meta_key = "pre:" .. ARGS.name .. ":aud:sub:suf"
            red:init_pipeline()
            red:zremrangebyscore(meta_key, 0, ARGS.now - 1)
            red:zadd(meta_key, ARGS.now + 300, "key")
            red:expire(meta_key, 300)
            assert(red:commit_pipeline())
            -- an expired member that read_metadata must not report
            assert(red:zadd(meta_key, ARGS.now - 10, "old"))
            red:close()
            local s = H.storage({ port = ARGS.port, prefix = "pre", suffix = "suf" })
            return {
                value = s:get(ARGS.name, "key"),
                meta = s:read_metadata(ARGS.name, "aud", "sub", ARGS.now),
            }
        ]], args)
        assert.is_true(out.value == value, "value differs")
        assert.same({ key = tostring(NOW + 300) }, out.meta)
        -- and the native transport reads the same
        local native = run("log", [[
            local s = H.storage({ port = ARGS.port, prefix = "pre", suffix = "suf" })
            return {
                value = s:get(ARGS.name, "key"),
                meta = s:read_metadata(ARGS.name, "aud", "sub", ARGS.now),
            }
        ]], args)
        assert.is_true(native.value == value, "value differs (native)")
        assert.same(out.meta, native.meta)
    end)

    for _, writer in ipairs({ "content", "log" }) do
        it("writes upstream's layout (read with lua-resty-redis), from " .. writer, function()
            local name = h.unique("upstream-read")
            local args = { port = h.port, name = name, value = value, now = os.time() }
            local written = run(writer, [[
                local s = H.storage({ port = ARGS.port, prefix = "pre", suffix = "suf" })
                local meta = { audiences = { "aud" }, subjects = { "sub" } }
                local a = s:set(ARGS.name, "old", "old value", 600, ARGS.now)
                local b = s:set(ARGS.name, "key", ARGS.value, 300, ARGS.now, "old", 10, meta)
                return { a, b }
            ]], args)
            assert.same({ true, true }, written)
            local raw = run("content", [[
                local red = require("nginx.redis"):new()
                assert(red:connect("127.0.0.1", ARGS.port))
                local key = "pre:" .. ARGS.name .. ":key:suf"
                local meta_key = "pre:" .. ARGS.name .. ":aud:sub:suf"
                local out = {
                    value = red:get(key),
                    type = red:type(key),
                    ttl = red:ttl(key),
                    old_ttl = red:ttl("pre:" .. ARGS.name .. ":old:suf"),
                    meta_type = red:type(meta_key),
                    members = red:zrange(meta_key, 0, -1, "WITHSCORES"),
                    meta_ttl = red:ttl(meta_key),
                }
                red:close()
                return out
            ]], args)
            assert.is_true(raw.value == value, "value differs byte for byte")
            assert.equal("string", raw.type)
            assert.is_true(raw.ttl > 290 and raw.ttl <= 300, "ttl " .. tostring(raw.ttl))
            assert.is_true(raw.old_ttl > 0 and raw.old_ttl <= 10, "old ttl " .. tostring(raw.old_ttl))
            assert.equal("zset", raw.meta_type)
            assert.same({ "key", tostring(args.now + 300) }, raw.members)
            assert.is_true(raw.meta_ttl > 290 and raw.meta_ttl <= 300, "meta ttl " .. tostring(raw.meta_ttl))
        end)
    end
end)
