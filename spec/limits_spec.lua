-- Reply limits enforced at the header (native transport): a bulk length, an
-- element count or a nesting depth past the limits fails the call at once with
-- "protocol error: ..." and closes the connection, without buffering toward it.
-- max_reply_size (32 MiB by default) raises or lowers the ceiling.
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

describe("reply limits", function()
    after_each(function()
        collectgarbage()
    end)

    for _, case in ipairs({
        { mode = "huge_bulk",
          err = "protocol error: reply larger than 33554432 bytes (a bulk string of 999999999999 bytes)" },
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

        it("counts the whole reply: a metadata set past it fails", function()
            local store = hiredis.new({ port = h.port, max_reply_size = 1024 })
            local now = os.time()
            for i = 1, 40 do
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
            assert.equal(40, n)
        end)

        it("the 32 MiB default refuses a 40 MiB value; raised, the value reads back", function()
            local value = string.rep("0123456789abcdef", 40 * 65536)  -- 40 MiB
            local store = hiredis.new({ port = h.port })
            assert.equal(true, store:set(name, "huge", value, 60, os.time()))  -- requests are not limited
            local got, err = store:get(name, "huge")
            assert.is_nil(got)
            assert.equal("protocol error: reply larger than 33554432 bytes (a bulk string of 41943040 bytes)", err)
            store.max_reply_size = 64 * 1024 * 1024
            got = store:get(name, "huge")
            assert.equal(#value, #got)
            assert.is_true(got == value)
            r:call("DEL", name .. ":huge")
        end)
    end)
end)
