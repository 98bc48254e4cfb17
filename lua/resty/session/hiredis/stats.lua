---
-- Statistics of the storage modules (internal; the public functions are
-- `resty.session.hiredis.stats`, `stats_reset` and `stats_enabled`).
--
-- Per process (an nginx worker; plain LuaJIT: the process), both transports and
-- the three storage modules together. The calls are counted by the core
-- (src/stats.hpp), once per method call whatever its retries: timed from where
-- the call enters the core (op:start, cop:begin, a native method, the sentinel
-- front's inst:check_call) to where its result is made, so counting adds no
-- crossing into C to a call (the sentinel front adds one: core.stats_record).
-- The core also counts the native connections and the cluster's redirections,
-- retries and slot-map loads. The Lua drivers bump what only they see
-- (cosocket connections, pipeline batches, sentinel lookups) in `counts`.
-- `snapshot` merges both.
--
-- Nothing allocates per call: counters are fields of tables made once here,
-- and relaxed atomics in the core.
--
-- @module resty.session.hiredis.stats
-- @local

local core = require "resty.session.hiredis.core"

local pairs = pairs
local ipairs = ipairs

local _M = {}

-- Latency buckets: upper bounds in milliseconds (the last bucket counts the rest).
local BOUNDS = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000 }
local METHODS = { "set", "get", "delete", "read_metadata" }

-- What the Lua drivers count. Each counting site adds `step`: 1 while counting
-- is on, 0 while it is off, so that both states run the same code (a branch on
-- the state made LuaJIT record other traces for each: about 1,100 more
-- interpreted instructions per cosocket call with counting on, callgrind).
local counts = {
  step = 1,
  connections = { opened = 0, reused = 0, failed = 0 },   -- cosocket side
  pipeline = { batches = 0, calls = 0, max_calls = 0, lingers = 0 },
  sentinel = { lookups = 0, role_mismatches = 0, master_changes = 0, events = 0, watch_failures = 0 },
  -- a gauge (never zeroed by reset, counted whatever `step`): the sentinels'
  -- subscriptions confirmed now (sentinel_watch)
  sentinel_subscriptions = 0,
}
_M.counts = counts

local function zero()
  for _, group in ipairs({ "connections", "pipeline", "sentinel" }) do
    for k in pairs(counts[group]) do
      counts[group][k] = 0
    end
  end
end

-- The class a failed call's error message counts under (the core's rules).
_M.classify = core.stats_classify

-- The start of a call a Lua front runs itself (sentinel), as inst:check_call
-- returned it: counts it, with its results.
_M.record = core.stats_record

local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end

---
-- A fresh table of the counters (the shape documented in `resty.session.hiredis`).
function _M.snapshot()
  local native = core.stats_counters()
  local ops = {}
  for _, name in ipairs(METHODS) do
    local op = native.ops[name]
    ops[name] = {
      calls = op.calls,
      errors = op.errors,
      latency = { bounds = copy(BOUNDS), counts = op.counts, sum_ms = op.sum_ms },
    }
  end
  local cosocket = counts.connections
  local sentinel = copy(counts.sentinel)
  sentinel.subscriptions = counts.sentinel_subscriptions
  return {
    ops = ops,
    errors = native.errors,
    connections = {
      opened = cosocket.opened + native["connections.opened"],
      reused = cosocket.reused + native["connections.reused"],
      failed = cosocket.failed + native["connections.failed"],
    },
    pipeline = copy(counts.pipeline),
    cluster = {
      moved = native["cluster.moved"],
      ask = native["cluster.ask"],
      retries = native["cluster.retries"],
      refreshes = native["cluster.refreshes"],
    },
    sentinel = sentinel,
  }
end

---
-- Zeroes every counter of this process.
function _M.reset()
  zero()
  core.stats_reset()
end

---
-- Counting on (`true`) or off (`false`) from now on; returns the state.
function _M.enable(on)
  if on ~= nil then
    counts.step = on and 1 or 0
    core.stats_enable(counts.step == 1)
  end
  return counts.step == 1
end

return _M
