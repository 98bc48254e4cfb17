---
-- OpenResty transport (internal): runs the core's sans-I/O operations over
-- `ngx.socket.tcp`, so that storage calls made in request phases never block the
-- nginx event loop. The core builds every request byte and parses every reply
-- byte; this file only moves bytes and manages the connection (pool, TLS,
-- handshake, keepalive).
--
-- A call in the common case (a pooled connection) crosses into C twice: once to
-- validate the arguments and build the request, once to parse the reply into
-- the call's results. The configuration it needs is a plain table (the view),
-- rebuilt by the public module whenever a field is written.
--
-- @module resty.session.hiredis.cosocket
-- @local

local core = require "resty.session.hiredis.core"
local recycler = require "resty.session.hiredis.recycler"
local stats = require "resty.session.hiredis.stats"

-- Auto-pipelining needs ngx.semaphore and timers: absent outside nginx.
local has_pipeline, pipeline = pcall(require, "resty.session.hiredis.pipeline")
if not has_pipeline then
  pipeline = nil
end

local type = type
local pcall = pcall
local tostring = tostring
local open = io.open
local new_operation = core.operation
local counts = stats.counts
local connections = counts.connections

local _M = {
  _VERSION = core._VERSION,
}

-- Method ids understood by op:start (src/lua_operation.hpp).
_M.SET, _M.GET, _M.DELETE, _M.READ_METADATA = 1, 2, 3, 4

-- Phases where lua-nginx-module allows cosockets (its NGX_HTTP_LUA_CONTEXT_YIELDABLE:
-- rewrite, server_rewrite, access, content, timer, ssl_client_hello, ssl_cert,
-- ssl_session_fetch), plus stream-lua-module's preread. Everywhere else (init,
-- init_worker, set, header_filter, body_filter, log, balancer, ssl_session_store,
-- exit_worker) the native transport serves the call.
local COSOCKET_PHASES = {
  rewrite = true,
  server_rewrite = true,
  access = true,
  content = true,
  timer = true,
  ssl_client_hello = true,
  ssl_cert = true,
  ssl_session_fetch = true,
  preread = true,
}
_M.COSOCKET_PHASES = COSOCKET_PHASES

local RECEIVE_SIZE = 65536

-- What a pool's first call assumes until its first handshake tells (src/operation.hpp).
local REDIS_7 = 70000

-- op:read statuses (src/lua_driver.cpp).
local NEED_MORE, DONE, NEXT_ROUND = 0, 1, 2

-- Errors that mean "the server closed this connection" (send or receive side).
local CLOSED_ERRORS = {
  ["closed"] = true,
  ["broken pipe"] = true,
  ["connection reset by peer"] = true,
}

-- How many times a call may be retried after a pooled connection turned out to be
-- closed by the server before it sent anything.
local MAX_STALE_RETRIES = 2

-- Per worker and pool: the server version (major * 10000 + minor * 100 + patch;
-- 0 when HELLO was refused) learned by the pool's first connection, whose
-- handshake ran on a round trip of its own. A pool listed here has proven its
-- credentials and database, so later new connections send their handshake in
-- the same write as the first command: no extra round trip, and no write let
-- through on a wrong identity or database by a pool that never worked.
local versions = {}

-- The `ngx` API when this Lua VM has cosockets (not plain LuaJIT, nor an
-- `ngx.run_worker_thread` VM, whose reduced `ngx` has no sockets and no phases).
-- `ngx.socket.tcp` is looked up per call (one table read), so that wrappers
-- installed after this module was loaded are honoured.
local ngx = type(_G.ngx) == "table" and _G.ngx or nil
local ngx_socket = ngx and type(ngx.socket) == "table" and type(ngx.socket.tcp) == "function"
                   and ngx.socket or nil
local get_phase = ngx_socket and type(ngx.get_phase) == "function" and ngx.get_phase or nil

-- Reused operations (each keeps its buffers between calls); a call that is
-- killed with its request simply does not give its operation back.
local take_operation, give_back = recycler.new(new_operation, 64)

---
-- Tells whether the current phase can use cosockets.
-- @treturn boolean
local function available()
  if not get_phase then
    return false
  end
  local ok, phase = pcall(get_phase)
  return ok and COSOCKET_PHASES[phase] == true
end
_M.available = available

-- Whether a call with this view goes over cosockets: `transport` forces one,
-- otherwise the phase decides.
function _M.serves(view)
  local transport = view.transport
  if transport == nil then
    return get_phase ~= nil and COSOCKET_PHASES[get_phase()] == true
  end
  return transport == "cosocket"
end

---
-- The driver's view of an instance: every value a call needs, read from plain
-- table fields. Rebuilt by the public module on every validated field write.
-- @param inst the core instance
-- @tparam table fields the instance's configuration mirror (inst:fields())
-- @treturn table
function _M.view(inst, fields)
  local host, port = inst:cosocket_target()
  local pool = inst:pool_name()
  local connect_timeout = fields.connect_timeout
  return {
    pool = pool,
    -- pipelined calls share a reply stream, checked with one max_reply_size; a
    -- write's WAIT holds the stream up to wait_timeout: only calls that wait
    -- alike queue behind it
    lane = pool .. "\0" .. fields.max_reply_size
           .. (fields.wait_replicas > 0 and ("\0" .. fields.wait_replicas .. "/" .. fields.wait_timeout) or ""),
    host = host,
    port = port,
    connect_options = { pool = pool, pool_size = fields.pool_size, backlog = fields.backlog },
    pool_size = fields.pool_size,
    connect_timeout = connect_timeout,
    send_timeout = fields.send_timeout,
    read_timeout = fields.read_timeout,
    keepalive_timeout = fields.keepalive_timeout,
    ssl = fields.ssl,
    ssl_verify = fields.ssl_verify == true,
    server_name = fields.server_name or host,
    ssl_client_cert = fields.ssl_client_cert,
    ssl_client_priv_key = fields.ssl_client_priv_key,
    force_auth = fields.force_auth == true,
    transport = fields.transport,
    pipelining = fields.pipelining ~= false and pipeline ~= nil,
  }
end

local function read_file(path)
  local file, err = open(path, "rb")
  if not file then
    return nil, err
  end
  local data = file:read("*a")
  file:close()
  return data
end

-- Client certificates for TLS client authentication, parsed once per worker.
local client_certs = {}

local function client_cert(cert_path, key_path)
  local cache_key = cert_path .. "\0" .. key_path
  local entry = client_certs[cache_key]
  if entry then
    return entry[1], entry[2]
  end
  local ok, ssl = pcall(require, "ngx.ssl")
  if not ok then
    return nil, "TLS client certificates need ngx.ssl (lua-resty-core)"
  end
  local pem, err = read_file(cert_path)
  if not pem then
    return nil, "cannot read ssl_client_cert: " .. err
  end
  local cert, cerr = ssl.parse_pem_cert(pem)
  if not cert then
    return nil, "invalid ssl_client_cert: " .. (cerr or "unknown error")
  end
  pem, err = read_file(key_path)
  if not pem then
    return nil, "cannot read ssl_client_priv_key: " .. err
  end
  local key, kerr = ssl.parse_pem_priv_key(pem)
  if not key then
    return nil, "invalid ssl_client_priv_key: " .. (kerr or "unknown error")
  end
  client_certs[cache_key] = { cert, key }
  return cert, key
end

-- Sends the request and reads until the operation is done (later round trips
-- included). Returns status, r1, r2 from op:read (DONE: the results; 3: nil, err
-- from a refused handshake), or nil, err, received when the connection failed,
-- where `received` tells whether any reply byte had arrived.
local function exchange(sock, op, request)
  local received = false
  while true do
    local sent, err = sock:send(request)
    if not sent then
      return nil, err, received
    end
    local status, r1, r2
    repeat
      local data, rerr = sock:receiveany(RECEIVE_SIZE)
      if not data then
        return nil, rerr, received
      end
      received = true
      status, r1, r2 = op:read(data)
      if not status then
        return nil, r1, true
      end
    until status ~= NEED_MORE
    if status ~= NEXT_ROUND then
      return status, r1, r2
    end
    request = r1
  end
end

-- The handshake of a pool's first connection, on a round trip of its own, within
-- connect_timeout. Returns the server version, or nil, err.
local function first_handshake(sock, inst)
  local handshake = inst:prepare_handshake(true)
  local request = handshake:request(0)
  while request do
    local sent, err = sock:send(request)
    if not sent then
      return nil, err
    end
    local done
    repeat
      local data, rerr = sock:receiveany(RECEIVE_SIZE)
      if not data then
        return nil, rerr
      end
      done, err = handshake:feed(data)
      if done == nil then
        return nil, err
      end
    until done
    request = handshake:request(0)
  end
  local version, err = handshake:result()
  if version == nil then
    return nil, err
  end
  return version
end

-- TLS on a new connection, within connect_timeout. view: { server_name,
-- ssl_verify, ssl_client_cert, ssl_client_priv_key } (the sentinel storage's
-- connections to its sentinels use it too).
local function start_tls(sock, view)
  local cert_path, key_path = view.ssl_client_cert, view.ssl_client_priv_key
  if cert_path and key_path then
    local cert, key = client_cert(cert_path, key_path)
    if not cert then
      return nil, key
    end
    local ok, err = sock:setclientcert(cert, key)
    if not ok then
      return nil, err
    end
  end
  -- false: no session reuse, and a plain `true` on success
  return sock:sslhandshake(false, view.server_name, view.ssl_verify)
end
_M.start_tls = start_tls

-- A cosocket connected (or taken from nginx's pool) with the view's timeouts.
-- Returns sock, reused_times, or nil, err.
local function connect(view)
  local sock, err
  if view.transport == nil then
    sock, err = ngx_socket.tcp()
  elseif not ngx_socket then
    return nil, "cosocket transport unavailable: not running inside nginx"
  else
    -- forced: ngx.socket.tcp raises outside cosocket phases
    local created
    created, sock, err = pcall(ngx_socket.tcp)
    if not created then
      return nil, "cosocket transport unavailable: " .. tostring(sock)
    end
  end
  if not sock then
    return nil, err
  end
  sock:settimeouts(view.connect_timeout, view.send_timeout, view.read_timeout)
  local ok
  local port = view.port
  if port then
    ok, err = sock:connect(view.host, port, view.connect_options)
  else
    ok, err = sock:connect(view.host, view.connect_options)
  end
  if not ok then
    connections.failed = connections.failed + counts.step
    return nil, err
  end
  local reused = sock:getreusedtimes()
  if reused > 0 then
    connections.reused = connections.reused + counts.step
  else
    connections.opened = connections.opened + counts.step
  end
  return sock, reused
end

-- A new connection that could not be set up (TLS, handshake) counts as failed.
local function set_up_failed(sock, err)
  sock:close()
  connections.failed = connections.failed + counts.step
  return nil, err
end

-- TLS and, unless the pool has proven itself, the first handshake of a new
-- connection, both within connect_timeout. Returns true, or nil, err after
-- closing the socket.
local function set_up(sock, inst, view, handshake)
  local connect_timeout = view.connect_timeout
  sock:settimeouts(connect_timeout, connect_timeout, connect_timeout)
  if view.ssl then
    local ok, err = start_tls(sock, view)
    if not ok then
      return set_up_failed(sock, err)
    end
  end
  if handshake then
    -- an unauthenticated or half-set-up connection is never pooled
    local version, err = first_handshake(sock, inst)
    if not version then
      return set_up_failed(sock, err)
    end
    versions[view.pool] = version
  end
  sock:settimeouts(connect_timeout, view.send_timeout, view.read_timeout)
  return true
end

-- A pipeline lane's connection: set up completely before any batch goes out.
local function open_for_lane(inst, view)
  local sock, reused = connect(view)
  if not sock then
    return nil, reused
  end
  if reused == 0 then
    local ok, err = set_up(sock, inst, view, true)
    if not ok then
      return nil, err
    end
  end
  return sock
end

-- One attempt of a call on its own connection. Returns status, r1, r2 as
-- exchange does, or nil, err, retryable.
local function attempt(inst, view, op, request)
  local sock, reused = connect(view)
  if not sock then
    return nil, reused
  end

  local pool = view.pool
  local learning = false
  if reused == 0 then
    local proven = versions[pool]
    if view.ssl or proven == nil then
      local ok, err = set_up(sock, inst, view, proven == nil)
      if not ok then
        return nil, err
      end
      if proven == nil and versions[pool] < REDIS_7 then
        -- the operation was built for Redis >= 7 (what an unproven pool assumes):
        -- pool this clean connection and build it again for the older server
        if not sock:setkeepalive(view.keepalive_timeout, view.pool_size) then
          sock:close()
        end
        return nil, "server older than Redis 7", true
      end
    end
    if proven ~= nil then
      request = op:prefix_handshake(inst, true) or request
      learning = true
    end
  elseif view.force_auth then
    request = op:prefix_handshake(inst, false) or request
  end

  local status, r1, r2 = exchange(sock, op, request)
  if status ~= DONE then
    -- timeout, I/O or protocol error, refused handshake: the connection state is
    -- unknown, never pool it
    sock:close()
    if status == nil then
      return nil, r1, reused > 0 and not r2 and CLOSED_ERRORS[r1]
    end
    return nil, r2
  end
  if learning then
    versions[pool] = op:learned_version()
  end

  -- a clean exchange (also when the result is a Redis error reply): pool it
  if not sock:setkeepalive(view.keepalive_timeout, view.pool_size) then
    sock:close()
  end
  return DONE, r1, r2
end

-- Direct calls in flight per pool (per worker): a call joins the pool's pipeline
-- only when another one is already under way, so an idle worker adds no latency.
local direct_calls = {}

-- Whether the view's calls may share its pool's pipeline: a proven Redis >= 7
-- pool (one round trip per operation), no AUTH per call.
local function pipelines(view)
  return view.pipelining and not view.force_auth and (versions[view.pool] or 0) >= REDIS_7
end
_M.pipelines = pipelines

-- Runs a started operation: on the pool's pipeline when that pays off and is
-- safe (see pipelines), else on a connection of its own. A fourth result, true,
-- says that the operation stays with the pipeline (its caller timed out).
local function run(inst, view, op, request)
  local pool = view.pool
  if pipelines(view) then
    local direct = direct_calls[pool] or 0
    if direct > 0 or pipeline.busy(view.lane) then
      return pipeline.call(inst, view, op, request, open_for_lane)
    end
    direct_calls[pool] = direct + 1
    local status, r1, r2 = attempt(inst, view, op, request)
    direct_calls[pool] = direct_calls[pool] - 1
    return status, r1, r2
  end
  return attempt(inst, view, op, request)
end

-- A failed call: its operation counts the failure (core stats) and goes back
-- without what it grew (a done one trims itself).
local function give_back_failed(op, err)
  op:failed(err)
  op:trim()
  give_back(op)
  return nil, err
end

-- A call's operation, validated and built for the view's pool before anything
-- touches the network: op, request, or nil, err.
local function start_call(inst, view, method, a, b, c, d, e, f, g, h, j)
  local op = take_operation()
  local request, err = op:start(inst, method, versions[view.pool] or REDIS_7, a, b, c, d, e, f, g, h, j)
  if not request then
    return give_back_failed(op, err)
  end
  return op, request
end

-- A call's results from its last exchange (status, r1, r2 as op:read gives them).
local function finish_call(op, status, r1, r2)
  if status ~= DONE then
    return give_back_failed(op, r1)
  end
  give_back(op)
  if r2 == nil then
    return r1  -- true, a value, a table or nil: one value, as the native path returns
  end
  return r1, r2
end

---
-- Runs a storage method over cosockets.
-- @param inst the core instance
-- @tparam table view the instance's driver view (see `view`)
-- @tparam number method one of _M.SET, _M.GET, _M.DELETE, _M.READ_METADATA
-- @return the method's results
function _M.call(inst, view, method, a, b, c, d, e, f, g, h, j)
  local op, request = start_call(inst, view, method, a, b, c, d, e, f, g, h, j)
  if not op then
    return nil, request
  end

  local status, r1, r2, lent = run(inst, view, op, request)
  if lent then
    -- timed out in a pipeline whose runner still holds the operation
    op:failed(r1)
    return nil, r1
  end
  local retries = 0
  while status == nil and r2 and retries < MAX_STALE_RETRIES do
    -- a pooled connection the server had closed (the operation has seen no reply
    -- bytes), or a first handshake that found an older server than assumed: a
    -- fresh operation on another connection is safe
    retries = retries + 1
    local err
    request, err = op:start(inst, method, versions[view.pool] or REDIS_7, a, b, c, d, e, f, g, h, j)
    if not request then
      return give_back_failed(op, err)
    end
    status, r1, r2 = run(inst, view, op, request)
  end
  return finish_call(op, status, r1, r2)
end

-- run's or attempt's results as a round trip's (see round_trip).
local function round_trip_results(status, r1, r2, lent)
  if status == DONE then
    return true
  end
  if lent then
    return nil, r1, false, true
  end
  return nil, r1, r2 and status == nil
end

---
-- Runs one round trip already built in `op` (a cluster node's batch, see
-- `resty.session.hiredis.cluster_driver`) on the view's pool, with the pool's
-- handshake rules, on the pool's pipeline when the view pipelines (as a storage
-- call would).
-- @return true, or nil, err, stale (a pooled connection the server had closed,
-- or an older server than assumed: build the request again and retry), lent
-- (the caller timed out in a pipeline whose runner still holds op: never reuse it)
function _M.round_trip(inst, view, op, request)
  return round_trip_results(run(inst, view, op, request))
end

---
-- Queues a round trip built in `op` on the view's pipeline without waiting, in
-- a group awaited as one: a caller with round trips to several nodes queues
-- them all, then is woken once, when the last is answered. Only for a view that
-- pipelines (`pipelines(view)`, which the caller asks first: the others go by
-- `round_trip`).
-- @tparam table group from `group`
-- @return the waiting record for `take`
function _M.submit(inst, view, op, request, group)
  return pipeline.submit(inst, view, op, request, open_for_lane, group)
end

-- A new group for `submit` (then `await_group` and `take`).
_M.group = pipeline and pipeline.group

---
-- Waits for every round trip submitted in the group: true, or nil, err when
-- the wait timed out (then `take` says "timeout" for those not answered).
_M.await_group = pipeline and pipeline.await_group

---
-- The results of a submitted round trip, as `round_trip` gives them.
-- @param rec what `submit` returned
function _M.take(rec)
  return round_trip_results(pipeline.take(rec))
end

---
-- Parks a storage call on a lookup not begun yet (the sentinel driver): its
-- operation is validated and built now for the view's pool, and then either
-- sent on the pool's pipeline by `launch`, once the lookup named that server,
-- or handed back by `unpark`. Only for a view that pipelines (`pipelines(view)`).
-- @return the parked call, or nil, err
function _M.park(inst, view, method, a, b, c, d, e, f, g, h, j)
  local op, request = start_call(inst, view, method, a, b, c, d, e, f, g, h, j)
  if not op then
    return nil, request
  end
  return pipeline.park(view, op, request)
end

---
-- Sends a parked call on the view's pipeline (the view it was parked for).
-- @return true, or false when its caller stopped waiting
function _M.launch(parked, inst, view)
  return pipeline.queue(parked, inst, view, open_for_lane)
end

---
-- Wakes a parked call unsent: `await_parked` returns false.
_M.unpark = pipeline and pipeline.release

---
-- Waits for a parked call.
-- @tparam number extra seconds it may wait for the lookup, beyond its own bound
-- @return the method's results, as `call`; or false when it was not sent
-- (unparked, or the lookup did not end in time)
function _M.await_parked(parked, extra)
  local op = parked.op
  local status, r1, r2, lent = pipeline.await(parked, extra)
  if status == false or (status == nil and lent == false) then
    op:trim()
    give_back(op)
    return false
  end
  if lent then
    op:failed(r1)  -- the runner keeps it
    return nil, r1
  end
  return finish_call(op, status, r1, r2)
end

---
-- The same on a connection of its own, never pipelined (a probe whose answer
-- must come from its own round trip).
function _M.lone_round_trip(inst, view, op, request)
  return round_trip_results(attempt(inst, view, op, request))
end

-- For the specs: forget what pools have proven.
function _M.reset_versions()
  versions = {}
end

return _M
