-- The Redis Cluster that spec/support/with-servers.sh starts (`cluster`: 3 masters
-- + 3 replicas, requirepass on every node, ACL user): raw clients per node, who
-- owns a slot, keys that land on a given master, live slot migrations, and node
-- restarts. Independent of the module under test (raw_redis).
local epochs = require "cluster_epochs"
local files = require "files"
local raw = require "raw_redis"
local socket = require "socket"

local _M = {}

local function env(name)
    local v = os.getenv(name)
    if v == "" then return nil end
    return v
end

_M.password = env("HIREDIS_TEST_CLUSTER_PASSWORD")
_M.acl_user = env("HIREDIS_TEST_CLUSTER_ACL_USER")
_M.acl_password = env("HIREDIS_TEST_CLUSTER_ACL_PASSWORD")
_M.dir = env("HIREDIS_TEST_CLUSTER_DIR")
_M.ports = {}
for port in (env("HIREDIS_TEST_CLUSTER_PORTS") or ""):gmatch("%d+") do
    _M.ports[#_M.ports + 1] = tonumber(port)
end
_M.available = #_M.ports == 6 and _M.password ~= nil
_M.skip_reason = "no Redis Cluster (run through spec/support/with-servers.sh with the cluster server)"

function _M.nodes()
    local out = {}
    for i, port in ipairs(_M.ports) do out[i] = { ip = "127.0.0.1", port = port } end
    return out
end

-- The configuration of a storage on this cluster (extra fields merged in).
function _M.config(extra)
    local c = { nodes = _M.nodes(), password = _M.password, connect_timeout = 1000,
                send_timeout = 2000, read_timeout = 2000 }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

function _M.raw(port)
    return assert(raw.connect(port, { password = _M.password, timeout = 5 }))
end

-- Runs one command on node port; returns value, err.
function _M.call(port, ...)
    local r, err = raw.connect(port, { password = _M.password, timeout = 5 })
    if not r then return nil, err end
    local v, cerr = r:call(...)
    r:close()
    return v, cerr
end

function _M.sleep(ms) socket.sleep(ms / 1000) end
function _M.now() return socket.gettime() end

-- A node that answers, and its view: { [slot] = master port }, the masters,
-- and each master's node id.
function _M.view()
    for _, port in ipairs(_M.ports) do
        local slots = _M.call(port, "CLUSTER", "SLOTS")
        if type(slots) == "table" then
            local owner, masters = {}, {}
            for _, range in ipairs(slots) do
                local master = range[3][2]
                masters[master] = range[3][3]
                for s = range[1], range[2] do owner[s] = master end
            end
            return owner, masters
        end
    end
    error("no cluster node answers")
end

function _M.owner(slot)
    local owner = _M.view()
    return owner[slot]
end

-- The live value of a key, read on its master.
function _M.key_call(key, ...)
    local slot = assert(_M.call(_M.ports[1], "CLUSTER", "KEYSLOT", key))
    return _M.call(_M.owner(slot), ...)
end

-- True when a replica's INFO replication says its link is up and no sync runs.
local function synced(info)
    return info and info:find("master_link_status:up", 1, true)
       and info:find("master_sync_in_progress:0", 1, true) and true or false
end

-- nil when the master on port has a replica whose link is up and synced, else why not.
local function replica_problem(port)
    local role, err = _M.call(port, "ROLE")
    if type(role) ~= "table" then return string.format("master %d: ROLE: %s", port, tostring(err)) end
    if role[1] ~= "master" then return string.format("master %d: ROLE says %s", port, tostring(role[1])) end
    local seen = {}
    for _, replica in ipairs(role[3] or {}) do
        local info = _M.call(tonumber(replica[2]), "INFO", "replication")
        if synced(info) and info:find("master_port:" .. port .. "\r", 1, true) then
            return nil
        end
        seen[#seen + 1] = string.format("%s (%s, %s)", tostring(replica[2]),
            info and info:match("master_link_status:%w+") or "no INFO",
            info and info:match("master_port:%d+") or "?")
    end
    return string.format("master %d: no linked, synced replica among [%s]", port, table.concat(seen, ", "))
end

-- One look at the cluster: nil when every node in ports (default: all) says
-- cluster_state:ok and names the same owner for every slot and, with
-- want_replicas, every master also has a linked, synced replica; else why not.
function _M.unstable_reason(ports, want_replicas)
    ports = ports or _M.ports
    local reference, reference_port, masters
    for _, port in ipairs(ports) do
        local info, err = _M.call(port, "CLUSTER", "INFO")
        if not info then return string.format("node %d: CLUSTER INFO: %s", port, tostring(err)) end
        if not info:find("cluster_state:ok", 1, true) then
            return string.format("node %d: %s", port, info:match("cluster_state:%w+") or "no cluster_state")
        end
        local slots, serr = _M.call(port, "CLUSTER", "SLOTS")
        if type(slots) ~= "table" then return string.format("node %d: CLUSTER SLOTS: %s", port, tostring(serr)) end
        local sig, seen = {}, {}
        for _, range in ipairs(slots) do
            sig[#sig + 1] = range[1] .. "-" .. range[2] .. "@" .. range[3][2]
            seen[range[3][2]] = true
        end
        table.sort(sig)
        sig = table.concat(sig, ",")
        if reference and sig ~= reference then
            return string.format("nodes %d and %d disagree on the slots: %s | %s", reference_port, port,
                                 reference, sig)
        end
        reference, reference_port, masters = sig, port, seen
    end
    if want_replicas then
        for port in pairs(masters or {}) do
            local problem = replica_problem(port)
            if problem then return problem end
        end
    end
    return nil
end

-- A node that does not answer: its process as the kernel sees it (state: R running,
-- S sleeping, T stopped...; CPU seconds; where it sleeps), and its threads' stacks
-- when gdb is there: whether the server is stopped, spinning or blocked.
local function process_report(port)
    local found, pid = pcall(_M.pid_of, port)
    if not found then return "process: no pid file" end
    local stat = files.read_file(string.format("/proc/%d/stat", pid))
    if not stat then return string.format("process %d: gone", pid) end
    -- fields after the command's closing parenthesis: state, ..., utime (12th), stime (13th)
    local fields = {}
    for field in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = field end
    local lines = { string.format("process %d: state %s, cpu %.2f s, wchan %s", pid, fields[1],
                                  ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100,
                                  files.read_file(string.format("/proc/%d/wchan", pid)) or "?") }
    if files.sh("command -v gdb >/dev/null 2>&1") then
        lines[#lines + 1] = (files.run(string.format("timeout 20 gdb -p %d -batch -ex 'thread apply all bt' 2>&1 "
                                                     .. "| grep -E '^(Thread|#)' | head -40", pid)))
    end
    return table.concat(lines, "\n")
end

-- What each node says of the cluster (CLUSTER NODES, INFO replication) and the
-- end of its log: written to stderr when the cluster does not settle.
function _M.describe(log_lines)
    local out = {}
    for _, port in ipairs(_M.ports) do
        out[#out + 1] = string.format("--- node %d", port)
        local nodes, err = _M.call(port, "CLUSTER", "NODES")
        out[#out + 1] = type(nodes) == "string" and nodes or ("CLUSTER NODES: " .. tostring(err))
        if type(nodes) ~= "string" then out[#out + 1] = process_report(port) end
        local repl = _M.call(port, "INFO", "replication")
        if type(repl) == "string" then
            out[#out + 1] = (repl:gsub("\r\n", " "):gsub("slave_read_repl_offset[^ ]*", ""))
        end
        local f = _M.dir and io.open(string.format("%s/%d.log", _M.dir, port))
        if f then
            local lines = {}
            for line in f:lines() do
                lines[#lines + 1] = line
                if #lines > (log_lines or 25) then table.remove(lines, 1) end
            end
            f:close()
            out[#out + 1] = table.concat(lines, "\n")
        end
    end
    return table.concat(out, "\n")
end

-- Polls unstable_reason: true, or false and the last reason after timeout_ms
-- (default 10 s), having written describe() to stderr.
function _M.wait_stable(timeout_ms, ports, want_replicas)
    local stable, reason = epochs.poll(function() return _M.unstable_reason(ports, want_replicas) end, timeout_ms)
    if stable then return true end
    io.stderr:write(string.format("\n[cluster_kit] not stable within %d ms: %s\n%s\n", timeout_ms or 10000,
                                  reason, _M.describe()))
    return false, reason
end

-- The pid of the node on port (its pid file).
function _M.pid_of(port)
    local f = assert(io.open(string.format("%s/%d.pid", _M.dir, port)))
    local pid = assert(f:read("*n"))
    f:close()
    return pid
end

-- Moves slot from master `from` to master `to` the way redis-cli --cluster
-- reshard does: IMPORTING/MIGRATING, MIGRATE of every key, then SETSLOT NODE
-- on both and on every other master, once the nodes agree on the epochs
-- (spec/support/cluster_epochs.lua says why).
function _M.migrate_begin(slot, from, to)
    local _, masters = _M.view()
    assert(_M.call(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", masters[from]))
    assert(_M.call(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", masters[to]))
end

function _M.migrate_keys(slot, from, to)
    local keys = assert(_M.call(from, "CLUSTER", "GETKEYSINSLOT", slot, 1000))
    for _, key in ipairs(keys) do
        -- MIGRATE host port "" 0 timeout AUTH password KEYS key (no REPLACE: BUSYKEY must not happen)
        assert(_M.call(from, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "AUTH", _M.password, "KEYS", key))
    end
    return #keys
end

function _M.migrate_end(slot, from, to)
    assert(epochs.wait_settled(_M.ports, _M.call))
    local _, masters = _M.view()
    local target_id = masters[to]
    assert(_M.call(to, "CLUSTER", "SETSLOT", slot, "NODE", target_id))
    assert(_M.call(from, "CLUSTER", "SETSLOT", slot, "NODE", target_id))
    for port in pairs(masters) do
        if port ~= from and port ~= to then _M.call(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id) end
    end
    -- The replicas learn the new owner from the target's pings alone: until they
    -- have, a bump of the source's epoch (the next migration) would outrank the
    -- target's claim for good.
    assert(_M.wait_owner(slot, to))
end

-- The master that node `asked` says serves slot.
local function owner_seen_by(asked, slot)
    local slots = _M.call(asked, "CLUSTER", "SLOTS")
    for _, range in ipairs(type(slots) == "table" and slots or {}) do
        if range[1] <= slot and slot <= range[2] then return range[3][2] end
    end
end

-- Waits until every node says slot belongs to port: true, or false and what
-- the nodes that disagree say after timeout_ms (default 10 s).
function _M.wait_owner(slot, port, timeout_ms)
    return epochs.poll(function()
        local seen = {}
        for _, asked in ipairs(_M.ports) do
            local owner = owner_seen_by(asked, slot)
            if owner ~= port then seen[#seen + 1] = string.format("%d says %s", asked, tostring(owner)) end
        end
        if #seen > 0 then
            return string.format("slot %d is not %d's on every node: %s", slot, port, table.concat(seen, ", "))
        end
    end, timeout_ms)
end

function _M.move_slot(slot, from, to)
    _M.migrate_begin(slot, from, to)
    _M.migrate_keys(slot, from, to)
    _M.migrate_end(slot, from, to)
end

-- Another master than port.
function _M.other_master(port)
    local _, masters = _M.view()
    for p in pairs(masters) do
        if p ~= port then return p end
    end
end

-- A replica of master port that is connected and in sync (waits up to 10 s:
-- after a failover the old master takes a moment to follow the new one).
function _M.replica_of(port)
    local deadline = _M.now() + 10
    repeat
        local role = _M.call(port, "ROLE")
        if type(role) == "table" and role[1] == "master" then
            for _, replica in ipairs(role[3] or {}) do
                local p = tonumber(replica[2])
                local info = tonumber(replica[3]) and tonumber(replica[3]) > 0 and _M.call(p, "INFO", "replication")
                if synced(info) then
                    return p
                end
            end
        end
        _M.sleep(100)
    until _M.now() > deadline
end

-- CLUSTER FAILOVER on replica until it is a master (a manual failover gives up
-- after 5 s when the master does not answer in time: asked again, up to 3 times).
function _M.manual_failover(replica)
    for _ = 1, 3 do
        assert(_M.call(replica, "CLUSTER", "FAILOVER"))
        local deadline = _M.now() + 6
        repeat
            local role = _M.call(replica, "ROLE")
            if type(role) == "table" and role[1] == "master" then return true end
            _M.sleep(50)
        until _M.now() > deadline
    end
    return false
end

-- Starts a stopped node again (daemonized: its pid file lets with-servers.sh
-- stop it at the end).
function _M.restart(port)
    return os.execute(string.format("redis-server %s/%d.conf --daemonize yes >/dev/null 2>&1", _M.dir, port))
end

-- A node that timed out may be a stalled master: when it wakes it answers what
-- waited in its socket before it learns of its replica's promotion. Its next
-- batch is a lone PING; while it stays stalled, no command of a call is sent to
-- it. set_get(value) sets then gets the session key `key` (prefix `prefix`) with
-- a 200 ms read_timeout, returning { { set's results }, { get's results } }.
function _M.stalled_node_probe(set_get, prefix, key)
    local core = require "resty.session.hiredis.core"
    local assert = require "luassert"
    local stored = prefix .. ":session:" .. key
    local owner = _M.owner(core.key_slot(stored))
    assert.same({ { true }, { "v1" } }, set_get("v1"))
    local pid = _M.pid_of(owner)
    local stopped = os.execute("kill -STOP " .. pid)
    assert.is_true(stopped == 0 or stopped == true, "kill -STOP " .. pid)
    -- 4 calls of 200 ms while stalled: far below cluster-node-timeout (2000)
    local ok, err = pcall(function()
        -- the set's write waits in the socket; the get's PING times out
        assert.same({ { nil, "timeout" }, { nil, "timeout" } }, set_get("v2"))
        -- still suspect: neither call sends its command
        assert.same({ { nil, "timeout" }, { nil, "timeout" } }, set_get("v3"))
    end)
    os.execute("kill -CONT " .. pid)
    if not ok then error(err, 0) end
    -- v2 was sent before the timeout made the node suspect; v3 never was
    assert.equal("v2", _M.call(owner, "GET", stored))
    assert.same({ { true }, { "v4" } }, set_get("v4"))
    assert.equal("v4", _M.call(owner, "GET", stored))
end

return _M
