---
-- OpenResty transport: runs the core's sans-I/O operations over `ngx.socket.tcp`,
-- so that storage calls made in request phases never block the nginx event loop.
-- The core builds every request byte and parses every reply byte; this file only
-- moves bytes and manages the connection (pool, TLS, handshake, keepalive).
--
-- @module resty.session.hiredis.cosocket

local type = type
local tostring = tostring
local pcall = pcall
local open = io.open

local _M = {
  _VERSION = "0.1.0",
}

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

-- Errors that mean "the server closed this connection" (send or receive side).
local CLOSED_ERRORS = {
  ["closed"] = true,
  ["broken pipe"] = true,
  ["connection reset by peer"] = true,
}

-- How many times a call may be retried after a pooled connection turned out to be
-- closed by the server before it sent anything.
local MAX_STALE_RETRIES = 2

-- Server version (major * 10000 + minor * 100 + patch) learned by the handshake of
-- the latest fresh connection of each pool, per worker. 0 = unknown.
local versions = {}

-- Returns the `ngx` table when it offers cosockets, else nil (plain LuaJIT, or an
-- `ngx.run_worker_thread` VM, whose reduced `ngx` has no sockets and no phases).
local function ngx_with_sockets()
  local ngx = _G.ngx
  if type(ngx) ~= "table" then
    return nil
  end
  local socket = ngx.socket
  if type(socket) ~= "table" or type(socket.tcp) ~= "function" then
    return nil
  end
  return ngx
end

---
-- Tells whether the current phase can use cosockets.
-- @treturn boolean
function _M.available()
  local ngx = ngx_with_sockets()
  if not ngx then
    return false
  end
  local get_phase = ngx.get_phase
  if type(get_phase) ~= "function" then
    return false
  end
  local ok, phase = pcall(get_phase)
  return ok and COSOCKET_PHASES[phase] == true
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

-- Runs one operation over the socket (see docs/core-api.md). Returns true when the
-- operation finished (its result is then in op:result()), or nil, err, received
-- where `received` tells whether any reply byte arrived before the failure.
local function exchange(sock, op, version)
  local received = false
  local request = op:request(version)
  while request do
    local sent, err = sock:send(request)
    if not sent then
      return nil, err, received
    end
    repeat
      local data, rerr = sock:receiveany(RECEIVE_SIZE)
      if not data then
        return nil, rerr, received
      end
      received = true
      local done, perr = op:feed(data)
      if done == nil then
        return nil, perr, received
      end
    until done
    request = op:request(version)
  end
  return true
end

-- Connects (or takes a pooled connection), does TLS and the handshake on fresh
-- connections. Returns sock, server_version, reused_times, or nil, err, retryable.
local function open_connection(ngx, inst, pool)
  -- raises outside cosocket phases (transport = "cosocket" forced there)
  local created, sock, err = pcall(ngx.socket.tcp)
  if not created then
    return nil, "cosocket transport unavailable: " .. tostring(sock)
  end
  if not sock then
    return nil, err
  end

  local connect_timeout = inst.connect_timeout
  sock:settimeouts(connect_timeout, connect_timeout, connect_timeout)

  local options = {
    pool = pool,
    pool_size = inst.pool_size,
    backlog = inst.backlog,
  }
  local host, port = inst:cosocket_target()
  local ok
  if port then
    ok, err = sock:connect(host, port, options)
  else
    ok, err = sock:connect(host, options)
  end
  if not ok then
    return nil, err
  end

  local reused = sock:getreusedtimes()
  if reused == 0 and inst.ssl then
    local cert_path, key_path = inst.ssl_client_cert, inst.ssl_client_priv_key
    if cert_path and key_path then
      local cert, key = client_cert(cert_path, key_path)
      if not cert then
        sock:close()
        return nil, key
      end
      ok, err = sock:setclientcert(cert, key)
      if not ok then
        sock:close()
        return nil, err
      end
    end
    -- false: no session reuse, and a plain `true` on success
    ok, err = sock:sslhandshake(false, inst.server_name or host, inst.ssl_verify == true)
    if not ok then
      sock:close()
      return nil, err
    end
  end

  local handshake = inst:prepare_handshake(reused == 0)
  local version = versions[pool] or 0
  if handshake then
    local received
    ok, err, received = exchange(sock, handshake, version)
    if not ok then
      sock:close()
      return nil, err, reused > 0 and not received and CLOSED_ERRORS[err]
    end
    local result, herr = handshake:result()
    if result == nil then
      -- an unauthenticated or half-set-up connection is never pooled
      sock:close()
      return nil, herr
    end
    if reused == 0 then
      version = type(result) == "number" and result or 0
      versions[pool] = version
    end
  end

  sock:settimeouts(connect_timeout, inst.send_timeout, inst.read_timeout)
  return sock, version, reused
end

-- One attempt of a call on one connection; nil, err, retryable on failure.
local function attempt(ngx, inst, op)
  local sock, version, reused = open_connection(ngx, inst, inst:pool_name())
  if not sock then
    local err, retryable = version, reused
    return nil, err, retryable
  end

  local ok, err, received = exchange(sock, op, version)
  if not ok then
    -- timeout, I/O or protocol error: the connection state is unknown, never pool it
    sock:close()
    return nil, err, reused > 0 and not received and CLOSED_ERRORS[err]
  end

  -- a clean exchange (also when the result is a Redis error reply): pool it
  local kept = sock:setkeepalive(inst.keepalive_timeout, inst.pool_size)
  if not kept then
    sock:close()
  end
  return true
end

---
-- Runs a storage method over cosockets.
-- @param inst the core instance
-- @tparam string method "set" | "get" | "delete" | "read_metadata"
-- @return the method's results
function _M.call(inst, method, ...)
  local ngx = ngx_with_sockets()
  if not ngx then
    return nil, "cosocket transport unavailable: not running inside nginx"
  end

  -- validate (and build) before touching the network
  local op, err = inst:prepare(method, ...)
  if not op then
    return nil, err
  end

  local ok, aerr, retryable = attempt(ngx, inst, op)
  local retries = 0
  while not ok and retryable and retries < MAX_STALE_RETRIES do
    -- a pooled connection the server had closed: the operation has seen no reply
    -- bytes, so a fresh operation on another connection is safe
    retries = retries + 1
    op, err = inst:prepare(method, ...)
    if not op then
      return nil, err
    end
    ok, aerr, retryable = attempt(ngx, inst, op)
  end
  if not ok then
    return nil, aerr
  end
  return op:result()
end

-- For the specs: forget cached server versions.
function _M.reset_versions()
  versions = {}
end

return _M
