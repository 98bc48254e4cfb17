---
-- Yielding until the event loop has handled what is ready now (internal), for a
-- timer that gathers work: the sentinel lookup runner, resumed by a sentinel's
-- reply, waits so that the requests read in the same turn join its next lookup.
--
-- `ngx.sleep(0)` does this silently on OpenResty's nginx (its delayed-events
-- patch). Stock nginx (Debian's libnginx-mod-http-lua) adds a 0 ms timer and
-- logs "ngx.sleep(0) called without delayed events patch" at warn level on
-- every call. Where that line would be written, the waiting timer starts a 0 ms
-- timer of its own (`ngx.timer.at`, which logs nothing) that posts a semaphore
-- the waiter waits on: the same wait, plus one posted event. (A semaphore posted
-- by a light thread instead resumes the waiter within the same turn's posted
-- events, never after a new poll: at 32 connections 11-12 calls shared a
-- lookup, against 13-15 this way and 15 with ngx.sleep(0).)
--
-- @module resty.session.hiredis.turn
-- @local

local semaphore = require "ngx.semaphore"

local pcall = pcall
local new_semaphore = semaphore.new

local _M = {}

-- A bound for ngx.semaphore's wait (the 0 ms timer posts long before).
local IDLE_SECONDS = 3600

-- Per worker: whether ngx.sleep(0) writes nothing to the error log (nil: not known yet).
local quiet_sleep

local function find_sleep_is_quiet()
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

---
-- Whether ngx.sleep(0) writes nothing to the error log (then it is the cheaper
-- wait: no timer context is made).
function _M.sleep_is_quiet()
  if quiet_sleep == nil then
    quiet_sleep = find_sleep_is_quiet()
  end
  return quiet_sleep
end

local function post_back(_, turns)
  turns.back:post(1)
end

---
-- Prepares the calling timer's turns.
-- @return the turns
function _M.start()
  if _M.sleep_is_quiet() then
    return {}
  end
  return { back = new_semaphore() }
end

---
-- Yields until the event loop has handled the events ready now (not at all when
-- no timer can be started: nginx's lua_max_pending_timers).
-- @param turns what `start` returned, in the same timer
function _M.next(turns)
  local back = turns.back
  if not back then
    ngx.sleep(0)
  elseif ngx.timer.at(0, post_back, turns) then
    back:wait(IDLE_SECONDS)  -- (posted within the turn or the next)
  end
end

return _M
