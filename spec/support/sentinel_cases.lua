-- Sentinel routing cases that both transports run (spec/sentinel_spec.lua natively,
-- spec/nginx/sentinel_spec.lua over cosockets), against the group of
-- with-sentinels.sh and fake sentinels (spec/support/fake_server.lua) whose answers
-- a case sets. Each case takes open(cfg): a storage on cfg, kept across the calls
-- of that one storage, as a function set_get(name, key, value) returning
-- { { set's results }, { get's results } } (the same `name` reads and writes
-- one session).
local h = require "helpers"
local group = require "sentinel_group"
local raw = require "raw_redis"
local assert = require "luassert"
local sd = require "stats_delta"

local _M = {}

-- Counts the connections the server on `port` accepts from now on (over a
-- connection of its own, opened once); close() when done.
function _M.connection_counter(port)
    local r = group.raw_server(port)
    local function received()
        return tonumber(assert(r:info("stats")).total_connections_received)
    end
    local base = received()
    return function() return received() - base end, function() r:close() end
end

-- What the fake sentinel on fake_port answers from now on: `named` as master at
-- `epoch`, `promoted` as the replica its failover promotes (optional).
function _M.set_answer(fake_port, named, epoch, promoted)
    local c = assert(raw.connect(fake_port))
    assert.equal("OK", c:call("SENTINEL", "SET-ANSWER", named, epoch, promoted))
    c:close()
end
local set_answer = _M.set_answer

-- The results of set (with metadata), get, read_metadata, delete, then get again,
-- of one session "k" = "v" under audience "aud" and subject "sub", as the TLS
-- sentinel specs collect them ({ set = { results }, get = ..., listed, deleted, gone }).
function _M.assert_every_method(out)
    assert.same({ true }, out.set)
    assert.same({ "v" }, out.get)
    assert.is_table(out.listed[1])
    assert.is_string(out.listed[1].k)
    assert.same({ true }, out.deleted)
    assert.same({}, out.gone)
end

local function fake(port)
    return { host = "127.0.0.1", port = port }
end

-- The answer with the highest config-epoch is followed whatever the order of
-- the sentinels; the older one (the replica) never gets a connection.
function _M.highest_epoch(open, tag)
    local master = group.wait_stable(30, true)
    local replica = group.replica_port()
    -- a sentinel still naming the old master (now a replica) at an older epoch
    local behind, stop_behind = h.fake_server("sentinel:" .. replica .. ":41")
    local ahead, stop_ahead = h.fake_server("sentinel:" .. master .. ":42")
    local orders = { { fake(behind), fake(ahead) }, { fake(ahead), fake(behind) } }
    local name = h.unique(tag .. "epoch")
    local replica_connections, done = _M.connection_counter(replica)
    for i, list in ipairs(orders) do
        local set_get = open(group.config({ sentinels = list }))
        assert.same({ { true }, { "v" .. i } }, set_get(name, "k" .. i, "v" .. i))
    end
    stop_behind()
    stop_ahead()
    assert.equal(0, replica_connections())
    done()
    local r = group.raw_server(master)
    assert.equal("v1", r:call("GET", name .. ":k1"))
    assert.equal("v2", r:call("GET", name .. ":k2"))
    r:close()
end

-- During a failover the old master is used until a replica is picked; once the
-- leader names a promoted replica that is not master yet, writes fail and
-- nothing is written.
function _M.promoted_replica(open, tag)
    local master = group.wait_stable(30, true)
    local replica = group.replica_port()
    -- the leader of a failover from `replica` (as if it were the master) to `master`
    local leader, stop_leader = h.fake_server("sentinel:" .. replica .. ":50")
    set_answer(leader, replica, 50, master)
    -- a sentinel that has not heard of it, at the same epoch
    local follower, stop_follower = h.fake_server("sentinel:" .. replica .. ":50")
    local list = { fake(follower), fake(leader) }
    local name = h.unique(tag .. "promoted")
    local replica_connections, done = _M.connection_counter(replica)
    assert.same({ { true }, { "v" } }, open(group.config({ sentinels = list }))(name, "k", "v"))
    assert.equal(0, replica_connections(), "the master both still name was left alone")
    done()
    -- the promoted replica has not taken over yet: an error, nothing written
    set_answer(leader, master, 51, replica)
    set_answer(follower, master, 51)
    local res = open(group.config({ sentinels = list }))(name, "k2", "v")
    assert.same({ nil, "failover in progress: the promoted replica is not master yet" }, res[1])
    local r = group.raw_server(master)
    assert.equal("v", r:call("GET", name .. ":k"))
    assert.equal(0, r:call("EXISTS", name .. ":k2"))
    r:close()
    stop_leader()
    stop_follower()
end

-- Connections pooled for an address the sentinels stopped naming are never
-- used again: a new connection (whose handshake checks ROLE) serves it. stats():
-- the stats() table of the process that runs the calls; the master's moves and
-- the refused role are counted there.
function _M.demoted_pool(open, tag, stats)
    local master = group.wait_stable(30, true)
    local replica = group.replica_port()
    local fake_port, stop = h.fake_server("sentinel:" .. master .. ":1")
    local set_get = open(group.config({ sentinels = { fake(fake_port) } }))
    local name = h.unique(tag .. "demoted")
    assert.same({ { true }, { "v1" } }, set_get(name, "k", "v1"))
    local master_connections, done = _M.connection_counter(master)
    assert.same({ { true }, { "v2" } }, set_get(name, "k", "v2"))
    assert.equal(0, master_connections(), "the pooled connection serves the same master")
    -- the sentinel names another server (here a replica: ROLE refuses it)
    set_answer(fake_port, replica, 2)
    local before = stats()
    assert.same({ { nil, "role mismatch: expected master, got slave" },
                  { nil, "role mismatch: expected master, got slave" } }, set_get(name, "k", "v"))
    local d = sd.changed(before, stats())
    -- each call asks again once after the refusal: 2 lookups and 2 refusals per call
    assert.same({ ["sentinel.lookups"] = 4, ["sentinel.role_mismatches"] = 4, ["sentinel.master_changes"] = 1,
                  ["set.calls"] = 1, ["set.errors"] = 1, ["set.latency"] = 1,
                  ["get.calls"] = 1, ["get.errors"] = 1, ["get.latency"] = 1,
                  ["errors.server"] = 2,
                  -- each refused server on a new connection, refused in its handshake
                  ["connections.opened"] = 4, ["connections.failed"] = 4 },
                d)
    -- and the first one again: its pooled connection is not reused, a new one checks ROLE
    set_answer(fake_port, master, 3)
    before = stats()
    assert.same({ { true }, { "v3" } }, set_get(name, "k", "v3"))
    d = sd.delta(before, stats())
    assert.equal(1, d["sentinel.master_changes"])
    assert.equal(2, d["sentinel.lookups"])
    assert.equal(0, d["sentinel.role_mismatches"])
    stop()
    assert.equal(1, master_connections())
    done()
    local r = group.raw_server(master)
    assert.equal("v3", r:call("GET", name .. ":k"))
    r:close()
end

-- A server that timed out may be a stalled master: when it wakes it answers what
-- waited in its socket before the sentinels demote it. The next call sends it a
-- lone PING and routes by a lookup begun after the answer; while it stays
-- stalled, no write is sent to it at all.
function _M.stalled_server_probe(open, tag, stats)
    local master = group.wait_stable(30, true)
    local fake_port, stop = h.fake_server("sentinel:" .. master .. ":1")
    -- 4 calls of 200 ms while stalled: far below down-after-milliseconds (2000)
    local set_get = open(group.config({ sentinels = { fake(fake_port) }, read_timeout = 200 }))
    local name = h.unique(tag .. "stalled")
    assert.same({ { true }, { "v1" } }, set_get(name, "k", "v1"))
    local pid = group.pid_of(master)
    local stopped = os.execute("kill -STOP " .. pid)
    assert.is_true(stopped == 0 or stopped == true, "kill -STOP " .. pid)
    local ok, err = pcall(function()
        local before = stats()
        -- the set's write waits in the socket; its get finds the server suspect: the PING times out
        assert.same({ { nil, "timeout" }, { nil, "timeout" } }, set_get(name, "k", "v2"))
        -- the server is still suspect: neither call sends its command
        assert.same({ { nil, "timeout" }, { nil, "timeout" } }, set_get(name, "k", "v3"))
        local d = sd.delta(before, stats())
        assert.equal(4, d["sentinel.lookups"], "one lookup per call: no second lookup without an answer")
    end)
    os.execute("kill -CONT " .. pid)
    if not ok then
        stop()
        error(err, 0)
    end
    local r = group.raw_server(master)
    -- v2 was sent before the timeout made the server suspect; v3 never was
    assert.equal("v2", r:call("GET", name .. ":k"))
    r:close()
    local before = stats()
    assert.same({ { true }, { "v4" } }, set_get(name, "k", "v4"))
    local d = sd.delta(before, stats())
    -- the set: the PING answered, then a second lookup; the get: one
    assert.equal(3, d["sentinel.lookups"])
    before = stats()
    assert.same({ { true }, { "v5" } }, set_get(name, "k", "v5"))
    assert.equal(2, sd.delta(before, stats())["sentinel.lookups"], "answered: no probe any more")
    stop()
end

return _M
