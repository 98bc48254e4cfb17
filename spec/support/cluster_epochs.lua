-- Whether a manual slot migration may close (CLUSTER SETSLOT NODE), for both
-- cluster kits. The target of a migration bumps its configEpoch on SETSLOT NODE
-- only when it is not already the greatest epoch it knows of
-- (clusterBumpConfigEpochWithoutConsensus). A target that has not yet heard of a
-- bump made elsewhere (a migration just closed on another master) keeps its
-- epoch; then either the source's pings, at a greater epoch and still claiming
-- the slot, take it back from the target for good, or the replicas, which no
-- SETSLOT reaches, keep the source as the owner for good. Seen with Redis 6.0 in
-- the specs that move two slots back to back: one node named the old owner of a
-- slot for the rest of the run. So a migration closes only once every node knows
-- the same current epoch and the same, distinct, epochs of the masters: the
-- target's bump is then above every claim of the source. Also the kits' one poll
-- loop (poll).
local socket = require "socket"

local _M = {}

-- { [master id] = configEpoch } from a CLUSTER NODES text, and its masters' epochs
-- as one sorted string.
local function master_epochs(nodes_text)
    local epochs, list = {}, {}
    for line in nodes_text:gmatch("[^\r\n]+") do
        local fields = {}
        for field in line:gmatch("%S+") do fields[#fields + 1] = field end
        if fields[3] and fields[3]:find("master", 1, true) then
            epochs[fields[1]] = fields[7]
            list[#list + 1] = fields[1] .. "=" .. fields[7]
        end
    end
    table.sort(list)
    return epochs, table.concat(list, ",")
end

-- nil when the nodes (ports) agree on the current epoch and on each master's
-- epoch, and no two masters share one; else why not. call(port, ...) runs one
-- command on a node and returns its reply text (nil, err on failure).
function _M.problem(ports, call)
    local current, masters, first
    for _, port in ipairs(ports) do
        local info, err = call(port, "CLUSTER", "INFO")
        local epoch = type(info) == "string" and info:match("cluster_current_epoch:(%d+)")
        if not epoch then return string.format("node %d: CLUSTER INFO: %s", port, tostring(err or info)) end
        local nodes, nerr = call(port, "CLUSTER", "NODES")
        if type(nodes) ~= "string" then return string.format("node %d: CLUSTER NODES: %s", port, tostring(nerr)) end
        local epochs, listed = master_epochs(nodes)
        if current and (epoch ~= current or listed ~= masters) then
            return string.format("nodes %d and %d know different epochs: current %s, masters %s | current %s, "
                                 .. "masters %s", first, port, current, masters, epoch, listed)
        end
        local seen = {}
        for id, e in pairs(epochs) do
            if seen[e] then return string.format("node %d: masters %s and %s share epoch %s", port, seen[e], id, e) end
            seen[e] = id
        end
        current, masters, first = epoch, listed, port
    end
    return nil
end

-- Polls check() every 50 ms until it returns nil (true), or false and its last
-- answer (why not) after timeout_ms (default 10 s). (For the cluster kits' waits.)
function _M.poll(check, timeout_ms)
    local deadline = socket.gettime() + (timeout_ms or 10000) / 1000
    local reason
    repeat
        reason = check()
        if not reason then return true end
        socket.sleep(0.05)
    until socket.gettime() > deadline
    return false, reason
end

-- Polls problem() until it is nil: true, or false and the last reason.
function _M.wait_settled(ports, call, timeout_ms)
    return _M.poll(function() return _M.problem(ports, call) end, timeout_ms)
end

return _M
