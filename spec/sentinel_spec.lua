-- resty.session.hiredis.sentinel over the native transport, against the sentinel
-- group of spec/support/with-sentinels.sh (1 master, 1 replica, 3 sentinels):
-- routing, layout, invalid master name, credentials kept apart, ROLE refusal,
-- a hung first sentinel, replicas, sentinel_cache_ttl. Failovers under writers:
-- spec/sentinel/failover_spec.lua.
local h = require "helpers"
local group = require "sentinel_group"
local socket = require "socket"
local cases = require "sentinel_cases"

local hiredis = require "resty.session.hiredis"
local sentinel = require "resty.session.hiredis.sentinel"

if not group.available then
    describe("sentinel (native)", function()
        pending(group.why_absent)
    end)
    return
end

local function meta()
    return h.meta({ "aud" }, { "sub" })
end

describe("sentinel (native)", function()
    it("is what resty.session.hiredis.new gives for `sentinels`, with upstream's fields", function()
        local s = hiredis.new(group.config({ prefix = "p" }))
        assert.equal("mymaster", s.master)
        assert.equal("master", s.role)
        assert.equal("p", s.prefix)
        assert.equal(0, s.sentinel_cache_ttl)
        assert.is_true(s.sentinel_watch)
        assert.is_false(hiredis.new(group.config({ sentinel_watch = false })).sentinel_watch)
        assert.equal(#group.sentinel_ports, #s.sentinels)
        assert.has_error(function() s.prefix = "q" end, "attempt to update a read-only table")
        -- nodes route elsewhere (cluster); sentinels alone route here
        assert.equal(sentinel.new(group.config()).master, s.master)
    end)

    it("rejects configurations that cannot work at new()", function()
        assert.has_error(function() sentinel.new({ sentinels = {} }) end,
            "invalid sentinels: must be a non-empty array of { host = ..., port = ... }")
        assert.has_error(function() sentinel.new({ sentinels = { { port = 0 } } }) end,
            "invalid sentinels[1].port: must be an integer from 1 to 65535")
        assert.has_error(function() sentinel.new(group.config({ role = "replica" })) end,
            'invalid role: must be "master" or "slave"')
        assert.has_error(function() sentinel.new(group.config({ master = "" })) end,
            "invalid master: must be a non-empty string")
        assert.has_error(function() sentinel.new(group.config({ connect_timeout = -1 })) end,
            "invalid connect_timeout: must be a number of milliseconds from 0 to 2147483647 (0: the default)")
        assert.has_error(function() sentinel.new(group.config({ sentinel_cache_ttl = -1 })) end,
            "invalid sentinel_cache_ttl: must be a non-negative number of seconds")
        assert.has_error(function() sentinel.new(group.config({ sentinel_watch = "yes" })) end,
            "invalid sentinel_watch: must be a boolean")
        -- numeric strings, as configurations from environment variables have them
        assert.equal(26379, sentinel.new({ sentinels = { { port = "26379" } } }).sentinels[1].port)
    end)

    it("stores sessions on the master with the single node's layout and results", function()
        local master = group.wait_stable(30)
        local s = hiredis.new(group.config({ prefix = "sp" }))
        local name = h.unique("layout")
        local now = os.time()
        assert.same({ true }, { s:set(name, "k1", "v1", 100, now) })
        assert.same({ true }, { s:set(name, "k2", "v2", 200, now, "k1", 10, meta()) })
        assert.same({ "v2" }, { s:get(name, "k2") })
        assert.same({ [1] = nil }, { s:get(name, "missing") })
        assert.same({ { k2 = tostring(now + 200) } }, { s:read_metadata(name, "aud", "sub", now) })
        local r = group.raw_server(master)
        assert.equal("v2", r:call("GET", "sp:" .. name .. ":k2"))
        local ttl = r:call("TTL", "sp:" .. name .. ":k1")
        assert.is_true(ttl > 0 and ttl <= 10)
        assert.equal(tostring(now + 200), r:call("ZSCORE", "sp:" .. name .. ":aud:sub", "k2"))
        assert.same({ true }, { s:delete(name, "k2", now, meta()) })
        assert.equal(0, r:call("EXISTS", "sp:" .. name .. ":k2"))
        r:close()
        local bad = s:set(name, "k3", 42, 100, now)
        assert.is_nil(bad)
    end)

    it("refuses bad arguments before it asks any sentinel", function()
        local listener, port = h.silent_listener()
        listener:settimeout(0)
        local s = sentinel.new(group.config({ sentinels = { { host = "127.0.0.1", port = port } },
                                              max_reply_size = 1024 }))
        assert.same({ nil, "invalid ttl: must be a positive integer" }, { s:set("n", "k", "v", 0, os.time()) })
        assert.same({ nil, "invalid value: 2000 bytes exceed max_reply_size (1024 bytes)" },
                    { s:set("n", "k", string.rep("x", 2000), 60, os.time()) })
        local ok, err = s:get("n", {})
        assert.is_nil(ok)
        assert.matches("^invalid key: ", err)
        assert.is_nil(listener:accept())  -- nobody connected
        listener:close()
    end)

    it("answers `invalid master name` for a name no sentinel monitors", function()
        local s = sentinel.new(group.config({ master = "no-such-master" }))
        assert.same({ nil, "invalid master name" }, { s:get("n", "k") })
    end)

    it("keeps sentinel and master credentials apart", function()
        local master = group.wait_stable(30)
        local r = group.raw_server(master)
        assert(r:call("CONFIG", "RESETSTAT"))
        local s = sentinel.new(group.config())
        assert.same({ true }, { s:set(h.unique("auth"), "k", "v", 60, os.time()) })
        -- the sentinel password never reached the master (it would be a WRONGPASS there)
        local errors = assert(r:info("errorstats"))
        assert.is_nil(errors.errorstat_WRONGPASS)
        r:close()
        -- each side refuses the other's password: both are needed, each in its place
        local swapped = sentinel.new(group.config({
            sentinel_password = group.password, password = group.sentinel_password,
        }))
        local ok, err = swapped:get("n", "k")
        assert.is_nil(ok)
        assert.matches("WRONGPASS", err)
        local wrong_master = sentinel.new(group.config({ password = "wrong" }))
        ok, err = wrong_master:get("n", "k")
        assert.is_nil(ok)
        assert.matches("^WRONGPASS", err)
        -- per-sentinel credentials win over sentinel_password
        local list = group.sentinels()
        for _, entry in ipairs(list) do entry.password = group.sentinel_password end
        local per_entry = sentinel.new(group.config({ sentinels = list, sentinel_password = "wrong" }))
        assert.same({ true }, { per_entry:set(h.unique("entry"), "k", "v", 60, os.time()) })
    end)

    it("never hands its authenticated connections to another configuration's custom pool", function()
        local master = group.wait_stable(30)
        local name = h.unique("pool")
        local s = sentinel.new(group.config({ pool = "shared" }))
        assert.is_true(s:set(name, "k", "v", 60, os.time()))
        -- same pool name, same server, no password: must not get an authenticated connection
        local other = hiredis.new({ port = master, pool = "shared", connect_timeout = 1000 })
        local ok, err = other:get(name, "k")
        assert.is_nil(ok)
        assert.matches("^NOAUTH", err)
        assert.equal("v", s:get(name, "k"))
    end)

    it("refuses a server in another role (ROLE in the handshake)", function()
        group.wait_stable(30, true)
        local replica = group.replica_port()
        -- a stale configuration pointing at what is now a replica
        local stale = hiredis.new({ port = replica, password = group.password, role = "master",
                                    connect_timeout = 1000 })
        assert.same({ nil, "role mismatch: expected master, got slave" }, { stale:get("n", "k") })
        -- the replica's dataset was not written
        assert.same({ nil, "role mismatch: expected master, got slave" },
                    { stale:set("n", h.unique("k"), "v", 60, os.time()) })
        local ok = hiredis.new({ port = replica, password = group.password, role = "slave" })
        assert.same({ [1] = nil }, { ok:get("n", "missing") })
    end)

    it("refuses a replica named by a stale sentinel and asks the next one", function()
        local master = group.wait_stable(30, true)
        local replica = group.replica_port()
        local liar, stop = h.fake_server("sentinel:" .. replica)
        local list = group.sentinels()
        table.insert(list, 1, { host = "127.0.0.1", port = liar })
        local s = sentinel.new(group.config({ sentinels = list }))
        local name = h.unique("stale")
        -- with the liar alone the replica is refused, twice (the retry asks it again)
        local alone = sentinel.new(group.config({ sentinels = { list[1] } }))
        assert.same({ nil, "role mismatch: expected master, got slave" },
                    { alone:set(name, "k", "v", 60, os.time()) })
        local ok, err = s:set(name, "k", "v", 60, os.time())
        stop()
        assert.is_nil(err)
        assert.is_true(ok)
        local r = group.raw_server(master)
        assert.equal("v", r:call("GET", name .. ":k"))
        r:close()
        -- later calls go to the sentinels that tell the truth first
        assert.equal("v", s:get(name, "k"))
    end)

    it("reads from a healthy replica with role = \"slave\"", function()
        local master = group.wait_stable(30, true)
        local name = h.unique("replica")
        assert.is_true(sentinel.new(group.config()):set(name, "k", "v", 60, os.time()))
        local r = group.raw_server(master)
        r:call("WAIT", 1, 2000)
        r:close()
        local s = sentinel.new(group.config({ role = "slave" }))
        assert.equal("v", s:get(name, "k"))
        local ok, err = s:set(name, "k", "w", 60, os.time())
        assert.is_nil(ok)
        assert.matches("^READONLY", err)
    end)

    it("moves a hung first sentinel out of the way after one call", function()
        -- accepts connections (the kernel's backlog) and never answers
        local hung = assert(socket.bind("127.0.0.1", 0, 16))
        local _, hung_port = hung:getsockname()
        hung:settimeout(0)
        local list = group.sentinels()
        table.insert(list, 1, { host = "127.0.0.1", port = hung_port })
        local s = sentinel.new(group.config({ sentinels = list, read_timeout = 300 }))
        local name = h.unique("hung")
        assert.is_true(s:set(name, "k", "v", 60, os.time()))
        for _ = 1, 5 do
            assert.equal("v", s:get(name, "k"))
        end
        local connections = 0
        while hung:accept() do connections = connections + 1 end
        hung:close()
        assert.equal(1, connections)
    end)

    it("with sentinel_cache_ttl reuses the address; without, asks on every call", function()
        local master = group.wait_stable(30)
        -- a sentinel (fake, naming the real master) that goes away after the first call
        local port, stop = h.fake_server("sentinel:" .. master)
        local list = { { host = "127.0.0.1", port = port } }
        local cached = sentinel.new(group.config({ sentinels = list, sentinel_cache_ttl = 60 }))
        local uncached = sentinel.new(group.config({ sentinels = list }))
        assert.same({ [1] = nil }, { cached:get("n", "missing") })
        assert.same({ [1] = nil }, { uncached:get("n", "missing") })
        stop()
        h.wait_until(function()
            local probe = socket.tcp()
            probe:settimeout(0.2)
            local connected = probe:connect("127.0.0.1", port)
            probe:close()
            return not connected
        end, 5000)
        for _ = 1, 3 do
            assert.same({ [1] = nil }, { cached:get("n", "missing") })
        end
        local ok, err = uncached:get("n", "missing")
        assert.is_nil(ok)
        assert.matches("^no hosts available: ", err)
    end)

    -- one storage on cfg, as the cases of spec/support/sentinel_cases.lua use it
    local function open(cfg)
        local s = sentinel.new(cfg)
        return function(name, key, value)
            return { { s:set(name, key, value, 60, os.time()) }, { s:get(name, key) } }
        end
    end

    it("follows the sentinel with the highest config-epoch, whatever the order", function()
        cases.highest_epoch(open, "")
    end)

    it("during a failover, writes go to the promoted replica once it is master, fail before", function()
        cases.promoted_replica(open, "")
    end)

    it("sends a server that timed out a lone PING, and writes only after a lookup that follows its answer", function()
        cases.stalled_server_probe(open, "", hiredis.stats)
    end)


    it("asks the sentinels in parallel: one slow to answer does not add up", function()
        group.wait_stable(30)
        local s = sentinel.new(group.config({ read_timeout = 2000 }))
        assert.same({ [1] = nil }, { s:get("n", "missing") })
        local started = socket.gettime()
        for _ = 1, 20 do
            assert.same({ [1] = nil }, { s:get("n", "missing") })
        end
        -- three sentinels asked per call, on pooled connections
        assert.is_true(socket.gettime() - started < 1)
    end)

    it("never reuses connections pooled for an address the sentinels stopped naming", function()
        cases.demoted_pool(open, "", require("resty.session.hiredis").stats)
    end)

    it("a hung sentinel costs its timeout once; its retries are bounded by the others' answers", function()
        group.wait_stable(30)
        local hung = assert(socket.bind("127.0.0.1", 0, 64))
        local _, hung_port = hung:getsockname()
        hung:settimeout(0)
        local list = group.sentinels()
        table.insert(list, 2, { host = "127.0.0.1", port = hung_port })
        local s = sentinel.new(group.config({ sentinels = list, read_timeout = 600 }))
        local started = socket.gettime()
        assert.same({ [1] = nil }, { s:get("n", "missing") })
        assert.is_true(socket.gettime() - started >= 0.6, "the first call waited for it")
        -- until it is retried (2 s later), it is not asked; then the retry waits
        -- only a few milliseconds past the others' answers, not its read_timeout
        local accepted, slowest = 1, 0
        assert(hung:accept())
        assert.is_true(h.wait_until(function()
            local t = socket.gettime()
            assert.same({ [1] = nil }, { s:get("n", "missing") })
            slowest = math.max(slowest, socket.gettime() - t)
            while hung:accept() do accepted = accepted + 1 end
            return accepted == 2
        end, 5000), "never retried")
        hung:close()
        assert.is_true(slowest < 0.3, "a call took " .. slowest .. " s")
    end)

    it("a sentinel that refuses connections is skipped, and asked again once all others fail", function()
        group.wait_stable(30)
        local dead = assert(socket.bind("127.0.0.1", 0))
        local _, dead_port = dead:getsockname()
        dead:close()
        local list = group.sentinels()
        table.insert(list, 1, { host = "127.0.0.1", port = dead_port })
        local s = sentinel.new(group.config({ sentinels = list }))
        assert.same({ [1] = nil }, { s:get("n", "missing") })
        local alone = sentinel.new(group.config({ sentinels = { list[1] } }))
        for _ = 1, 3 do
            -- benched, but the only one: asked each time, its own error each time
            assert.same({ nil, "no hosts available: connection refused" }, { alone:get("n", "missing") })
        end
    end)
end)
