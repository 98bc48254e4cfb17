---
-- Statistics of the storage modules (internal; the public functions are
-- `resty.session.hiredis.stats`, `stats_reset` and `stats_enabled`).
--
-- Per process (an nginx worker; plain LuaJIT: the process), both transports and
-- the three storage modules together. The calls are counted here, once per
-- method call whatever its retries: `counted` wraps each public method of the
-- single-node, cluster and sentinel modules. The drivers bump what only they
-- see (cosocket connections, pipeline batches, sentinel lookups) in `counts`;
-- the core counts the native connections and the cluster's redirections,
-- retries and slot-map loads (src/stats.hpp). `snapshot` merges both.
--
-- Nothing here allocates per call: counters are fields of tables made once,
-- and the clock is read through the FFI into a buffer made once.
--
-- @module resty.session.hiredis.stats
-- @local

local core = require "resty.session.hiredis.core"

local type = type
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local require = require
local sub = string.sub
local find = string.find

local _M = {}

-- Latency buckets: upper bounds in milliseconds (the last bucket counts the rest).
local BOUNDS = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000 }
local NBOUNDS = #BOUNDS
local METHODS = { "set", "get", "delete", "read_metadata" }
local CLASSES = { "timeout", "connect", "closed", "protocol", "server", "config" }

-- Milliseconds from a monotonic clock: clock_gettime(CLOCK_MONOTONIC) through
-- the FFI (compiled into the trace, no allocation: the timespec is read as
-- 32-bit words, so no 64-bit integer is boxed), else the core's (PUC Lua).
local function ffi_clock()
  local ok, ffi = pcall(require, "ffi")
  if not ok then
    return nil
  end
  -- declared already by other code (with a `struct timespec *`): then use that
  pcall(ffi.cdef, "int clock_gettime(int clk_id, void *tp);")
  local words = ffi.new("uint32_t[4]")
  local arg = words
  if not pcall(ffi.C.clock_gettime, 1, arg) then
    local cast
    cast, arg = pcall(ffi.cast, "struct timespec *", words)
    if not cast or not pcall(ffi.C.clock_gettime, 1, arg) then
      return nil
    end
  end
  -- struct timespec { long tv_sec; long tv_nsec; }. Seconds since boot fit the low
  -- word for 136 years; nanoseconds always do.
  local sec, nsec = 0, 2
  if not ffi.abi("64bit") then
    sec, nsec = 0, 1
  elseif ffi.abi("be") then
    sec, nsec = 1, 3
  end
  local gettime = ffi.C.clock_gettime
  return function()
    gettime(1, arg)
    return words[sec] * 1000 + words[nsec] * 1e-6
  end
end

local clock = ffi_clock() or core.monotonic_ms

-- What is counted. `on` is read by every counting site.
local counts = {
  on = true,
  ops = {},
  errors = {},
  connections = { opened = 0, reused = 0, failed = 0 },   -- cosocket side
  pipeline = { batches = 0, calls = 0, max_calls = 0 },
  sentinel = { lookups = 0, role_mismatches = 0, master_changes = 0 },
}
_M.counts = counts

local function zero()
  for _, name in ipairs(METHODS) do
    local op = counts.ops[name]
    if not op then
      op = { calls = 0, errors = 0, counts = {}, sum_ms = 0 }
      counts.ops[name] = op
    end
    op.calls, op.errors, op.sum_ms = 0, 0, 0
    for i = 1, NBOUNDS + 1 do
      op.counts[i] = 0
    end
  end
  for _, class in ipairs(CLASSES) do
    counts.errors[class] = 0
  end
  for _, group in ipairs({ "connections", "pipeline", "sentinel" }) do
    for k in pairs(counts[group]) do
      counts[group][k] = 0
    end
  end
end
zero()

-- Error messages without a Redis error code that still come from a server's answer.
local SERVER_MESSAGES = {
  "write not durable", "role mismatch", "failover in progress", "too many cluster redirections",
  "no slaves available",
}
local CLOSED = { ["closed"] = true, ["broken pipe"] = true, ["connection reset by peer"] = true }

-- The class of an error message (only errors pay for this).
local function classify(err)
  if type(err) ~= "string" then
    return "server"
  end
  for i = 1, #SERVER_MESSAGES do
    local m = SERVER_MESSAGES[i]
    if sub(err, 1, #m) == m then
      return "server"
    end
  end
  if sub(err, 1, 8) == "invalid " or sub(err, 1, 30) == "cosocket transport unavailable" then
    return "config"
  end
  if sub(err, 1, 15) == "protocol error:" then
    return "protocol"
  end
  if find(err, "^%u[%u_-]+ ") or find(err, "^%u[%u_-]+$") then
    return "server"  -- a Redis error reply: ERR, WRONGTYPE, NOAUTH, READONLY, CLUSTERDOWN...
  end
  if find(err, "timeout", 1, true) or find(err, "timed out", 1, true) then
    return "timeout"
  end
  if CLOSED[err] then
    return "closed"
  end
  -- connection refused, ssl handshake failed, too many waiting connect
  -- operations, no hosts available, resolver failures...
  return "connect"
end
_M.classify = classify

-- The bucket of a latency in ms: the first of BOUNDS it does not exceed, else
-- the last. A binary search written out rather than a loop: a loop here starts a
-- trace of its own, entered and left on every call (callgrind, one nginx worker:
-- about 150 instructions per call more than this).
local function bucket_of(ms)
  if ms <= 5 then
    if ms <= 0.5 then
      if ms <= 0.1 then return 1 elseif ms <= 0.25 then return 2 end
      return 3
    end
    if ms <= 1 then return 4 elseif ms <= 2.5 then return 5 end
    return 6
  end
  if ms <= 50 then
    if ms <= 10 then return 7 elseif ms <= 25 then return 8 end
    return 9
  end
  if ms <= 250 then
    if ms <= 100 then return 10 end
    return 11
  end
  if ms <= 1000 then return 12 end
  return 13
end
_M.bucket_of = bucket_of
assert(BOUNDS[12] == 1000 and NBOUNDS == 12, "bucket_of is written for these bounds")

-- The method `name` (set, get, delete, read_metadata) of a storage module,
-- counted: `impl(self, ...)` is the uncounted method. In an nginx worker this
-- runs in LuaJIT's interpreter (jit.v: the trace through it aborts, NYI, at the
-- cosocket driver's vararg call, and the call resumes from a yield), so it is
-- kept to a few bytecodes. (The core's clock, a Lua C function, is cheaper there
-- than the FFI's, but with it a fresh-clone make test twice saw the counted calls
-- allocate under the JIT: stats_spec's allocation check.)
function _M.counted(name, impl)
  local op = counts.ops[name]
  local buckets = op.counts
  local errors = counts.errors
  -- Nine named arguments, the most a method takes (set's), rather than `...`: a
  -- vararg frame around a call that yields cost about 1,100 more instructions per
  -- call in an nginx worker than this (callgrind); the methods treat a missing
  -- argument and nil alike.
  return function(self, a, b, c, d, e, f, g, h, j)
    if not counts.on then
      return impl(self, a, b, c, d, e, f, g, h, j)
    end
    local t0 = clock()
    local r1, r2 = impl(self, a, b, c, d, e, f, g, h, j)
    local ms = clock() - t0
    op.calls = op.calls + 1
    if r1 == nil and r2 ~= nil then
      op.errors = op.errors + 1
      local class = classify(r2)
      errors[class] = errors[class] + 1
    end
    local i = bucket_of(ms)
    buckets[i] = buckets[i] + 1
    op.sum_ms = op.sum_ms + ms
    if r2 == nil then
      return r1  -- one value, as the method returns
    end
    return r1, r2
  end
end

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
    local op = counts.ops[name]
    ops[name] = {
      calls = op.calls,
      errors = op.errors,
      latency = { bounds = copy(BOUNDS), counts = copy(op.counts), sum_ms = op.sum_ms },
    }
  end
  local cosocket = counts.connections
  return {
    ops = ops,
    errors = copy(counts.errors),
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
    sentinel = copy(counts.sentinel),
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
    counts.on = on and true or false
    core.stats_enable(counts.on)
  end
  return counts.on
end

return _M
