---
-- Following the sentinels' events (internal, nginx only): per worker, one
-- subscription (`PSUBSCRIBE *`) to every sentinel of a storage's list, shared by
-- the storage instances that name the same sentinels. A generation counts what
-- may have changed an answer: it moves on every event a sentinel publishes and
-- whenever a subscription is made or lost. `sentinel.lua` reuses a lookup's
-- answer while every subscription is confirmed and the generation is the one
-- its lookup began at.
--
-- Why that routes as safely as a lookup per call: a sentinel publishes
-- `+new-epoch` and `+try-failover` when a failover begins (forced or elected),
-- and its state machine moves one state per timer tick (50-100 ms), so it sends
-- `REPLICAOF NO ONE` to the replica two ticks or more later. The event reaches
-- this worker's subscription within the network's one-way delay and is read
-- the next time the event loop polls; from then on every call is routed by a
-- lookup again, which sees the failover in progress. A lookup per call has a
-- window of its own: a promotion between the lookup's answer and the write's
-- arrival at the old master. A sentinel the worker cannot reach is the same
-- blind spot for both (its events, or its answers, are missing); any
-- subscription not confirmed makes calls look up again.
--
-- Each subscribed connection gets a PING every PING_SECONDS; one that carries
-- nothing, not even the answers, for QUIET_LIMIT_SECONDS counts as lost (a hung
-- sentinel, a silently dropped connection). A subscription that cannot be made (refused,
-- unreachable) is tried again after 2 s, doubling up to 60 s, with a warning
-- in the error log on the first failure of a series. Each sentinel's
-- subscription runs in a timer of its own, which ends once no call consulted the
-- watch for IDLE_SECONDS, or when the worker exits.
--
-- @module resty.session.hiredis.sentinel_watch
-- @local

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"
local stats = require "resty.session.hiredis.stats"

local min = math.min
local tostring = tostring
local setmetatable = setmetatable
local concat = table.concat

local start_tls = cosocket.start_tls
local counts = stats.counts
local counted_sentinel = counts.sentinel

local ngx = ngx
local timer_at = ngx.timer.at
local worker_exiting = ngx.worker.exiting
local now = ngx.now
local log = ngx.log
local WARN = ngx.WARN
local sleep = ngx.sleep
local spawn, kill = ngx.thread.spawn, ngx.thread.kill

local _M = {}

local RECEIVE_SIZE = 4096
local PING_SECONDS = 1
local QUIET_LIMIT_SECONDS = 3
local IDLE_SECONDS = 60
local RETRY_AFTER, RETRY_AFTER_MAX = 2, 60

-- Per worker: the watches by sentinel list (see key_of).
local watches = {}

-- The identity of a sentinel list: each sentinel's pool name (endpoint,
-- credentials, TLS settings), in order.
local function key_of(targets)
  local parts = {}
  for i = 1, #targets do
    parts[i] = targets[i].pool
  end
  return concat(parts, "\n")
end

local function stopping(watch)
  return worker_exiting() or now() - watch.used > IDLE_SECONDS
end

local function changed(watch)
  watch.generation = watch.generation + 1
end

-- A new connection to the target, subscribed: sock, or nil, err.
local function subscribe(state, target)
  local sock, err = ngx.socket.tcp()
  if not sock then
    return nil, err
  end
  sock:settimeouts(target.connect_timeout, target.send_timeout, target.read_timeout)
  -- a pool of its own, never filled: a subscribed connection serves nothing else
  local ok
  ok, err = sock:connect(target.host, target.port, target.watch_options)
  if not ok then
    return nil, err
  end
  if target.ssl then
    ok, err = start_tls(sock, target.tls_view)
    if not ok then
      sock:close()
      return nil, err
    end
  end
  local request
  request, err = state:subscribe(target.username, target.password)
  if request then
    ok, err = sock:send(request)
  end
  while request and ok do
    local data
    data, err = sock:receiveany(RECEIVE_SIZE)
    if not data then
      break
    end
    local subscribed, events = state:feed(data)
    if subscribed == nil then
      err = events
      break
    end
    if subscribed then
      return sock
    end
  end
  sock:close()
  return nil, err
end

-- Sends a PING every PING_SECONDS while the reader (listen) waits: a light
-- thread of its own, as a cosocket is full-duplex. (A read timeout per quiet
-- second would do it in one thread, but nginx logs each cosocket read timeout
-- at error level.) Once the watch stops, it sends a last PING and asks the
-- reader to end at its answer.
local function ping_loop(watch, state, sock, link)
  while not link.done do
    sleep(PING_SECONDS)
    if link.done then
      return
    end
    link.stop = stopping(watch)
    local sent, err = sock:send(state:ping())
    if not sent then
      link.err = err  -- (the reader sees the connection fail too)
      return
    end
    if link.stop then
      return
    end
  end
end

-- Reads the subscribed connection until it fails (returns why) or the watch
-- stops (returns nil). A connection that carried nothing, not even a PING's
-- answer, for QUIET_LIMIT_SECONDS is lost (a hung sentinel, a dropped link).
local function listen(watch, state, sock)
  sock:settimeout(QUIET_LIMIT_SECONDS * 1000)
  local link = { done = false, stop = false, err = nil }
  local pinger = spawn(ping_loop, watch, state, sock, link)
  local err
  while true do
    local data
    data, err = sock:receiveany(RECEIVE_SIZE)
    if not data then
      if err == "timeout" then
        err = "no answer to PING within " .. QUIET_LIMIT_SECONDS .. " s"
      end
      break
    end
    local subscribed, events, pongs = state:feed(data)
    if subscribed == nil then
      err = events
      break
    end
    if events > 0 then
      changed(watch)
      counted_sentinel.events = counted_sentinel.events + events * counts.step
    end
    if link.stop and pongs > 0 then
      break  -- (err: nil)
    end
  end
  link.done = true
  kill(pinger)  -- (asleep, or done)
  return link.err or err
end

-- Waits `seconds`, or less once the watch stops (checked every PING_SECONDS).
-- Whole milliseconds: a shorter ngx.sleep is ngx.sleep(0), which stock nginx
-- logs on every call.
local function pause(watch, seconds)
  local until_t = now() + seconds
  while not stopping(watch) do
    local left = until_t - now()
    if left < 0.001 then
      return
    end
    sleep(min(left, PING_SECONDS))
  end
end

-- The timer following sentinel i of the watch.
local function follow(premature, watch, i)
  local target = watch.targets[i]
  local state = core.sentinel_watch()
  local failures = 0
  while not premature and not stopping(watch) do
    local sock, err = subscribe(state, target)
    if sock then
      failures = 0
      watch.live = watch.live + 1
      counts.sentinel_subscriptions = counts.sentinel_subscriptions + 1
      changed(watch)
      err = listen(watch, state, sock)
      watch.live = watch.live - 1
      counts.sentinel_subscriptions = counts.sentinel_subscriptions - 1
      changed(watch)
      sock:close()
    end
    if err and not stopping(watch) then
      counted_sentinel.watch_failures = counted_sentinel.watch_failures + counts.step
      if failures == 0 then
        log(WARN, "sentinel ", target.host, ":", target.port, ": events not followed (",
            tostring(err), "): calls look the master up until they are again")
      end
      failures = failures + 1
      pause(watch, min(RETRY_AFTER_MAX, RETRY_AFTER * 2 ^ (failures - 1)))
    end
  end
  watch.following[i] = false
end

-- Starts a timer per sentinel not followed now (none when nginx has no timer to give).
local function start(watch)
  local following = watch.following
  for i = 1, #watch.targets do
    if not following[i] then
      following[i] = timer_at(0, follow, watch, i) and true or false
    end
  end
end

---
-- The watch of a storage's sentinels (made and shared per worker).
-- @param targets the storage's sentinels: host, port, username, password,
-- ssl, tls_view, pool, timeouts (see sentinel.lua)
function _M.of(targets)
  local key = key_of(targets)
  local watch = watches[key]
  if not watch then
    local list = {}
    for i = 1, #targets do
      local target = targets[i]
      list[i] = setmetatable({ watch_options = { pool = "watch|" .. target.pool } }, { __index = target })
    end
    watch = { targets = list, following = {}, live = 0, generation = 0, used = now() }
    watches[key] = watch
  end
  return watch
end

---
-- The generation a lookup beginning now is tagged with, or nil while a
-- subscription is not confirmed (then an answer is never reused). Starts the
-- subscriptions not running.
function _M.generation(watch)
  watch.used = now()
  if watch.live == #watch.targets then
    return watch.generation
  end
  start(watch)
  return nil
end

---
-- Whether an answer tagged `generation` still routes calls: every subscription
-- confirmed and no event or change since it was tagged.
function _M.current(watch, generation)
  watch.used = now()
  return generation == watch.generation and watch.live == #watch.targets
end

return _M
