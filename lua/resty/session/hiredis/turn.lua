---
-- Yielding until the event loop has handled what is ready now (internal), for a
-- timer that gathers work: the sentinel lookup runner, resumed by a sentinel's
-- reply, waits so that the requests read in the same turn join its next lookup.
--
-- `ngx.sleep(0)` does this silently on OpenResty's nginx (its delayed-events
-- patch). Stock nginx (Debian's libnginx-mod-http-lua) adds a 0 ms timer and
-- logs "ngx.sleep(0) called without delayed events patch" at warn level on
-- every call. Where that line would be written, a light thread of the timer
-- relays instead: the timer posts a semaphore the relay waits on, then waits on
-- a second one that the relay posts. A semaphore post resumes its waiter from
-- nginx's posted events, which run after the turn's socket events and expired
-- timers; no log line. (Called from posted events itself, the relay only lets
-- the posted events queued before it run: fewer calls share a lookup then.)
--
-- @module resty.session.hiredis.turn
-- @local

local semaphore = require "ngx.semaphore"

local pcall = pcall
local new_semaphore = semaphore.new

local _M = {}

-- How long the relay waits before waiting again (ngx.semaphore takes a bound).
local IDLE_SECONDS = 3600

-- Per worker: whether ngx.sleep(0) writes nothing to the error log (nil: not known yet).
local quiet_sleep

local function sleep_is_quiet()
  -- OpenResty's patch defines ngx_posted_delayed_events (nginx exports its
  -- symbols for dynamic modules)
  local ffi = require "ffi"
  pcall(ffi.cdef, "extern int ngx_posted_delayed_events;")  -- (declared already: fine)
  if pcall(function() return ffi.C.ngx_posted_delayed_events end) then
    return true
  end
  -- stock nginx: quiet when the error log drops warnings (nginx's default level, error)
  local ok, errlog = pcall(require, "ngx.errlog")
  if not ok then
    return false
  end
  local got, level = pcall(errlog.get_sys_filter_level)
  return got and type(level) == "number" and level < ngx.WARN
end

local function relay(turns)
  while true do
    if turns.go:wait(IDLE_SECONDS) then
      turns.back:post(1)
    end
  end
end

---
-- Prepares the calling timer's turns (a relay thread when ngx.sleep(0) would
-- log; `stop` ends it before the timer's handler returns).
-- @return the turns
function _M.start()
  if quiet_sleep == nil then
    quiet_sleep = sleep_is_quiet()
  end
  if quiet_sleep then
    return {}
  end
  local turns = { go = new_semaphore(), back = new_semaphore() }
  turns.thread = ngx.thread.spawn(relay, turns)
  return turns
end

---
-- Yields until the event loop has handled the events ready now.
-- @param turns what `start` returned, in the same timer
function _M.next(turns)
  if not turns.thread then
    ngx.sleep(0)
    return
  end
  turns.go:post(1)
  turns.back:wait(IDLE_SECONDS)  -- (answered within the turn)
end

---
-- Ends the relay's light thread, if any.
function _M.stop(turns)
  if turns.thread then
    ngx.thread.kill(turns.thread)
  end
end

return _M
