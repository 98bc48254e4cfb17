-- Reply limits enforced at the header (native transport): a bulk length, an
-- element count or a nesting depth past the limits fails the call at once with
-- "protocol error: ..." and closes the connection, without buffering toward it.
-- max_reply_size (512 MiB by default, Redis's proto-max-bulk-len) counts a reply's
-- data, not its framing; set refuses a value past it before anything is sent, on
-- every topology: nothing is written that cannot be read back.
local hiredis = require "resty.session.hiredis"
local cluster = require "resty.session.hiredis.cluster"
local sentinel = require "resty.session.hiredis.sentinel"
local h = require "helpers"
local kit = require "cluster_kit"
local group = require "sentinel_group"
local socket = require "socket"

local REFUSED_1025 = "invalid value: 1025 bytes exceed max_reply_size (1024 bytes)"

describe("reply limits", function()
    after_each(function()
        collectgarbage()
    end)

    for _, case in ipairs({
        { mode = "huge_bulk",
          err = "protocol error: reply larger than 536870912 bytes (a bulk string of 999999999999 bytes)" },
        { mode = "huge_array",
          err = "protocol error: more than 1048576 elements in one reply (an array of 999999999)" },
        { mode = "deep", err = "protocol error: arrays nested beyond depth 8" },
    }) do
        it("refuse " .. case.mode .. " at the header, before the server is done streaming", function()
            local port, stop, output = h.fake_server(case.mode)
            local ok, err = pcall(function()
                -- a long read_timeout: the error must come from the header, not from waiting
                local store = hiredis.new({ port = port, read_timeout = 20000 })
                assert.same({ nil, case.err }, { store:get("n", "k") })
                -- the connection was closed: the server stops streaming far short of its 64 MiB
                local sent = h.fake_server_sent(output)
                assert.is_number(sent)
                assert.is_true(sent < 64 * 1024 * 1024, "server sent " .. tostring(sent))
                -- and the next call starts on a fresh connection (the server serves one at a time)
                assert.same({ nil, case.err }, { store:get("n", "k") })
            end)
            stop()
            assert(ok, err)
        end)
    end

    describe("max_reply_size", function()
        local name, r

        before_each(function()
            name = h.unique("limit")
            r = h.raw()
            h.kill_others(r)  -- connections pooled by earlier specs
        end)

        after_each(function()
            r:close()
        end)

        it("lowered: a value past it fails, the connection is not reused, smaller ones work", function()
            r:call("SET", name .. ":big", string.rep("x", 2000))
            r:call("SET", name .. ":small", "fits")
            local store = hiredis.new({ port = h.port, max_reply_size = 1024, pool = h.unique("limit") })
            assert.same({ nil, "protocol error: reply larger than 1024 bytes (a bulk string of 2000 bytes)" },
                        { store:get(name, "big") })
            assert.equal(0, #h.other_ids(r))  -- closed, not pooled
            assert.equal("fits", store:get(name, "small"))
        end)

        it("counts every string of the reply: a metadata set past it fails", function()
            local store = hiredis.new({ port = h.port, max_reply_size = 1024 })
            local now = os.time()
            -- 50 members of 16 bytes and their scores of 10: 1300 bytes of data
            for i = 1, 50 do
                assert.equal(true, store:set(name, string.format("session-key-%04d", i), "v", 600, now, nil, nil,
                    { audiences = { "a" }, subjects = { "s" } }))
            end
            local meta, err = store:read_metadata(name, "a", "s", now)
            assert.is_nil(meta)
            assert.matches("^protocol error: reply larger than 1024 bytes", err)
            store.max_reply_size = 65536
            meta = assert(store:read_metadata(name, "a", "s", now))
            local n = 0
            for _ in pairs(meta) do n = n + 1 end
            assert.equal(50, n)
        end)

        it("a value of exactly max_reply_size reads back; one byte more is refused at set", function()
            local store = hiredis.new({ port = h.port, max_reply_size = 1024, pool = h.unique("limit") })
            local exact = string.rep("e", 1024)
            assert.same({ true }, { store:set(name, "exact", exact, 60, os.time()) })
            assert.equal(exact, store:get(name, "exact"))
            r:call("SET", name .. ":over", "before")
            assert.same({ nil, REFUSED_1025 }, { store:set(name, "over", exact .. "x", 60, os.time()) })
            assert.equal("before", r:call("GET", name .. ":over"))  -- untouched
            -- with old_key and metadata (a transaction) too
            assert.same({ nil, REFUSED_1025 },
                        { store:set(name, "over", exact .. "x", 60, os.time(), "exact", 10, h.meta({ "a" }, { "s" })) })
            assert.equal("before", r:call("GET", name .. ":over"))
            assert.is_true(r:call("TTL", name .. ":exact") > 10)  -- old_key not shortened
            -- raised at run time, the same value is accepted and reads back
            store.max_reply_size = 2048
            assert.same({ true }, { store:set(name, "over", exact .. "x", 60, os.time()) })
            assert.equal(exact .. "x", store:get(name, "over"))
        end)

        it("a refused set sends nothing: no connection is even opened", function()
            local store = hiredis.new({ port = h.unused_port(), max_reply_size = 1024 })
            assert.same({ nil, REFUSED_1025 }, { store:set(name, "k", string.rep("x", 1025), 60, os.time()) })
            -- other bad arguments still come first, in argument order
            assert.same({ nil, "invalid key: must be a string" }, { store:set(name, 1, string.rep("x", 1025), 60) })
            assert.same({ nil, "invalid value: must be a string" }, { store:set(name, "k", 1025, 60) })
            -- a value that fits goes on to the (absent) server
            local ok, err = store:set(name, "k", string.rep("x", 1024), 60, os.time())
            assert.is_nil(ok)
            assert.equal("connection refused", err)
        end)

        it("the 512 MiB default stores and reads back a 64 MiB value", function()
            local value = string.rep("0123456789abcdef", 4 * 1024 * 1024)  -- 64 MiB
            local store = hiredis.new({ port = h.port, read_timeout = 30000, send_timeout = 30000 })
            assert.equal(536870912, store.max_reply_size)
            local t0 = socket.gettime()
            assert.same({ true }, { store:set(name, "huge", value, 60, os.time()) })
            local t1 = socket.gettime()
            local got = store:get(name, "huge")
            local t2 = socket.gettime()
            assert.equal(#value, #got)
            assert.is_true(got == value)
            print(string.format("\n64 MiB native: set %.0f ms, get %.0f ms", (t1 - t0) * 1000, (t2 - t1) * 1000))
            r:call("DEL", name .. ":huge")
        end)
    end)

    describe("memory", function()
        -- resident bytes of this process
        local function rss()
            local f = assert(io.open("/proc/self/statm"))
            local _, resident = f:read("*n", "*n")
            f:close()
            return resident * 4096
        end

        local function settled_rss()
            collectgarbage()
            collectgarbage()
            return rss()
        end

        it("a large call, failed or not, keeps none of its memory (native)", function()
            local name = h.unique("mem")
            local store = hiredis.new({ port = h.port, read_timeout = 30000, send_timeout = 30000 })
            assert.same({ true }, { store:set(name, "k", "small", 60, os.time()) })
            local before = settled_rss()
            do
                local value = string.rep("m", 64 * 1024 * 1024)
                assert.same({ true }, { store:set(name, "k", value, 60, os.time()) })
                assert.equal(#value, #store:get(name, "k"))
                -- last, refused after the value was loaded (a bad ttl): nothing trims it later
                assert.same({ nil, "invalid ttl: must be a positive integer" }, { store:set(name, "k", value, -1) })
            end
            local grown = settled_rss() - before
            assert.is_true(grown < 16 * 1024 * 1024, string.format("%.1f MiB kept", grown / 1048576))
            h.raw():call("DEL", name .. ":k")
        end)
    end)

    describe("refused at set on every topology", function()
        it("cluster: before anything is sent, on the native transport", function()
            local store = cluster.new({ nodes = { { ip = "127.0.0.1", port = h.unused_port() } },
                                        max_reply_size = 1024 })
            assert.same({ nil, REFUSED_1025 }, { store:set("n", "k", string.rep("x", 1025), 60, os.time()) })
            assert.same({ nil, REFUSED_1025 },
                        { store:set("n", "k", string.rep("x", 1025), 60, os.time(), nil, nil,
                                    h.meta({ "a" }, { "s" })) })
        end)

        it("cluster: a value of exactly max_reply_size reads back", function()
            if not kit.available then
                pending(kit.skip_reason)
                return
            end
            local store = hiredis.new(kit.config({ max_reply_size = 1024 }))
            local name, exact = h.unique("cl-limit"), string.rep("c", 1024)
            assert.same({ true }, { store:set(name, "k", exact, 60, os.time()) })
            assert.equal(exact, store:get(name, "k"))
            assert.same({ nil, REFUSED_1025 }, { store:set(name, "k", exact .. "x", 60, os.time()) })
            assert.equal(exact, store:get(name, "k"))
        end)

        it("sentinel: the master is never written, a value of exactly max_reply_size reads back", function()
            if not group.available then
                pending(group.why_absent)
                return
            end
            local master = group.wait_stable(30)
            local store = sentinel.new(group.config({ max_reply_size = 1024 }))
            local name, exact = h.unique("se-limit"), string.rep("s", 1024)
            assert.same({ nil, REFUSED_1025 }, { store:set(name, "k", exact .. "x", 60, os.time()) })
            local raw = group.raw_server(master)
            assert.is_nil(raw:call("GET", name .. ":k"))
            assert.same({ true }, { store:set(name, "k", exact, 60, os.time()) })
            assert.equal(exact, store:get(name, "k"))
            raw:close()
        end)
    end)
end)
