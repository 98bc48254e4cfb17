-- The sentinel group of spec/support/with-sentinels.sh, for the specs: its
-- configuration for the module, raw clients on sentinels and servers, and
-- topology changes (forced failover, killed master, restart).
local socket = require "socket"
local raw = require "raw_redis"

local _M = {}

local ports = os.getenv("HIREDIS_SENTINEL_PORTS")
_M.available = ports ~= nil and ports ~= ""
_M.why_absent = "no sentinel group (HIREDIS_SENTINEL_PORTS unset): run through "
    .. "spec/support/with-sentinels.sh (make test does)"
if not _M.available then
    return _M
end

_M.sentinel_ports = {}
for p in ports:gmatch("%d+") do
    _M.sentinel_ports[#_M.sentinel_ports + 1] = tonumber(p)
end
_M.sentinel_password = os.getenv("HIREDIS_SENTINEL_PASSWORD")
_M.password = os.getenv("HIREDIS_SENTINEL_MASTER_PASSWORD")
_M.dir = os.getenv("HIREDIS_SENTINEL_DIR")
local data_ports = {}
for p in os.getenv("HIREDIS_SENTINEL_DATA_PORTS"):gmatch("%d+") do
    data_ports[#data_ports + 1] = tonumber(p)
end
_M.data_ports = data_ports  -- { master as started, replica as started }

function _M.sentinels()
    local list = {}
    for i, p in ipairs(_M.sentinel_ports) do
        list[i] = { host = "127.0.0.1", port = p }
    end
    return list
end

-- The module's configuration for the group, with overrides.
function _M.config(extra)
    local conf = {
        sentinels = _M.sentinels(),
        sentinel_password = _M.sentinel_password,
        password = _M.password,
        connect_timeout = 1000,
        send_timeout = 1000,
        read_timeout = 1000,
    }
    for k, v in pairs(extra or {}) do
        conf[k] = v
    end
    return conf
end

-- The TLS-only group ("tlsmaster") and the group's sentinels' TLS ports (see
-- with-sentinels.sh), when with-servers.sh made the test certificates.
local function port_list(text)
    local list = {}
    for p in (text or ""):gmatch("%d+") do
        list[#list + 1] = { host = "127.0.0.1", port = tonumber(p) }
    end
    return list
end
_M.tls = {
    sentinels = port_list(os.getenv("HIREDIS_SENTINEL_TLS_PORTS")),
    mixed_sentinels = port_list(os.getenv("HIREDIS_SENTINEL_MIXED_TLS_PORTS")),
    data = port_list(os.getenv("HIREDIS_SENTINEL_TLS_DATA_PORTS")),
    ca = os.getenv("HIREDIS_SENTINEL_TLS_CA"),
    certs = os.getenv("HIREDIS_TEST_CERTS"),
}
_M.tls.available = #_M.tls.sentinels > 0
_M.tls.why_absent = "no TLS sentinel group (HIREDIS_SENTINEL_TLS_PORTS unset): run with-sentinels.sh under "
    .. "with-servers.sh with a TLS server (make test does)"

-- The module's configuration for the TLS-only group: TLS everywhere, verified
-- with the tests' CA (native transport; nginx has lua_ssl_trusted_certificate).
function _M.tls.config(extra)
    local conf = _M.config({
        master = "tlsmaster",
        sentinels = _M.tls.sentinels,
        ssl = true,
        ssl_verify = true,
        ssl_trusted_certificate = _M.tls.ca,
    })
    for k, v in pairs(extra or {}) do
        conf[k] = v
    end
    return conf
end

function _M.raw_sentinel(i)
    return assert(raw.connect(_M.sentinel_ports[i or 1], { password = _M.sentinel_password }))
end

function _M.raw_server(port)
    return assert(raw.connect(port, { password = _M.password }))
end

-- The master's port as the first sentinel sees it.
function _M.master_port()
    local s = _M.raw_sentinel(1)
    local addr = assert(s:call("SENTINEL", "get-master-addr-by-name", "mymaster"))
    s:close()
    return tonumber(addr[2])
end

function _M.replica_port()
    local master = _M.master_port()
    return data_ports[1] == master and data_ports[2] or data_ports[1]
end

-- Config file name of the server on port.
function _M.name_of(port)
    return port == data_ports[1] and "master" or "replica"
end

-- The fields of a SENTINEL REPLICAS / SENTINEL MASTERS entry as a table.
local function fields(entry)
    local out = {}
    for i = 1, #entry - 1, 2 do out[entry[i]] = entry[i + 1] end
    return out
end

local BAD_FLAGS = { s_down = true, o_down = true, disconnected = true }

-- True when sentinel i lists the server on port as a healthy replica (flags
-- without s_down, o_down or disconnected, master-link-status ok): what the
-- module's role = "slave" lookup needs.
local function sentinel_lists_replica(i, port)
    local ok, s = pcall(_M.raw_sentinel, i)
    if not ok then return false end
    local list = s:call("SENTINEL", "REPLICAS", "mymaster")
    s:close()
    if type(list) ~= "table" then return false end
    for _, entry in ipairs(list) do
        local f = fields(entry)
        if tonumber(f.port) == port then
            for flag in (f.flags or ""):gmatch("[^,]+") do
                if BAD_FLAGS[flag] then return false end
            end
            return f["master-link-status"] == "ok"
        end
    end
    return false
end

-- The master every sentinel names, or nil when they disagree or one is down.
function _M.agreed_master()
    local seen
    for i = 1, #_M.sentinel_ports do
        local ok, s = pcall(_M.raw_sentinel, i)
        if not ok then return nil end
        local addr = s:call("SENTINEL", "get-master-addr-by-name", "mymaster")
        s:close()
        local port = type(addr) == "table" and tonumber(addr[2])
        if not port or (seen and seen ~= port) then return nil end
        seen = port
    end
    return seen
end

-- One look at the group: the master's port when every sentinel names it and it
-- answers ROLE master; with want_replica, also the other data server is its
-- replica with master_link_status:up and synced, and (unless want_replica is
-- "linked") every sentinel lists it as healthy, which is what a failover or a
-- role = "slave" lookup needs (a sentinel refreshes a replica's state from its
-- INFO, every 10 s outside a failover).
function _M.stable_master(want_replica)
    local master = _M.agreed_master()
    if not master then return nil end
    local ok, r = pcall(_M.raw_server, master)
    if not ok then return nil end
    local role = r:call("ROLE")
    r:close()
    if type(role) ~= "table" or role[1] ~= "master" then return nil end
    if want_replica then
        local replica = data_ports[1] == master and data_ports[2] or data_ports[1]
        local rok, rr = pcall(_M.raw_server, replica)
        if not rok then return nil end
        local info = rr:info("replication") or {}
        rr:close()
        if info.role ~= "slave" or tonumber(info.master_port) ~= master
            or info.master_link_status ~= "up" or info.master_sync_in_progress ~= "0" then
            return nil
        end
        if want_replica ~= "linked" then
            for i = 1, #_M.sentinel_ports do
                if not sentinel_lists_replica(i, replica) then return nil end
            end
        end
    end
    return master
end

-- Polls stable_master until it holds; returns the master's port, raises after
-- timeout_s (default 30).
function _M.wait_stable(timeout_s, want_replica)
    local deadline = socket.gettime() + (timeout_s or 30)
    repeat
        local master = _M.stable_master(want_replica)
        if master then return master end
        socket.sleep(0.05)
    until socket.gettime() > deadline
    error("sentinel group not stable after " .. tostring(timeout_s or 30) .. " s"
          .. (want_replica and " (with a replica, " .. tostring(want_replica) .. ")" or ""))
end

-- The pid of the data server on port (its pid file in the group's directory).
function _M.pid_of(port)
    local f = assert(io.open(_M.dir .. "/" .. _M.name_of(port) .. ".pid"))
    local pid = assert(f:read("*n"))
    f:close()
    return pid
end

-- Starts a stopped server again from its config (daemonized, pid file in the
-- group's directory, so with-sentinels.sh stops it).
function _M.restart(port)
    local name = _M.name_of(port)
    assert(os.execute("redis-server " .. _M.dir .. "/" .. name .. ".conf >>" .. _M.dir .. "/" .. name
                      .. ".out 2>&1"))
    local deadline = socket.gettime() + 10
    repeat
        local ok = pcall(_M.raw_server, port)
        if ok then return end
        socket.sleep(0.05)
    until socket.gettime() > deadline
    error("server on port " .. port .. " did not restart")
end

return _M
