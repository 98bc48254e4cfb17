-- delete(name, key, current_time, metadata) and the documented delete(name, key, metadata).
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

local meta = h.meta

describe("delete", function()
    local r, name, store

    before_each(function()
        r = h.raw()
        name = h.unique("del")
        store = hiredis.new({ port = h.port })
    end)

    after_each(function()
        r:close()
        collectgarbage()
    end)

    it("removes the session key and returns exactly true", function()
        assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        local ok, err = store:delete(name, "k", os.time())
        assert.equal(true, ok)
        assert.is_nil(err)
        assert.equal(0, r:call("EXISTS", name .. ":k"))
        assert.is_nil(store:get(name, "k"))
    end)

    it("returns true when the key does not exist", function()
        assert.equal(true, store:delete(name, "never-stored", os.time()))
    end)

    it("uses UNLINK", function()
        local before = h.command_calls(r, "unlink")
        assert.equal(true, store:delete(name, "k", os.time()))
        assert.equal(before + 1, h.command_calls(r, "unlink"))
    end)

    it("removes the key from every metadata zset (current_time form)", function()
        local now = os.time()
        local md = meta({ "a1", "a2" }, { "s1", "s2" })
        assert.equal(true, store:set(name, "k", "v", 600, now, nil, nil, md))
        assert.equal(true, store:set(name, "other", "v", 600, now, nil, nil, md))
        assert.equal(true, store:delete(name, "k", now, md))
        assert.equal(0, r:call("EXISTS", name .. ":k"))
        assert.equal("v", r:call("GET", name .. ":other"))
        assert.same({ other = tostring(now + 600) }, r:zscores(name .. ":a1:s1"))
        assert.same({ other = tostring(now + 600) }, r:zscores(name .. ":a2:s2"))
        assert.same({ other = tostring(now + 600) }, store:read_metadata(name, "a1", "s1", now))
    end)

    it("prunes members whose score is at most current_time - 1", function()
        local now = os.time()
        local mk = name .. ":aud:sub"
        assert.equal(4, r:call("ZADD", mk, now - 50, "old", now - 1, "just-expired", now, "edge", now + 60, "k"))
        assert.equal(true, store:delete(name, "k", now, meta({ "aud" }, { "sub" })))
        assert.same({ edge = tostring(now) }, r:zscores(mk))
    end)

    it("runs the metadata commands in one transaction", function()
        local before = h.command_calls(r, "exec")
        assert.equal(true, store:delete(name, "k", os.time(), meta({ "a", "b" }, { "c", "d" })))
        assert.equal(before + 1, h.command_calls(r, "exec"))
    end)

    it("accepts the documented form delete(name, key, metadata)", function()
        local now = os.time()
        local md = meta({ "aud" }, { "sub" })
        assert.equal(true, store:set(name, "k", "v", 600, now, nil, nil, md))
        assert.equal(true, store:set(name, "keep", "v", 600, now, nil, nil, md))
        local ok, err = store:delete(name, "k", md)
        assert.is_nil(err)
        assert.equal(true, ok)
        assert.equal(0, r:call("EXISTS", name .. ":k"))
        assert.same({ keep = tostring(now + 600) }, r:zscores(name .. ":aud:sub"))
    end)

    it("deletes under prefix and suffix", function()
        local s = hiredis.new({ port = h.port, prefix = "p", suffix = "s" })
        local now = os.time()
        assert.equal(true, s:set(name, "k", "v", 600, now, nil, nil, meta({ "aud" }, { "sub" })))
        assert.equal(1, r:call("EXISTS", "p:" .. name .. ":k:s"))
        assert.equal(true, s:delete(name, "k", now, meta({ "aud" }, { "sub" })))
        assert.equal(0, r:call("EXISTS", "p:" .. name .. ":k:s"))
        assert.equal(0, r:call("EXISTS", "p:" .. name .. ":aud:sub:s"))
    end)

    it("reports WRONGTYPE from a metadata key holding a string", function()
        assert.equal("OK", r:call("SET", name .. ":aud:sub", "x"))
        local ok, err = store:delete(name, "k", os.time(), meta({ "aud" }, { "sub" }))
        assert.is_nil(ok)
        assert.matches("^WRONGTYPE", err)
    end)
end)
