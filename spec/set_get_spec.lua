-- set / get over the native transport: return values, exact raw keys, TTLs,
-- binary values, missing keys, endpoints (TCP, unix socket both forms, IPv6).
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

describe("set and get", function()
    local r, name

    before_each(function()
        r = h.raw()
        name = h.unique("sess")
    end)

    after_each(function()
        r:close()
        collectgarbage()
    end)

    it("set returns exactly true and get the stored value", function()
        local store = hiredis.new({ port = h.port })
        local ok, err = store:set(name, "k1", "v1", 60, os.time())
        assert.equal(true, ok)
        assert.is_nil(err)
        local value, gerr = store:get(name, "k1")
        assert.equal("v1", value)
        assert.is_nil(gerr)
    end)

    it("stores the value with SET ... EX ttl under name:key", function()
        local store = hiredis.new({ port = h.port })
        assert.equal(true, store:set(name, "key", "value", 123, os.time()))
        assert.equal("value", r:call("GET", name .. ":key"))
        local ttl = r:call("TTL", name .. ":key")
        assert.is_true(ttl > 120 and ttl <= 123, "ttl " .. tostring(ttl))
        assert.equal("string", r:call("TYPE", name .. ":key"))
    end)

    describe("raw keys for every prefix/suffix combination", function()
        local cases = {
            { prefix = nil, suffix = nil, key = "%s:k" },
            { prefix = "pre", suffix = nil, key = "pre:%s:k" },
            { prefix = nil, suffix = "suf", key = "%s:k:suf" },
            { prefix = "pre", suffix = "suf", key = "pre:%s:k:suf" },
            -- upstream formats with "%s:%s": an empty string still takes its place
            { prefix = "", suffix = nil, key = ":%s:k" },
            { prefix = nil, suffix = "", key = "%s:k:" },
            { prefix = "a:b", suffix = "c:d", key = "a:b:%s:k:c:d" },
        }
        for _, case in ipairs(cases) do
            it(string.format("prefix=%s suffix=%s", tostring(case.prefix), tostring(case.suffix)), function()
                local store = hiredis.new({ port = h.port, prefix = case.prefix, suffix = case.suffix })
                assert.equal(true, store:set(name, "k", "v", 60, os.time()))
                local expected = string.format(case.key, name)
                assert.equal("v", r:call("GET", expected))
                assert.same({ expected }, r:call("KEYS", "*" .. name .. "*"))
                assert.equal("v", store:get(name, "k"))
                assert.equal(true, store:delete(name, "k", os.time()))
                assert.equal(0, r:call("EXISTS", expected))
            end)
        end
    end)

    it("get of a missing key returns nil without an error", function()
        local store = hiredis.new({ port = h.port })
        local n = select("#", store:get(name, "missing"))
        local value, err = store:get(name, "missing")
        assert.is_nil(value)
        assert.is_nil(err)
        assert.is_true(n == 1 or n == 2, "returned " .. n .. " values")
    end)

    it("get ignores extra arguments (lua-resty-session passes current_time)", function()
        local store = hiredis.new({ port = h.port })
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        assert.equal("v", store:get(name, "k", os.time()))
        assert.equal("v", store:get(name, "k", os.time(), "extra", {}))
    end)

    it("set overwrites a value and its ttl", function()
        local store = hiredis.new({ port = h.port })
        assert.equal(true, store:set(name, "k", "first", 1000, os.time()))
        assert.equal(true, store:set(name, "k", "second", 50, os.time()))
        assert.equal("second", store:get(name, "k"))
        local ttl = r:call("TTL", name .. ":k")
        assert.is_true(ttl > 0 and ttl <= 50)
    end)

    it("accepts remember and gives it no effect", function()
        local store = hiredis.new({ port = h.port })
        local now = os.time()
        assert.equal(true, store:set(name, "k", "v", 60, now, nil, nil, nil, true))
        assert.equal("v", store:get(name, "k"))
        local ttl = r:call("TTL", name .. ":k")
        assert.is_true(ttl > 55 and ttl <= 60)
    end)

    it("expires the value after ttl seconds", function()
        local store = hiredis.new({ port = h.port })
        assert.equal(true, store:set(name, "k", "v", 1, os.time()))
        assert.equal("v", store:get(name, "k"))
        local pttl = r:call("PTTL", name .. ":k")
        assert.is_true(pttl > 0 and pttl <= 1000, "PTTL " .. tostring(pttl))
        -- gone on the server once the second has passed (EXISTS expires it lazily)
        assert.is_true(h.wait_until(function() return r:call("EXISTS", name .. ":k") == 0 end, 3000))
        local value, err = store:get(name, "k")
        assert.is_nil(value)
        assert.is_nil(err)
    end)

    describe("binary values", function()
        local values = {
            ["an empty string"] = "",
            ["NUL bytes"] = "a\0b\0\0c\0",
            ["CRLF"] = "line1\r\nline2\r\n\r\n$3\r\n*1\r\n",
            ["all 256 byte values"] = h.all_bytes(),
            ["1 MiB"] = string.rep(h.all_bytes(), 4096),
        }
        for label, value in pairs(values) do
            it("round-trips " .. label .. " byte for byte", function()
                local store = hiredis.new({ port = h.port })
                assert.equal(true, store:set(name, "bin", value, 60, os.time()))
                local got, err = store:get(name, "bin")
                assert.is_nil(err)
                assert.equal(#value, #got)
                assert.is_true(got == value)
                local raw_value = r:call("GET", name .. ":bin")
                assert.is_true(raw_value == value)
            end)
        end

        it("round-trips a 16 MiB value (many partial reads and writes)", function()
            local store = hiredis.new({ port = h.port })
            local value = string.rep(h.all_bytes() .. "\r\n", 65536)
            assert.equal(true, store:set(name, "big", value, 60, os.time()))
            local got = store:get(name, "big")
            assert.equal(#value, #got)
            assert.is_true(got == value)
            assert.equal(#value, r:call("STRLEN", name .. ":big"))
        end)

        it("returns an empty value as an empty string, not nil", function()
            local store = hiredis.new({ port = h.port })
            assert.equal(true, store:set(name, "empty", "", 60, os.time()))
            assert.equal("", store:get(name, "empty"))
        end)

        it("reads values written by another client exactly", function()
            local store = hiredis.new({ port = h.port })
            local value = "\0\r\n\255" .. h.all_bytes()
            assert.equal("OK", r:call("SET", name .. ":ext", value))
            assert.is_true(store:get(name, "ext") == value)
        end)

        it("accepts binary names and keys", function()
            local store = hiredis.new({ port = h.port })
            local key = "k\0\r\n\255"
            assert.equal(true, store:set(name, key, "v", 60, os.time()))
            assert.equal("v", r:call("GET", name .. ":" .. key))
            assert.equal("v", store:get(name, key))
        end)
    end)

    describe("endpoints", function()
        it("connects over a unix socket given as a path", function()
            local store = hiredis.new({ socket = h.socket })
            assert.equal(true, store:set(name, "k", "unix", 60, os.time()))
            assert.equal("unix", r:call("GET", name .. ":k"))
            assert.equal("unix", store:get(name, "k"))
        end)

        it("connects over a unix socket given in the cosocket form unix:/path", function()
            local store = hiredis.new({ socket = "unix:" .. h.socket })
            assert.equal(true, store:set(name, "k", "unix2", 60, os.time()))
            assert.equal("unix2", store:get(name, "k"))
        end)

        it("prefers socket over host and port", function()
            local store = hiredis.new({ socket = h.socket, host = "127.0.0.1", port = h.unused_port() })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("connects to a host name", function()
            local store = hiredis.new({ host = "localhost", port = h.port })
            assert.equal(true, store:set(name, "k", "named", 60, os.time()))
            assert.equal("named", store:get(name, "k"))
        end)

        it("connects over IPv6 (::1)", function()
            if not h.ipv6 then
                pending("::1 is not available on this machine")
                return
            end
            local store = hiredis.new({ host = "::1", port = h.port })
            assert.equal(true, store:set(name, "k", "six", 60, os.time()))
            assert.equal("six", store:get(name, "k"))
            local found = false
            for _, c in ipairs(r:client_list("TYPE", "normal")) do
                if c.addr and c.addr:find("^%[?::1") then found = true end
            end
            assert.is_true(found, "no client connected from ::1")
        end)
    end)
end)
