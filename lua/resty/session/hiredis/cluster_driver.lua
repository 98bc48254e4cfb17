---
-- The cosocket driver of `resty.session.hiredis.cluster` (internal). It drives
-- the core's cluster operation (src/cluster_operation.hpp: slot groups, phases,
-- MOVED/ASK/TRYAGAIN/CLUSTERDOWN) over `ngx.socket.tcp`: each round's node
-- batches run in parallel, each on that node's own pool through the
-- single-node driver (`resty.session.hiredis.cosocket`), so
-- handshakes, TLS, stale pooled connections and pool names work as for one node.
-- The slot map lives in the core, per worker process, shared with the native
-- transport of the same process.
--
-- Per call: `begin` (start and the first round's plan; a round of one node batch
-- comes back loaded), the node's round trip (on its auto-pipeline, as a storage
-- call), and `finish` (absorb, end_round and the results): a call to one node (a
-- `get`, or a `set` without metadata) crosses into C there and in the round
-- trip's reads only, and spawns no light thread. Other rounds: `plan`, a
-- `load_batch`/`absorb` pair per node, `end_round`, and `result` at the end. A
-- round of several node batches queues each on its node's auto-pipeline and is
-- woken once, when the last is answered (no light thread); only a node whose
-- pool does not pipeline (yet: its first connection; or pipelining = false)
-- gets a light thread.
--
-- @module resty.session.hiredis.cluster_driver
-- @local

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"
local recycler = require "resty.session.hiredis.recycler"

local type = type
local find = string.find
local new_cluster_operation = core.cluster_operation
local new_operation = core.operation
local round_trip = cosocket.round_trip
local submit = cosocket.submit
local pipelines = cosocket.pipelines
local new_group = cosocket.group
local await_group = cosocket.await_group
local take = cosocket.take

local ngx = type(_G.ngx) == "table" and _G.ngx or nil
-- (ngx.thread.spawn is looked up per use, a table read: a wrapper installed
-- later, as the specs' counting one, is honoured)
local ngx_thread = ngx and ngx.thread
local wait = ngx_thread and ngx_thread.wait
local sleep = ngx and ngx.sleep
local now = ngx and ngx.now
local update_time = ngx and ngx.update_time

local _M = {}

_M.serves = cosocket.serves

-- How many times a batch is sent again on another connection after a pooled
-- one turned out closed by the server (as the single-node driver does).
local MAX_STALE_RETRIES = 2

-- Reused operations: node round trips and whole cluster calls.
local take_op, give_op = recycler.new(new_operation, 64)
local take_cluster_op, give_cluster_op = recycler.new(new_cluster_operation, 64)

-- Connection failures are worth another round (after a refresh); a timeout
-- (the call's time is spent) and a Redis refusal (WRONGPASS, NOAUTH...) are not.
local function retryable(err)
  return err ~= "timeout" and not find(err, "^[A-Z]")
end

---
-- The driver's view of a cluster instance: rebuilt on every configuration change.
function _M.view(cinst, configuration)
  return {
    transport = configuration.transport,
    budget = cinst:retry_budget() / 1000,
    nodes = {},  -- host -> port -> { inst = single-node core instance, view = its cosocket view }
  }
end

local function node_of(view, cinst, host, port)
  local by_port = view.nodes[host]  -- (by host, then port: no key string built per call)
  if not by_port then
    by_port = {}
    view.nodes[host] = by_port
  end
  local node = by_port[port]
  if not node then
    local inst = cinst:node(host, port)
    local node_view = cosocket.view(inst, inst:fields())
    node_view.transport = view.transport
    node = { inst = inst, view = node_view }
    by_port[port] = node
  end
  return node
end

-- Builds op's request again: batch i of the cluster operation `source`, or
-- (no i) the topology query of the cluster instance `source`.
local function reload(source, i, op)
  if i then
    return (source:load_batch(i, op))
  end
  return (source:load_topology_query(op))
end

-- Sends request (rebuilt by reload(source, i, op) after a stale pooled
-- connection: no closure per call); true or nil, err, lent (op stays with a
-- pipeline runner: never reuse it).
local function send(node, op, request, source, i)
  local ok, err, stale, lent = round_trip(node.inst, node.view, op, request)
  local retries = 0
  while not ok and stale and retries < MAX_STALE_RETRIES do
    retries = retries + 1
    ok, err, stale, lent = round_trip(node.inst, node.view, op, reload(source, i, op))
  end
  return ok, err, lent
end

-- Loads the slot map from the first node that answers; nil, or the last error.
local function refresh(cinst, view)
  local candidates = cinst:refresh_candidates()
  local op = take_op()
  local last_err = "no cluster node answered"
  for j = 1, #candidates, 2 do
    local host, port = candidates[j], candidates[j + 1]
    local node = node_of(view, cinst, host, port)
    for _ = 1, 2 do  -- a second time with CLUSTER SLOTS when SHARDS is unknown
      local ok, err, lent = send(node, op, reload(cinst, nil, op), cinst)
      if lent then
        op = take_op()  -- a pipeline runner still holds the other one
      end
      if not ok then
        last_err = err
        if not retryable(err) and err ~= "timeout" then
          give_op(op)
          return err  -- credentials: every node says the same
        end
        break
      end
      local done, aerr = cinst:absorb_topology(op, host, port)
      if done then
        give_op(op)
        return nil
      end
      if done == nil then
        last_err = aerr
        break
      end
    end
  end
  give_op(op)
  return last_err
end

-- Batch i of the round failed: the call learns why; op goes back to the
-- recycler unless a pipeline runner still holds it (lent).
local function batch_failed(cop, i, op, err, lent)
  cop:failed(i, err, retryable(err))
  if not lent then
    op:trim()  -- a failed batch keeps none of its request
    give_op(op)
  end
end

-- Sends batch i, loaded in op, to its node and hands the replies to the call.
local function run_loaded(cop, i, node, op, request)
  local ok, err, lent = send(node, op, request, cop, i)
  if not ok then
    return batch_failed(cop, i, op, err, lent)
  end
  cop:absorb(i, op)  -- trims op
  give_op(op)
end

-- Loads batch i into a new op -> node, op, request; or nil after telling the
-- call why (an invalid batch).
local function load(cinst, view, cop, i)
  local op = take_op()
  local request, host, port = cop:load_batch(i, op)
  if not request then
    give_op(op)
    cop:failed(i, host, false)
    return nil
  end
  return node_of(view, cinst, host, port), op, request
end

-- Per round of several batches: [i] batch i's waiting record (its node's
-- pipeline) or light thread, [n + i] its op.
local take_round, give_round = recycler.new(function() return {} end, 64)

-- Runs the round's n batches (n planned already). Several batches go out
-- together: each on its node's pipeline, all in one group (the caller is woken
-- once, when the last is answered: no light thread), or, to a node that does
-- not pipeline (yet), in a light thread.
local function run_round(cinst, view, cop, n)
  if n == 1 then
    local node, op, request = load(cinst, view, cop, 1)
    if node then
      run_loaded(cop, 1, node, op, request)
    end
    return
  end
  if n < 1 then
    return
  end
  local round = take_round()
  local group
  for i = 1, n do
    local node, op, request = load(cinst, view, cop, i)
    if node then
      round[n + i] = op
      if pipelines(node.view) then
        group = group or new_group()
        round[i] = submit(node.inst, node.view, op, request, group)
      else
        round[i] = ngx_thread.spawn(run_loaded, cop, i, node, op, request)
      end
    else
      round[i] = false
    end
  end
  if group then
    await_group(group)  -- (a timeout: take says so per batch)
  end
  for i = 1, n do
    local waiting = round[i]
    if type(waiting) == "thread" then
      wait(waiting)
    elseif waiting then
      local op = round[n + i]
      local ok, err, _, lent = take(waiting)
      if ok then
        cop:absorb(i, op)  -- trims op
        give_op(op)
      else
        batch_failed(cop, i, op, err, lent)
      end
    end
    round[i], round[n + i] = nil, nil
  end
  give_round(round)
end

local function results(cop, r1, r2)
  give_cluster_op(cop)
  if r2 == nil then
    return r1
  end
  return r1, r2
end

---
-- Runs a storage method against the cluster over cosockets.
-- @param cinst the core cluster instance
-- @tparam table view the instance's driver view
-- @tparam number method 1 set, 2 get, 3 delete, 4 read_metadata
-- @return the method's results
function _M.call(cinst, view, method, a, b, c, d, e, f, g, h, j)
  local cop = take_cluster_op()
  local op = take_op()
  -- begin validates the arguments and starts counting the call (core stats)
  local request, host, port = cop:begin(cinst, op, method, a, b, c, d, e, f, g, h, j)
  if request == nil then
    give_op(op)
    give_cluster_op(cop)
    return nil, host
  end
  if not now then
    give_op(op)
    cop:fail("cosocket transport unavailable: not running inside nginx")
    return results(cop, cop:result())
  end
  local deadline = now() + view.budget  -- (the event loop's time: no clock read here)
  local planned  -- batches of a round planned already
  local must_refresh = false  -- begin took the refresh (only one caller gets it)
  local finished, want_refresh, backoff_ms
  if request then
    -- one node batch (a get, a set without metadata...): begin, the node's
    -- round trip and finish are the call's crossings into C
    local node = node_of(view, cinst, host, port)
    local ok, err, lent = send(node, op, request, cop, 1)
    if ok then
      local r1, r2
      finished, r1, r2 = cop:finish(op)
      if finished then
        give_op(op)
        return results(cop, r1, r2)
      end
      if finished == nil then  -- a broken reply
        give_op(op)
        return results(cop, nil, r1)
      end
      want_refresh, backoff_ms = r1, r2
    else
      batch_failed(cop, 1, op, err, lent)
      finished, want_refresh, backoff_ms = cop:end_round()
    end
  else
    give_op(op)
    planned = host  -- false, n: the round is planned
    must_refresh = not host  -- false: load the slot map first
  end

  while not finished do
    if planned then
      run_round(cinst, view, cop, planned)
      finished, want_refresh, backoff_ms = cop:end_round()
      if finished then
        break
      end
    end
    if want_refresh then
      cinst:want_refresh()
    end
    if backoff_ms and backoff_ms > 0 then
      update_time()
      if (deadline - now()) * 1000 <= backoff_ms then
        cop:fail()
        break
      end
      sleep(backoff_ms / 1000)
    end
    if must_refresh or cinst:take_refresh() then
      must_refresh = false
      local rerr = refresh(cinst, view)
      if rerr and cinst:map_empty() then
        cop:fail(rerr)
        break
      end
    end
    planned = cop:plan()
    if not planned then
      break  -- finished
    end
    want_refresh, backoff_ms = nil, nil
  end
  return results(cop, cop:result())
end

return _M
