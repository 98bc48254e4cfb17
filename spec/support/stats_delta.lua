-- Differences between two stats() snapshots, for the specs.
local _M = {}

local function sum(t)
    local n = 0
    for _, v in ipairs(t) do n = n + v end
    return n
end
_M.sum = sum

-- Each counter of `after` minus the same one of `before`: ops flattened as
-- "get.calls", "get.errors", "get.latency" (the histogram's total), and
-- "group.field" for the rest.
function _M.delta(before, after)
    local d = {}
    for name, op in pairs(after.ops) do
        local was = before.ops[name]
        d[name .. ".calls"] = op.calls - was.calls
        d[name .. ".errors"] = op.errors - was.errors
        d[name .. ".latency"] = sum(op.latency.counts) - sum(was.latency.counts)
    end
    for _, group in ipairs({ "errors", "connections", "pipeline", "cluster", "sentinel" }) do
        for k, v in pairs(after[group]) do
            d[group .. "." .. k] = v - before[group][k]
        end
    end
    return d
end

-- What the worker's sentinel subscriptions (sentinel_watch) count on their own, in
-- timers, whatever the calls between two snapshots: a subscription to a fake
-- sentinel of an earlier spec, stopped since, keeps failing for a minute.
local BACKGROUND = { ["sentinel.events"] = true, ["sentinel.watch_failures"] = true,
                     ["sentinel.subscriptions"] = true }

-- The counters that changed, as { name = delta } (zero deltas left out), but the
-- background ones above: what the calls between the snapshots did.
function _M.changed(before, after)
    local out = {}
    for k, v in pairs(_M.delta(before, after)) do
        if v ~= 0 and not BACKGROUND[k] then out[k] = v end
    end
    return out
end

return _M
