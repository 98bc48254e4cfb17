---
-- Auto-pipelining for the cosocket driver (internal). Concurrent calls of one
-- worker that share a pool share one connection: the calls queued while a round
-- trip is in flight go out together in one write, and their replies are handed
-- back in order. nginx binds a cosocket to the request that created it, so the
-- connection belongs to a timer (the lane's runner), never to a caller.
--
-- A caller queues its operation (request bytes already built) and waits on its
-- own semaphore for at most its own timeouts. The runner sends every queued
-- request in one write, reads each operation's replies from the connection's
-- shared reader, in order, and wakes each caller with its results. A connection
-- error fails exactly the calls whose requests were on it; calls still queued
-- go out on a new connection. Each operation's bytes are contiguous (a MULTI ..
-- EXEC stays whole), and an operation only ever takes its own replies.
--
-- Lingering: when a round trip ends with calls queued behind it, the runner
-- sends them after nginx has polled once more, so that the calls its answered
-- callers lead to (the next requests of the same clients, read in that poll)
-- share the write: each write wakes a Redis server, on loopback most of a round
-- trip's CPU. The answered callers resume in the turn's posted events; the first
-- of them wakes the lingering runners, and each waits there with ngx.sleep(0),
-- which returns after the next poll. (Waited from where a runner reads its
-- replies, while nginx still handles the poll's events, it would return within
-- the same turn and gather nothing.) Only where ngx.sleep(0) is silent (see
-- turn.lua): where it logs a warning, the 0 ms timer that would replace it costs
-- more than the write it saves once writes carry tens of calls. A lane with
-- nothing queued, or whose round trip answered nobody, goes on at once.
--
-- @module resty.session.hiredis.pipeline
-- @local

local core = require "resty.session.hiredis.core"
local recycler = require "resty.session.hiredis.recycler"
local stats = require "resty.session.hiredis.stats"
local turn = require "resty.session.hiredis.turn"
local semaphore = require "ngx.semaphore"

local pairs = pairs
local new_semaphore = semaphore.new
local new_reader = core.reader
local sleep = ngx.sleep
local timer_at = ngx.timer.at
local worker_exiting = ngx.worker.exiting

local _M = {}

local counts = stats.counts
local counted_batches = counts.pipeline

local RECEIVE_SIZE = 65536
local NEED_MORE, DONE = 0, 1
-- How long an idle runner keeps its connection before pooling it and exiting.
local IDLE_SECONDS = 0.1

local CLOSED_ERRORS = {
  ["closed"] = true,
  ["broken pipe"] = true,
  ["connection reset by peer"] = true,
}

-- Per worker: pool name -> lane.
local lanes = {}

-- Waiting records (each with its semaphore), reused. A record whose caller
-- timed out is never given back: its semaphore may still be posted.
local take_record, give = recycler.new(function()
  return { sema = new_semaphore() }
end, 256)

local function give_record(rec)
  rec.op, rec.request, rec.status, rec.r1, rec.r2, rec.done, rec.group, rec.queued =
    nil, nil, nil, nil, nil, false, nil, nil
  give(rec)
end

-- Groups of records one caller awaits together (pending: records not answered
-- yet; wait_ms: the most patient record's bound). A group whose caller timed out
-- is never given back: its semaphore may still be posted.
local take_group, give_group = recycler.new(function()
  return { sema = new_semaphore(), pending = 0, wait_ms = 0 }
end, 64)

-- Wakes the caller of a record when it (or its group) is complete: true when
-- a caller was woken.
local function deliver(rec, status, r1, r2)
  if rec.abandoned then
    return false  -- its caller timed out and is gone
  end
  rec.status, rec.r1, rec.r2, rec.done = status, r1, r2, true
  local group = rec.group
  if not group then
    rec.sema:post(1)
    return true
  end
  local pending = group.pending - 1
  group.pending = pending
  if pending == 0 then
    group.sema:post(1)  -- one wake-up for the whole group
    return true
  end
  return false
end

local function fail(batch, from, to, err)
  for i = from, to do
    local rec = batch[i]
    batch[i] = nil
    deliver(rec, nil, err)
  end
end

-- Reads the replies of batch[1..n] in order, waking each caller. Returns true
-- and whether a caller was woken, or nil, err, received (whether any reply byte
-- had arrived), at: the first call left without its reply.
local function read_batch(sock, reader, batch, n)
  local received, woke = false, false
  for i = 1, n do
    local rec = batch[i]
    local op = rec.op
    local status, r1, r2 = op:read_from(reader)
    while status == NEED_MORE do
      local data, err = sock:receiveany(RECEIVE_SIZE)
      if not data then
        status, r1 = nil, err
        break
      end
      received = true
      status, r1, r2 = op:read_from(reader, data)
    end
    if status ~= DONE then
      return nil, status == nil and r1 or "protocol error: unexpected reply in a pipeline", received, i
    end
    batch[i] = nil
    if deliver(rec, DONE, r1, r2) then
      woke = true
    end
  end
  if reader:has_pending() then
    return nil, "protocol error: unexpected data after the replies", true, n + 1
  end
  return true, woke
end

-- Lanes lingering (see the module's notes) whose callers have not resumed yet.
local lingering, lingering_count = {}, 0

-- A bound on a linger, should no caller resume: the lane then sends, late by at
-- most this, but sends. (Counted: the specs expect none.)
local LINGER_BOUND_SECONDS = 0.001
_M.linger_overruns = 0

-- In a resumed caller, in the turn's posted events: the lanes that began to
-- linger so far wait there for the next poll.
local function after_wake()
  for i = lingering_count, 1, -1 do
    local lane = lingering[i]
    lingering[i] = nil
    if lane.lingering then
      lane.lingering = false
      lane.work:post(1)
    end
  end
  lingering_count = 0
end

local function linger(lane)
  counted_batches.lingers = counted_batches.lingers + counts.step
  lane.lingering = true
  lingering_count = lingering_count + 1
  lingering[lingering_count] = lane
  lane.work:wait(LINGER_BOUND_SECONDS)
  if lane.lingering then
    lane.lingering = false
    _M.linger_overruns = _M.linger_overruns + 1
  else
    sleep(0)
  end
end

local start

-- A 0 timeout is nginx's lua_socket_*_timeout, whose value Lua cannot read: it
-- ranks above every explicit timeout when a lane picks the most patient one, and
-- a caller waits on it with no bound of its own (the socket's timeout ends the
-- batch and wakes every caller with the error).
local MAX_WAIT_MS = 2147483647  -- the most ngx.semaphore (and settimeouts) take

local function more_patient(ms, than)
  if than == nil then
    return true
  end
  if than == 0 then
    return false
  end
  return ms == 0 or ms > than
end

local function run(premature, lane)
  local quiet_sleep = turn.sleep_is_quiet()  -- (lanes linger only then)
  local sock, reused, reader, view
  local requests = {}
  local send_timeout, read_timeout = false, false  -- applied to sock
  while true do
    if lane.count == 0 then
      if premature or worker_exiting() then
        break
      end
      lane.idle = true
      lane.work:wait(IDLE_SECONDS)
      lane.idle = false
      if lane.count == 0 then
        break
      end
    end

    if not sock then
      local err
      view = lane.view
      sock, err = lane.open(lane.inst, view)
      if not sock then
        fail(lane.queue, 1, lane.count, err)
        lane.count = 0
        lane.connected = false
      else
        reused = sock:getreusedtimes()
        reader = new_reader(lane.inst)
        lane.connected = true
        send_timeout, read_timeout = false, false
      end
    end

    if sock then
      -- each caller bounds its own wait; the connection waits for the most patient
      if lane.send_timeout ~= send_timeout or lane.read_timeout ~= read_timeout then
        send_timeout, read_timeout = lane.send_timeout, lane.read_timeout
        sock:settimeouts(view.connect_timeout, send_timeout, read_timeout)
      end
      local batch, n = lane.queue, lane.count
      lane.queue, lane.spare, lane.count = lane.spare, batch, 0
      for i = 1, n do
        requests[i] = batch[i].request
      end

      local step = counts.step
      counted_batches.batches = counted_batches.batches + step
      counted_batches.calls = counted_batches.calls + n * step
      if n * step > counted_batches.max_calls then
        counted_batches.max_calls = n
      end
      local ok, err, received, at
      ok, err = sock:send(requests)
      for i = 1, n do
        requests[i] = nil  -- no request bytes (a large set's) kept past the write
      end
      if not ok then
        received, at = false, 1
      else
        ok, err, received, at = read_batch(sock, reader, batch, n)
      end
      if ok then
        local answered = err  -- (read_batch's second result: a caller was woken)
        if answered and quiet_sleep and lane.count > 0 and not (premature or worker_exiting()) then
          linger(lane)
        end
      else
        sock:close()
        sock = nil
        lane.connected = false
        if reused > 0 and not received and CLOSED_ERRORS[err] then
          -- a pooled connection the server had closed before this first batch:
          -- nothing was answered, so the batch goes out again on a new connection
          local queued = lane.count
          for i = queued, 1, -1 do
            lane.queue[i + n] = lane.queue[i]
          end
          for i = 1, n do
            lane.queue[i] = batch[i]
            batch[i] = nil
          end
          lane.count = queued + n
        else
          fail(batch, at, n, err)
        end
      end
      reused = 0
    end
  end

  if sock and not sock:setkeepalive(view.keepalive_timeout, view.pool_size) then
    sock:close()
  end
  lane.connected = false
  lane.running = false
  if lane.count > 0 then
    start(lane)  -- calls queued while this runner was giving up
  end
end

start = function(lane)
  local ok, err = timer_at(0, run, lane)
  if not ok then
    fail(lane.queue, 1, lane.count, "cannot start a pipeline: " .. tostring(err))
    lane.count = 0
    return
  end
  lane.running = true
end

---
-- Tells whether a lane (a pool, for one max_reply_size) has work in progress
-- (then a new call joins it rather than opening a connection of its own).
function _M.busy(pool)
  local lane = lanes[pool]
  return lane ~= nil and lane.running
end

-- For the specs: true when no lane's runner runs (each exits IDLE_SECONDS after
-- its last batch, pooling its connection), so that later calls go direct again.
function _M.idle()
  for _, lane in pairs(lanes) do
    if lane.running then
      return false
    end
  end
  return true
end

-- The lane of a view's pool, made on first use; it opens its connections with
-- the most patient timeouts of the views that use it.
local function lane_of(inst, view, open)
  local pool = view.lane  -- the pool name and max_reply_size
  local lane = lanes[pool]
  if not lane then
    lane = { queue = {}, spare = {}, count = 0, work = new_semaphore(), running = false,
             idle = false, lingering = false, connected = false, send_timeout = nil,
             read_timeout = nil }
    lanes[pool] = lane
  end
  -- every view of a pool has the same endpoint and identity (the pool name says
  -- so); the lane opens its connections with the most patient connect_timeout
  local lane_view = lane.view
  if not lane_view or more_patient(view.connect_timeout, lane_view.connect_timeout) then
    lane.inst, lane.view = inst, view
  end
  lane.open = open
  if more_patient(view.send_timeout, lane.send_timeout) then
    lane.send_timeout = view.send_timeout
  end
  if more_patient(view.read_timeout, lane.read_timeout) then
    lane.read_timeout = view.read_timeout
  end
  return lane
end

-- How long a caller waits for its operation: its own read_timeout (connect_timeout
-- too while the lane has no connection yet).
local function wait_bound(view, lane)
  local wait_ms = view.read_timeout
  if not (lane and lane.connected) then
    wait_ms = view.connect_timeout ~= 0 and wait_ms ~= 0 and wait_ms + view.connect_timeout or 0
  end
  if wait_ms == 0 or wait_ms > MAX_WAIT_MS then
    wait_ms = MAX_WAIT_MS
  end
  return wait_ms
end

local function enqueue(lane, rec)
  rec.queued = true
  local n = lane.count + 1
  lane.count = n
  lane.queue[n] = rec
  if not lane.running then
    start(lane)
  elseif lane.idle then
    lane.idle = false
    lane.work:post(1)
  end
end

---
-- Queues an operation whose request is built on the pool's shared connection,
-- without waiting.
-- @param inst the core instance
-- @tparam table view the driver view (pool, timeouts, ...)
-- @param op the operation, started
-- @tparam string|table request its request bytes (a string, or pieces)
-- @tparam function open opens a set-up connection: open(inst, view) -> sock | nil, err
-- @tparam[opt] table group a group (see `group`) the operation joins: awaited
-- with the group's other operations (`await_group`, then `take`), else alone (`await`)
-- @return the waiting record
function _M.submit(inst, view, op, request, open, group)
  local lane = lane_of(inst, view, open)
  local rec = take_record()
  rec.op, rec.request, rec.abandoned = op, request, false
  local wait_ms = wait_bound(view, lane)
  rec.wait_ms = wait_ms
  if group then
    rec.group = group
    group.pending = group.pending + 1
    if wait_ms > group.wait_ms then
      group.wait_ms = wait_ms
    end
  end
  enqueue(lane, rec)
  return rec
end

---
-- A record for an operation built for the view's pool whose sending somebody
-- else decides later (a sentinel call parked on a shared lookup): `queue` sends
-- it on the pool's pipeline, `release` hands it back unsent; its caller `await`s
-- it either way, once.
-- @param view the view it is built for
-- @param op the operation, started
-- @tparam string|table request its request bytes
-- @return the record
function _M.park(view, op, request)
  local rec = take_record()
  rec.op, rec.request, rec.abandoned, rec.queued = op, request, false, false
  rec.wait_ms = wait_bound(view, lanes[view.lane])
  return rec
end

---
-- Sends a parked operation on the pool's pipeline (as `submit`). Nothing is
-- sent for a record whose caller stopped waiting.
-- @return true when queued
function _M.queue(rec, inst, view, open)
  if rec.abandoned then
    return false
  end
  enqueue(lane_of(inst, view, open), rec)
  return true
end

---
-- Wakes the caller of a parked operation without sending it (`await` returns
-- false).
function _M.release(rec)
  if not rec.abandoned then
    deliver(rec, false)
  end
end

---
-- Waits for a submitted (or parked) operation, not in a group.
-- @param rec what `submit` (or `park`) returned
-- @tparam[opt] number extra seconds of waiting beyond the operation's bound (a
-- parked operation's caller waits for the lookup first)
-- @return status, r1, r2 as op:read does (DONE, results), or nil, err; a
-- fourth value, true, when the caller timed out and the runner keeps the
-- operation (false: a parked one never sent); false when a parked operation
-- was released unsent
local function await(rec, extra)
  local ok, err = rec.sema:wait(rec.wait_ms / 1000 + (extra or 0))
  after_wake()
  if not ok then
    rec.abandoned = true
    return nil, err, nil, rec.queued
  end
  local status, r1, r2 = rec.status, rec.r1, rec.r2
  give_record(rec)
  return status, r1, r2
end
_M.await = await

---
-- A new group: operations submitted with it are awaited together, with one
-- wake-up of their caller (a cluster round's node batches).
_M.group = take_group

---
-- Waits until every operation of the group is answered, or the most patient
-- one's bound passed; then `take` each of them. Gives the group back unless
-- the wait timed out.
-- @return true, or nil, err
function _M.await_group(group)
  -- (answered already, also by a lane that failed to start: posted, no yield)
  local ok, err = group.sema:wait(group.wait_ms / 1000)
  after_wake()
  if not ok then
    return nil, err
  end
  group.wait_ms = 0
  give_group(group)
  return true
end

---
-- The results of a grouped operation, after `await_group`.
-- @return as `await`
function _M.take(rec)
  if not rec.done then
    rec.abandoned = true
    return nil, "timeout", nil, true
  end
  local status, r1, r2 = rec.status, rec.r1, rec.r2
  give_record(rec)
  return status, r1, r2
end

---
-- Runs an operation whose request is built, on the pool's shared connection:
-- `submit` and `await`.
-- @return as `await`
function _M.call(inst, view, op, request, open)
  return await(_M.submit(inst, view, op, request, open))
end

return _M
