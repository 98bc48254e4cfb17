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

-- Waits until every sentinel names the same master, that master answers ROLE
-- master, and (with want_replica) a replica is linked; returns its port.
function _M.wait_stable(timeout_s, want_replica)
    local deadline = socket.gettime() + (timeout_s or 30)
    repeat
        local seen, agree = nil, true
        for i = 1, #_M.sentinel_ports do
            local ok, s = pcall(_M.raw_sentinel, i)
            if not ok then agree = false break end
            local addr = s:call("SENTINEL", "get-master-addr-by-name", "mymaster")
            s:close()
            local port = type(addr) == "table" and tonumber(addr[2])
            if not port or (seen and seen ~= port) then agree = false break end
            seen = port
        end
        if agree and seen then
            local ok, r = pcall(_M.raw_server, seen)
            if ok then
                local role = r:call("ROLE")
                local info = want_replica and r:call("INFO", "replication") or ""
                r:close()
                if type(role) == "table" and role[1] == "master"
                    and (not want_replica or info:match("slave0:.-state=online")) then
                    return seen
                end
            end
        end
        socket.sleep(0.1)
    until socket.gettime() > deadline
    error("sentinel group not stable after " .. tostring(timeout_s) .. " s")
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

-- Runs call() every `every` seconds until it succeeds twice in a row, from now;
-- returns calls failed, seconds from start until the first success that stuck.
function _M.measure(call, every, limit_s)
    local start = socket.gettime()
    local failed, first_ok = 0, nil
    while socket.gettime() - start < (limit_s or 30) do
        local ok = call()
        if ok then
            if first_ok then
                return failed, first_ok - start
            end
            first_ok = socket.gettime()
        else
            first_ok = nil
            failed = failed + 1
        end
        socket.sleep(every or 0.05)
    end
    return failed, nil
end

return _M
