-- The TLS-only Redis Cluster that spec/support/with-servers.sh starts
-- (`cluster_tls`: 3 masters + 3 replicas, `port 0`, tls-port, tls-cluster,
-- requirepass on every node): redis-cli over TLS per node (the raw Lua client
-- speaks plain TCP only), who owns a slot, keys per master, server counters and
-- slot moves. Independent of the module under test.
local epochs = require "cluster_epochs"

local _M = {}

local function env(name)
    local v = os.getenv(name)
    if v == "" then return nil end
    return v
end

_M.password = env("HIREDIS_TEST_CLUSTER_PASSWORD")
_M.certs = env("HIREDIS_TEST_CERTS")
_M.ports = {}
for port in (env("HIREDIS_TEST_CLUSTER_TLS_PORTS") or ""):gmatch("%d+") do
    _M.ports[#_M.ports + 1] = tonumber(port)
end
_M.available = #_M.ports == 6 and _M.password ~= nil and _M.certs ~= nil
_M.skip_reason = "no TLS Redis Cluster (run through spec/support/with-servers.sh with the cluster_tls server)"

function _M.nodes()
    local out = {}
    for i, port in ipairs(_M.ports) do out[i] = { ip = "127.0.0.1", port = port } end
    return out
end

-- A verified TLS configuration on this cluster (extra fields merged in);
-- ssl_trusted_certificate is the native transport's trust store (cosockets use
-- lua_ssl_trusted_certificate).
function _M.config(extra)
    local c = { nodes = _M.nodes(), password = _M.password, ssl = true, ssl_verify = true,
                server_name = "localhost", ssl_trusted_certificate = _M.certs .. "/ca.crt",
                connect_timeout = 1000, send_timeout = 2000, read_timeout = 2000 }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

local shell_quote = require("files").shell_quote

-- redis-cli over TLS (verified against the test CA) to node port; its output
-- without the trailing newline.
function _M.cli(port, ...)
    local args = { "redis-cli", "--no-auth-warning", "--tls", "--cacert", _M.certs .. "/ca.crt",
                   "-a", _M.password, "-h", "127.0.0.1", "-p", port, ... }
    for i, a in ipairs(args) do args[i] = shell_quote(a) end
    local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return (out:gsub("\n$", ""))
end

-- The masters' ports and node ids: { [port] = id }.
function _M.masters()
    local out = {}
    for _, port in ipairs(_M.ports) do
        if _M.cli(port, "ROLE"):match("^master") then out[port] = _M.cli(port, "CLUSTER", "MYID") end
    end
    return out
end

function _M.slot(key)
    return tonumber(_M.cli(_M.ports[1], "CLUSTER", "KEYSLOT", key))
end

-- The master port that serves slot in the view of node `asked` (default: the
-- first node).
function _M.owner(slot, asked)
    local lines = {}
    for line in _M.cli(asked or _M.ports[1], "CLUSTER", "SLOTS"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    -- redis-cli prints CLUSTER SLOTS flat: first, last, ip, port, id, [ip, port, id]...
    for i = 1, #lines - 3 do
        local first, last = tonumber(lines[i]), tonumber(lines[i + 1])
        if first and last and lines[i + 2] == "127.0.0.1" and tonumber(lines[i + 3])
           and first <= slot and slot <= last then
            return tonumber(lines[i + 3])
        end
    end
end

-- The keys matching pattern stored on node port (SCAN sees only local keys).
function _M.local_keys(port, pattern)
    local out = {}
    for key in _M.cli(port, "--scan", "--pattern", pattern):gmatch("[^\n]+") do out[#out + 1] = key end
    return out
end

-- INFO field (a number) of node port.
function _M.info_number(port, section, field)
    return tonumber(_M.cli(port, "INFO", section):match(field .. ":(%d+)")) or 0
end

-- Moves an empty slot from master `from` to master `to` (IMPORTING/MIGRATING
-- first so that the target bumps its config epoch, then SETSLOT NODE everywhere once
-- the nodes agree on the epochs: spec/support/cluster_epochs.lua); returns once
-- every node, replicas included, names `to`.
function _M.move_empty_slot(slot, from, to)
    local masters = _M.masters()
    assert(_M.cli(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", masters[from]) == "OK")
    assert(_M.cli(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", masters[to]) == "OK")
    assert(epochs.wait_settled(_M.ports, _M.cli))
    assert(_M.cli(to, "CLUSTER", "SETSLOT", slot, "NODE", masters[to]) == "OK")
    assert(_M.cli(from, "CLUSTER", "SETSLOT", slot, "NODE", masters[to]) == "OK")
    for port in pairs(masters) do
        if port ~= from and port ~= to then _M.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", masters[to]) end
    end
    assert(_M.wait_owner(slot, to))
end

-- Waits until every node says slot belongs to port: true, or false and the first
-- node that disagrees after timeout_ms.
function _M.wait_owner(slot, port, timeout_ms)
    return epochs.poll(function()
        for _, asked in ipairs(_M.ports) do
            local owner = _M.owner(slot, asked)
            if owner ~= port then return string.format("node %d says %s", asked, tostring(owner)) end
        end
    end, timeout_ms or 5000)
end

return _M
