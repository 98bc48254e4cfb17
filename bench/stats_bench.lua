-- What counting (stats()) adds to a call, in nanoseconds, without I/O: the core
-- side of a cosocket `get` (op:start builds the request, op:read parses a canned
-- reply into the result: where the core times and counts the call) with counting
-- on against counting off, interleaved, medians of ROUNDS rounds; with the JIT and
-- without it (`luajit -joff bench/stats_bench.lua`: how an nginx request handler
-- that yields runs it). make bench-micro runs both.
--   luajit bench/stats_bench.lua [calls per round] [rounds]
package.path = "lua/?.lua;" .. package.path
package.cpath = (os.getenv("RSH_BUILD_DIR") or "build") .. "/lib/?.so;" .. package.cpath

local core = require "resty.session.hiredis.core"
local stats = require "resty.session.hiredis.stats"
local cosocket = require "resty.session.hiredis.cosocket"

local CALLS = tonumber(arg[1]) or 1000000
local ROUNDS = tonumber(arg[2]) or 7
local GET = cosocket.GET
local VALUE = string.rep("v", 512)
local REPLY = "$" .. #VALUE .. "\r\n" .. VALUE .. "\r\n"

local inst = core.new({})
local op = core.operation()

local function round()
  local t0 = os.clock()
  for _ = 1, CALLS do
    op:start(inst, GET, 70000, "session", "key")
    local status, value = op:read(REPLY)
    if status ~= 1 or value ~= VALUE then
      error("unexpected result")
    end
  end
  return (os.clock() - t0) / CALLS * 1e9
end

local function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

local on, off = {}, {}
for r = 1, ROUNDS do
  stats.enable(true)
  on[r] = round()
  stats.enable(false)
  off[r] = round()
end
stats.enable(true)
local jit_state = jit and (jit.status() and "on" or "off") or "none (PUC Lua)"
print(string.format("stats: JIT %s, %d calls x %d rounds: op:start + op:read %.1f ns/call counted, "
                    .. "%.1f uncounted; counting adds %.1f ns per call", jit_state, CALLS, ROUNDS, median(on),
                    median(off), median(on) - median(off)))
