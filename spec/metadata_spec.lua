-- set with old_key and metadata (one MULTI/EXEC), read_metadata: zset keys,
-- scores, TTLs (EXPIRE LT on the old key, NX+GT on the zset), pruning, errors.
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

local meta = h.meta

describe("metadata", function()
    local r, name, store

    before_each(function()
        r = h.raw()
        name = h.unique("meta")
        store = hiredis.new({ port = h.port })
    end)

    after_each(function()
        r:close()
        collectgarbage()
    end)

    describe("set with metadata", function()
        it("adds the session key to name:audience:subject with score current_time + ttl", function()
            local now = os.time()
            assert.equal(true, store:set(name, "key1", "v", 3600, now, nil, nil, meta({ "aud" }, { "sub" })))
            assert.equal("v", r:call("GET", name .. ":key1"))
            assert.equal("zset", r:call("TYPE", name .. ":aud:sub"))
            assert.same({ key1 = tostring(now + 3600) }, r:zscores(name .. ":aud:sub"))
            local ttl = r:call("TTL", name .. ":aud:sub")
            assert.is_true(ttl > 3590 and ttl <= 3600, "zset ttl " .. tostring(ttl))
        end)

        it("writes one zset per audience/subject pair", function()
            local now = os.time()
            assert.equal(true, store:set(name, "k", "v", 100, now, nil, nil,
                meta({ "a1", "a2", "a1" }, { "s1", "s2", "s3" })))
            for _, suffix in ipairs({ "a1:s1", "a2:s2", "a1:s3" }) do
                assert.same({ k = tostring(now + 100) }, r:zscores(name .. ":" .. suffix))
            end
            local keys = r:call("KEYS", name .. "*")
            table.sort(keys)
            assert.same({ name .. ":a1:s1", name .. ":a1:s3", name .. ":a2:s2", name .. ":k" }, keys)
        end)

        it("writes hundreds of audience/subject pairs in one transaction", function()
            local now = os.time()
            local audiences, subjects = {}, {}
            for i = 1, 300 do
                audiences[i] = "aud" .. i
                subjects[i] = "sub" .. i
            end
            local before = h.command_calls(r, "exec")
            assert.equal(true, store:set(name, "k", "v", 100, now, nil, nil, meta(audiences, subjects)))
            assert.equal(before + 1, h.command_calls(r, "exec"))
            for _, i in ipairs({ 1, 150, 300 }) do
                assert.same({ k = tostring(now + 100) }, r:zscores(name .. ":aud" .. i .. ":sub" .. i))
            end
            assert.equal(true, store:delete(name, "k", now, meta(audiences, subjects)))
            assert.equal(0, r:call("EXISTS", name .. ":aud300:sub300"))
        end)

        it("accepts empty metadata arrays and still stores the session", function()
            assert.equal(true, store:set(name, "k", "v", 100, os.time(), nil, nil, meta({}, {})))
            assert.equal("v", r:call("GET", name .. ":k"))
        end)

        describe("metadata keys for every prefix/suffix combination", function()
            local cases = {
                { nil, nil, "%s:aud:sub", "%s:k" },
                { "p", nil, "p:%s:aud:sub", "p:%s:k" },
                { nil, "s", "%s:aud:sub:s", "%s:k:s" },
                { "p", "s", "p:%s:aud:sub:s", "p:%s:k:s" },
                { "", "", ":%s:aud:sub:", ":%s:k:" },
            }
            for _, case in ipairs(cases) do
                it(string.format("prefix=%s suffix=%s", tostring(case[1]), tostring(case[2])), function()
                    local s = hiredis.new({ port = h.port, prefix = case[1], suffix = case[2] })
                    local now = os.time()
                    assert.equal(true, s:set(name, "k", "v", 60, now, nil, nil, meta({ "aud" }, { "sub" })))
                    local meta_key = string.format(case[3], name)
                    local session_key = string.format(case[4], name)
                    -- members are the key argument, not the full Redis key
                    assert.same({ k = tostring(now + 60) }, r:zscores(meta_key))
                    assert.equal("v", r:call("GET", session_key))
                    assert.same({ k = tostring(now + 60) }, s:read_metadata(name, "aud", "sub", now))
                    assert.equal(true, s:delete(name, "k", now, meta({ "aud" }, { "sub" })))
                    assert.equal(0, r:call("EXISTS", session_key))
                    assert.equal(0, r:call("EXISTS", meta_key))
                end)
            end
        end)

        it("prunes members whose score is at most current_time - 1", function()
            local now = os.time()
            local mk = name .. ":aud:sub"
            assert.equal(3, r:call("ZADD", mk, now - 100, "old", now - 1, "just-expired", now, "current"))
            assert.equal(true, store:set(name, "new", "v", 60, now, nil, nil, meta({ "aud" }, { "sub" })))
            assert.same({ current = tostring(now), new = tostring(now + 60) }, r:zscores(mk))
        end)

        it("never shortens the zset's TTL (EXPIRE NX then GT)", function()
            local now = os.time()
            local mk = name .. ":aud:sub"
            local md = meta({ "aud" }, { "sub" })
            assert.equal(true, store:set(name, "long", "v", 1000, now, nil, nil, md))
            local ttl = r:call("TTL", mk)
            assert.is_true(ttl > 990 and ttl <= 1000)
            -- a shorter session must not shorten it
            assert.equal(true, store:set(name, "short", "v", 10, now, nil, nil, md))
            ttl = r:call("TTL", mk)
            assert.is_true(ttl > 990 and ttl <= 1000, "zset ttl shortened to " .. tostring(ttl))
            -- a longer one extends it
            assert.equal(true, store:set(name, "longer", "v", 5000, now, nil, nil, md))
            ttl = r:call("TTL", mk)
            assert.is_true(ttl > 4990 and ttl <= 5000, "zset ttl not extended: " .. tostring(ttl))
            assert.same({ long = tostring(now + 1000), short = tostring(now + 10), longer = tostring(now + 5000) },
                r:zscores(mk))
        end)

        it("gives a TTL to an existing zset that had none", function()
            local now = os.time()
            local mk = name .. ":aud:sub"
            assert.equal(1, r:call("ZADD", mk, now + 50, "persist"))
            assert.equal(-1, r:call("TTL", mk))
            assert.equal(true, store:set(name, "k", "v", 300, now, nil, nil, meta({ "aud" }, { "sub" })))
            local ttl = r:call("TTL", mk)
            assert.is_true(ttl > 290 and ttl <= 300, "zset ttl " .. tostring(ttl))
        end)
    end)

    describe("set with old_key", function()
        it("lowers the old key's TTL to stale_ttl (EXPIRE LT)", function()
            local now = os.time()
            assert.equal("OK", r:call("SET", name .. ":old", "o", "EX", 1000))
            assert.equal(true, store:set(name, "new", "n", 600, now, "old", 10))
            local ttl = r:call("TTL", name .. ":old")
            assert.is_true(ttl > 0 and ttl <= 10, "old ttl " .. tostring(ttl))
            assert.equal("o", r:call("GET", name .. ":old"))
            assert.equal("n", r:call("GET", name .. ":new"))
            ttl = r:call("TTL", name .. ":new")
            assert.is_true(ttl > 590 and ttl <= 600)
        end)

        it("never raises an old key's TTL that is already below stale_ttl", function()
            local now = os.time()
            assert.equal("OK", r:call("SET", name .. ":old", "o", "EX", 5))
            assert.equal(true, store:set(name, "new", "n", 600, now, "old", 100))
            local ttl = r:call("TTL", name .. ":old")
            assert.is_true(ttl > 0 and ttl <= 5, "old ttl raised to " .. tostring(ttl))
        end)

        h.it_since(70000, "before 7.0 the single node keeps upstream's TTL-then-EXPIRE sequence",
                   "gives stale_ttl to an old key without TTL (EXPIRE LT treats it as infinite)", function()
            local now = os.time()
            assert.equal("OK", r:call("SET", name .. ":old", "o"))
            assert.equal(true, store:set(name, "new", "n", 600, now, "old", 30))
            local ttl = r:call("TTL", name .. ":old")
            assert.is_true(ttl > 0 and ttl <= 30, "old ttl " .. tostring(ttl))
        end)

        it("succeeds when the old key does not exist", function()
            assert.equal(true, store:set(name, "new", "n", 600, os.time(), "missing", 10))
            assert.equal(0, r:call("EXISTS", name .. ":missing"))
            assert.equal("n", store:get(name, "new"))
        end)

        it("moves the metadata from old_key to key (ZREM old_key)", function()
            local now = os.time()
            local md = meta({ "aud", "aud2" }, { "sub", "sub2" })
            assert.equal(true, store:set(name, "old", "o", 600, now, nil, nil, md))
            assert.same({ old = tostring(now + 600) }, r:zscores(name .. ":aud:sub"))
            assert.equal(true, store:set(name, "new", "n", 600, now + 5, "old", 10, md))
            assert.same({ new = tostring(now + 605) }, r:zscores(name .. ":aud:sub"))
            assert.same({ new = tostring(now + 605) }, r:zscores(name .. ":aud2:sub2"))
            local ttl = r:call("TTL", name .. ":old")
            assert.is_true(ttl > 0 and ttl <= 10)
        end)

        it("applies old_key, metadata and the new value in one transaction", function()
            local before = h.command_calls(r, "exec")
            local multi_before = h.command_calls(r, "multi")
            assert.equal(true, store:set(name, "new", "n", 600, os.time(), "old", 10, meta({ "a" }, { "s" })))
            assert.equal(before + 1, h.command_calls(r, "exec"))
            assert.equal(multi_before + 1, h.command_calls(r, "multi"))
        end)

        h.it_since(70000, "EXPIRE ... LT", "needs no TTL round trip on Redis >= 7 (EXPIRE ... LT)", function()
            assert.equal("OK", r:call("SET", name .. ":old", "o", "EX", 1000))
            local ttl_before = h.command_calls(r, "ttl")
            local expire_before = h.command_calls(r, "expire")
            assert.equal(true, store:set(name, "new", "n", 600, os.time(), "old", 10))
            -- the raw client's own TTL calls are not in between
            assert.equal(ttl_before, h.command_calls(r, "ttl"))
            assert.equal(expire_before + 1, h.command_calls(r, "expire"))
        end)
    end)

    describe("errors inside the transaction", function()
        it("reports WRONGTYPE from a metadata key holding a string", function()
            local now = os.time()
            assert.equal("OK", r:call("SET", name .. ":aud:sub", "not a zset"))
            local ok, err = store:set(name, "k", "v", 60, now, nil, nil, meta({ "aud" }, { "sub" }))
            assert.is_nil(ok)
            assert.is_string(err)
            assert.matches("^WRONGTYPE", err)
        end)

        it("keeps the connection usable after an error reply", function()
            local s = hiredis.new({ port = h.port, pool = h.unique("pool") })
            assert.equal(true, s:set(name, "first", "v", 60, os.time()))
            local ids = h.other_ids(r)
            assert.equal("OK", r:call("SET", name .. ":aud:sub", "not a zset"))
            local ok, err = s:set(name, "k", "v", 60, os.time(), nil, nil, meta({ "aud" }, { "sub" }))
            assert.is_nil(ok)
            assert.matches("^WRONGTYPE", err)
            assert.equal("v", s:get(name, "first"))
            assert.same(ids, h.other_ids(r))
        end)

        it("reports WRONGTYPE from read_metadata on a non-zset key", function()
            assert.equal("OK", r:call("SET", name .. ":aud:sub", "x"))
            local res, err = store:read_metadata(name, "aud", "sub", os.time())
            assert.is_nil(res)
            assert.matches("^WRONGTYPE", err)
        end)

        it("reports WRONGTYPE from get on a non-string key", function()
            assert.equal(1, r:call("ZADD", name .. ":z", 1, "m"))
            local value, err = store:get(name, "z")
            assert.is_nil(value)
            assert.matches("^WRONGTYPE", err)
        end)
    end)

    describe("read_metadata", function()
        it("returns { [key] = score } with string scores", function()
            local now = os.time()
            local md = meta({ "aud" }, { "sub" })
            assert.equal(true, store:set(name, "k1", "v", 100, now, nil, nil, md))
            assert.equal(true, store:set(name, "k2", "v", 200, now, nil, nil, md))
            local res, err = store:read_metadata(name, "aud", "sub", now)
            assert.is_nil(err)
            assert.same({ k1 = tostring(now + 100), k2 = tostring(now + 200) }, res)
            assert.equal("string", type(res.k1))
        end)

        it("returns members with score >= current_time only", function()
            local now = os.time()
            local mk = name .. ":aud:sub"
            assert.equal(4, r:call("ZADD", mk, now - 1, "gone", now, "edge", now + 10, "live", now + 1e9, "far"))
            local res = store:read_metadata(name, "aud", "sub", now)
            assert.same({ edge = tostring(now), live = tostring(now + 10), far = tostring(now + 1e9) }, res)
        end)

        it("uses ZRANGEBYSCORE (works on every Redis version)", function()
            local before = h.command_calls(r, "zrangebyscore")
            assert.is_table(store:read_metadata(name, "aud", "sub", os.time()))
            assert.equal(before + 1, h.command_calls(r, "zrangebyscore"))
        end)

        it("returns fractional scores as Redis prints them", function()
            local now = os.time() + 0.5
            assert.equal(true, store:set(name, "k", "v", 60, now, nil, nil, meta({ "aud" }, { "sub" })))
            assert.same({ k = tostring(now + 60) }, r:zscores(name .. ":aud:sub"))
            assert.same({ k = tostring(now + 60) }, store:read_metadata(name, "aud", "sub", now))
        end)

        it("returns thousands of members", function()
            local now = os.time()
            local mk = name .. ":aud:sub"
            local expected, commands = {}, {}
            for i = 1, 5000 do
                commands[i] = { "ZADD", mk, now + i, "key-" .. i }
                expected["key-" .. i] = tostring(now + i)
            end
            r:pipeline(commands)
            assert.equal(5000, r:call("ZCARD", mk))
            assert.same(expected, store:read_metadata(name, "aud", "sub", now))
        end)

        it("returns an empty table when the zset does not exist", function()
            local res, err = store:read_metadata(name, "nobody", "none", os.time())
            assert.is_nil(err)
            assert.same({}, res)
        end)

        it("returns an empty table when every member has expired", function()
            local now = os.time()
            assert.equal(1, r:call("ZADD", name .. ":aud:sub", now - 5, "old"))
            assert.same({}, store:read_metadata(name, "aud", "sub", now))
        end)

        it("returns binary member names exactly", function()
            local now = os.time()
            local key = "k\0\r\n\255"
            assert.equal(true, store:set(name, key, "v", 100, now, nil, nil, meta({ "aud" }, { "sub" })))
            local res = store:read_metadata(name, "aud", "sub", now)
            assert.equal(tostring(now + 100), res[key])
        end)

        it("reads metadata under prefix and suffix", function()
            local s = hiredis.new({ port = h.port, prefix = "p", suffix = "s" })
            local now = os.time()
            assert.equal(1, r:call("ZADD", "p:" .. name .. ":aud:sub:s", now + 5, "x"))
            assert.same({ x = tostring(now + 5) }, s:read_metadata(name, "aud", "sub", now))
            assert.same({}, store:read_metadata(name, "aud", "sub", now))
        end)
    end)
end)
