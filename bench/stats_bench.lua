-- What counting (stats()) adds to a call, in nanoseconds, without I/O: a storage
-- method whose work is a no-op, counted (resty.session.hiredis.stats) against
-- the same method uncounted, interleaved, medians of REPS rounds; with the JIT
-- (as OpenResty's request handlers run: their traces stitch around the C calls)
-- and without it (`luajit -joff bench/stats_bench.lua`). make bench-micro runs both.
--   luajit bench/stats_bench.lua [calls per round] [rounds]
package.path = "lua/?.lua;" .. package.path
package.cpath = (os.getenv("RSH_BUILD_DIR") or "build") .. "/lib/?.so;" .. package.cpath

local stats = require "resty.session.hiredis.stats"

local CALLS = tonumber(arg[1]) or 2000000
local ROUNDS = tonumber(arg[2]) or 7

local function impl(_, name, _)
  return name
end
local counted = stats.counted("get", impl)
local storage = {}

local function round(method)
  local t0 = os.clock()
  for _ = 1, CALLS do
    method(storage, "session", "key")
  end
  return (os.clock() - t0) / CALLS * 1e9
end

local function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

local on, off, plain = {}, {}, {}
for r = 1, ROUNDS do
  stats.enable(true)
  on[r] = round(counted)
  stats.enable(false)
  off[r] = round(counted)
  plain[r] = round(impl)
end
stats.enable(true)
local jit_state = jit and (jit.status() and "on" or "off") or "none (PUC Lua)"
print(string.format("stats: JIT %s, %d calls x %d rounds: counted %.1f ns/call, counting off %.1f, "
                    .. "bare method %.1f; counting adds %.1f ns per call", jit_state, CALLS, ROUNDS, median(on),
                    median(off), median(plain), median(on) - median(off)))
