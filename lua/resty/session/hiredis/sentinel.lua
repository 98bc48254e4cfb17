---
-- Redis Sentinel storage for lua-resty-session: a drop-in for upstream's
-- `resty.session.redis.sentinel` (same configuration fields, methods, results and
-- Redis data layout as `resty.session.hiredis`).
--
-- `require("resty.session.hiredis").new(configuration)` routes here when the
-- configuration has `sentinels` (and no `nodes`); the module can be named as
-- lua-resty-session's storage directly too (`storage = "resty.session.hiredis.sentinel"`).
--
-- Each call, per the Redis Sentinel client guidelines:
--
-- 1. asks a sentinel for the current master (`SENTINEL get-master-addr-by-name`),
--    or for the healthy replicas (`SENTINEL replicas`) with `role = "slave"`. The
--    sentinels are tried in order; the first that answers moves to the front of
--    the list (per worker), so a hung or dead sentinel costs its timeout once, not
--    on every call. The sentinel connection is pooled and authenticated once (with
--    the sentinel's credentials only);
-- 2. runs the storage call on that address through the single-node path (pooled
--    connections, cosockets or native sockets by phase, auto-pipelining). A new
--    data connection sends `AUTH`/`SELECT` (the master's credentials only) and
--    `ROLE` in the same round trip; a server in another role than asked (a stale
--    sentinel answer) is refused with `role mismatch: expected master, got slave`,
--    and the call asks the sentinels once more.
--
-- The master address is looked up on every call by default: after a failover the
-- old master keeps accepting writes for seconds (until the sentinels reconfigure
-- it), and a client that cached its address would write to a dataset that is about
-- to be discarded. `sentinel_cache_ttl` trades that for fewer round trips. Any
-- connection error, `READONLY`, `LOADING`, `MASTERDOWN` or role mismatch drops the
-- cached address.
--
-- **Differences from `resty.session.redis.sentinel` (4.1.5 on lua-resty-redis-connector):**
--
-- * Two round trips per call on pooled connections (sentinel query, command);
--   upstream: about five for a `set` (sentinel query, `AUTH` and `SELECT` on every
--   call, the command, `DISCARD`).
-- * `ROLE` is checked on each new data connection (upstream trusts the sentinel's
--   answer, and writes to a demoted master until its connections are killed).
-- * A sentinel that answered moves to the front: upstream tries the list in the
--   configured order every call, so a hung first sentinel adds its timeout to each.
-- * Sentinel and data connections live in separate pools whose names include the
--   role, the endpoint and the identity, also under a custom `pool` (upstream's
--   `pool` is shared by sentinel and master connections).
-- * `force_auth` (added): `AUTH` on every call, on the data and sentinel connections.
-- * Methods, results and error handling as `resty.session.hiredis` (`true` from
--   `set`/`delete`; errors inside a transaction are errors).
-- * Works in every nginx phase and outside nginx (upstream needs cosockets).
-- * Sentinels are reached without TLS (`ssl`, `ssl_verify`, `server_name` apply to
--   the Redis servers); upstream passes the same connection options to both.
-- * The configuration is checked at `new` (an error naming the field); the instance
--   is read-only, as upstream's.
--
-- @module resty.session.hiredis.sentinel
-- @license BSD-2-Clause (see LICENSE)

---
-- Configuration
-- @section configuration

---
-- The configuration table given to @{new}. Field names are upstream's.
-- @tfield[opt] string prefix Prefix of the keys (default `nil`).
-- @tfield[opt] string suffix Suffix of the keys (default `nil`).
-- @tfield[opt] string master Name of the monitored master group (default `"mymaster"`).
-- @tfield[opt] string role `"master"` (read and write the master) or `"slave"` (a
-- healthy replica picked at random; sessions cannot be written there) (default `"master"`).
-- @tfield table sentinels Array of `{ host = "...", port = n }` (host default
-- `"127.0.0.1"`, port default `26379`), optionally with `username`/`password` per
-- sentinel (default: `sentinel_username`/`sentinel_password`). Required, not empty.
-- @tfield[opt] string sentinel_username `AUTH` user for the sentinels (default `nil`).
-- @tfield[opt] string sentinel_password `AUTH` password for the sentinels (default `nil`).
-- Never sent to a Redis server.
-- @tfield[opt] string username `AUTH` user for the Redis servers (default `nil`).
-- @tfield[opt] string password `AUTH` password for the Redis servers (default `nil`).
-- Never sent to a sentinel.
-- @tfield[opt] number database `SELECT` on each new Redis connection (default `nil`).
-- @tfield[opt] number connect_timeout Milliseconds, for sentinels and servers
-- (default `60000`, as upstream's effective default).
-- @tfield[opt] number send_timeout Milliseconds (default `60000`).
-- @tfield[opt] number read_timeout Milliseconds (default `60000`).
-- @tfield[opt] number keepalive_timeout Milliseconds an idle pooled connection is kept
-- (default `60000`).
-- @tfield[opt] string pool Pool name; namespaced by role (`sentinel`, `master`,
-- `slave`), endpoint and identity (default: derived from those).
-- @tfield[opt] number pool_size Idle connections kept per pool (default `30`).
-- @tfield[opt] number backlog Waiters per pool for a connection when `pool_size` are
-- open (default `nil`: no limit).
-- @tfield[opt] boolean ssl TLS to the Redis servers (default `false`).
-- @tfield[opt] boolean ssl_verify Verify the servers' certificates (default `nil`: off).
-- @tfield[opt] string server_name SNI and the name verified (default `nil`).
-- @tfield[opt] boolean force_auth `AUTH` on every call (default `nil`).
-- @tfield[opt] number sentinel_cache_ttl *Extension.* Seconds a master (or replica)
-- address is reused without asking a sentinel, per worker (default `0`: ask on every
-- call). Errors that suggest a failover drop it at once.
-- @tfield[opt] string transport *Extension.* As in `resty.session.hiredis`.
-- @tfield[opt] boolean pipelining *Extension.* As in `resty.session.hiredis`.
-- @tfield[opt] number max_reply_size *Extension.* As in `resty.session.hiredis`
-- (default 512 MiB); `set` refuses a longer value before writing to the master.
-- @tfield[opt] number wait_replicas *Extension.* As in `resty.session.hiredis`: writes
-- also wait for this many replicas of the master (default `0`).
-- @tfield[opt] number wait_timeout *Extension.* As in `resty.session.hiredis` (default `1000`).
-- @table configuration

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"

local type = type
local error = error
local pcall = pcall
local rawget = rawget
local ipairs = ipairs
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable
local random = math.random
local remove = table.remove
local insert = table.insert
local find = string.find
local sub = string.sub

local serves = cosocket.serves
local cosocket_call = cosocket.call
local SET, GET, DELETE, READ_METADATA = cosocket.SET, cosocket.GET, cosocket.DELETE, cosocket.READ_METADATA

local ngx = type(_G.ngx) == "table" and _G.ngx or nil
local now = ngx and ngx.now or os.time

local RECEIVE_SIZE = 16384

local _M = {
  _VERSION = core._VERSION,
}

-- The fields handed to the single-node core for the data connections.
local DATA_FIELDS = {
  "prefix", "suffix", "username", "password", "database", "connect_timeout", "send_timeout",
  "read_timeout", "keepalive_timeout", "pool_size", "backlog", "ssl", "ssl_verify", "server_name",
  "force_auth", "transport", "pipelining", "max_reply_size", "wait_replicas", "wait_timeout",
}

-- ---------------------------------------------------------------------------
-- Configuration

-- No position: new() raises the message at its caller.
local function invalid(field, why)
  error("invalid " .. field .. ": " .. why, 0)
end

local function optional_string(conf, field)
  local value = conf[field]
  if value ~= nil and type(value) ~= "string" then
    invalid(field, "must be a string")
  end
  return value
end

-- Numbers, or numeric strings (configurations read from environment variables).
local function port_of(value, field)
  local port = tonumber(value)
  if not port or port % 1 ~= 0 or port < 1 or port > 65535 then
    invalid(field, "must be an integer from 1 to 65535")
  end
  return port
end

local function read_sentinels(conf)
  local list = conf.sentinels
  if type(list) ~= "table" or list[1] == nil then
    invalid("sentinels", "must be a non-empty array of { host = ..., port = ... }")
  end
  local entries = {}
  for i, entry in ipairs(list) do
    local field = "sentinels[" .. i .. "]"
    if type(entry) ~= "table" then
      invalid(field, "must be a table { host = ..., port = ... }")
    end
    local host = entry.host or "127.0.0.1"
    if type(host) ~= "string" or host == "" then
      invalid(field .. ".host", "must be a non-empty string")
    end
    local username, password = entry.username, entry.password
    if username ~= nil and type(username) ~= "string" then
      invalid(field .. ".username", "must be a string")
    end
    if password ~= nil and type(password) ~= "string" then
      invalid(field .. ".password", "must be a string")
    end
    entries[i] = {
      host = host,
      port = entry.port == nil and 26379 or port_of(entry.port, field .. ".port"),
      username = username,
      password = password,
    }
  end
  return entries
end

-- A data instance's configuration for one server address.
local function data_config(self, host, port)
  local conf = { host = host, port = port, role = self.role }
  local fields = self.fields
  for _, name in ipairs(DATA_FIELDS) do
    conf[name] = fields[name]
  end
  return conf
end

-- ---------------------------------------------------------------------------
-- Asking a sentinel

local function ask_over_cosocket(target, ask, master)
  if not (ngx and ngx.socket) then
    return nil, "cosocket transport unavailable: not running inside nginx"
  end
  -- ngx.socket.tcp raises where cosockets are disabled (a forced transport)
  local created, sock, err = pcall(ngx.socket.tcp)
  if not created then
    return nil, "cosocket transport unavailable: " .. tostring(sock)
  end
  if not sock then
    return nil, err
  end
  sock:settimeouts(target.connect_timeout, target.send_timeout, target.read_timeout)
  local ok
  ok, err = sock:connect(target.host, target.port, target.connect_options)
  if not ok then
    return nil, err
  end
  local fresh = sock:getreusedtimes() == 0
  local query = core.sentinel_query(ask, master, target.username, target.password,
                                    fresh or target.force_auth)
  local sent
  sent, err = sock:send(query:request())
  if not sent then
    sock:close()
    return nil, err
  end
  repeat
    local data, rerr = sock:receiveany(RECEIVE_SIZE)
    if not data then
      sock:close()
      return nil, rerr
    end
    local done, ferr = query:feed(data)
    if done == nil then
      sock:close()
      return nil, ferr
    end
  until done
  local a, b = query:answer()
  if a == nil and fresh then
    sock:close()  -- a refused AUTH leaves it unauthenticated: never pool it
  elseif not sock:setkeepalive(target.keepalive_timeout, target.pool_size) then
    sock:close()
  end
  return a, b
end

local function ask_sentinel(target, ask, master, over_cosocket)
  if over_cosocket then
    return ask_over_cosocket(target, ask, master)
  end
  return core.ask_sentinel(target, ask, master)
end

-- The sentinels in order until one answers; that one moves to the front.
-- Returns host, port | replicas | nil, err.
local function ask_sentinels(self, ask, over_cosocket)
  local order = self.order
  local unknown, last_err = false, nil
  for i = 1, #order do
    local target = order[i]
    local a, b = ask_sentinel(target, ask, self.master, over_cosocket)
    if a == false then
      unknown = true  -- this sentinel does not monitor the name; another may
    elseif a ~= nil then
      if i > 1 then
        insert(order, 1, remove(order, i))
      end
      self.answered = target
      return a, b
    elseif find(b, "^cosocket transport unavailable") then
      return nil, b  -- no sentinel can be reached this way
    else
      last_err = b
    end
  end
  if unknown then
    return nil, "invalid master name"
  end
  return nil, "no hosts available: " .. tostring(last_err)
end

-- ---------------------------------------------------------------------------
-- The call

-- The server to use: host, port, or nil, err.
local function resolve(self, over_cosocket)
  local cached = self.cached
  if cached and now() < cached.expires then
    return cached.host, cached.port
  end
  local host, port
  if self.role == "master" then
    host, port = ask_sentinels(self, "master", over_cosocket)
    if not host then
      return nil, port
    end
  else
    local replicas, err = ask_sentinels(self, "replicas", over_cosocket)
    if not replicas then
      return nil, err
    end
    if #replicas == 0 then
      return nil, "no slaves available"
    end
    local pick = replicas[random(#replicas)]
    host, port = pick.host, pick.port
  end
  if self.cache_ttl > 0 then
    self.cached = { host = host, port = port, expires = now() + self.cache_ttl }
  end
  return host, port
end

-- The single-node instance (and its cosocket view) serving host:port.
local function server(self, host, port)
  local address = host .. ":" .. port
  local entry = self.servers[address]
  if entry then
    return entry
  end
  local conf = data_config(self, host, port)
  local inst = core.new(conf)
  -- a custom pool is namespaced by role, endpoint and identity (the derived name)
  if self.pool then
    inst.pool = self.role .. "|" .. self.pool .. "|" .. inst:pool_name()
  end
  entry = { inst = inst, view = cosocket.view(inst, inst:fields()) }
  self.servers[address] = entry
  return entry
end

-- Errors after which the address may be stale.
local STALE_REDIS_ERRORS = { READONLY = true, LOADING = true, MASTERDOWN = true }

local function is_stale(err)
  if sub(err, 1, 14) == "role mismatch:" then
    return true, true, true
  end
  if find(err, "^invalid ") then
    return false
  end
  local code = err:match("^(%u+) ")
  if code then
    -- READONLY: the write was refused, nothing happened: safe to retry elsewhere
    return STALE_REDIS_ERRORS[code] == true, code == "READONLY"
  end
  -- connection errors: timeout, closed, connection refused, ...
  return true, err == "connection refused"
end

-- Method ids of the cosocket driver -> the core's native methods.
local NATIVE = { [SET] = "set", [GET] = "get", [DELETE] = "delete", [READ_METADATA] = "read_metadata" }

local function call(self, method, ...)
  local over_cosocket = serves(self.transport_view)
  for attempt = 1, 2 do
    local host, port = resolve(self, over_cosocket)
    if not host then
      return nil, port
    end
    local entry = server(self, host, port)
    local r1, r2
    if over_cosocket then
      r1, r2 = cosocket_call(entry.inst, entry.view, method, ...)
    else
      local inst = entry.inst
      r1, r2 = inst[NATIVE[method]](inst, ...)
    end
    if r2 == nil then
      return r1  -- one value, as the single-node module returns
    end
    if r1 ~= nil then
      return r1, r2
    end
    local stale, retry, wrong_role = is_stale(r2)
    if stale then
      self.cached = nil
    end
    if wrong_role then
      -- the sentinel that named this server is behind the others: ask it last
      local order, answered = self.order, self.answered
      for i = 1, #order do
        if order[i] == answered then
          insert(order, remove(order, i))
          break
        end
      end
    end
    -- a refused role, a refused connection or a refused write changed nothing:
    -- ask the sentinels again
    if not (retry and attempt == 1) then
      return nil, r2
    end
  end
end

-- Private key of each storage table: the instance's state.
local STATE = {}

local methods = {}

function methods.set(self, ...)
  return call(self[STATE], SET, ...)
end

function methods.get(self, ...)
  return call(self[STATE], GET, ...)
end

function methods.delete(self, ...)
  return call(self[STATE], DELETE, ...)
end

function methods.read_metadata(self, ...)
  return call(self[STATE], READ_METADATA, ...)
end

local metatable = {
  __index = function(self, k)
    local m = methods[k]
    if m then
      return m
    end
    return rawget(self, STATE).fields[k]
  end,
  __newindex = function()
    error("attempt to update a read-only table", 2)
  end,
}

---
-- Constructors
-- @section constructors

local function build(conf)
  if type(conf) ~= "table" then
    invalid("configuration", "must be a table")
  end
  local master = conf.master == nil and "mymaster" or conf.master
  if type(master) ~= "string" or master == "" then
    invalid("master", "must be a non-empty string")
  end
  local role = conf.role == nil and "master" or conf.role
  if role ~= "master" and role ~= "slave" then
    invalid("role", "must be \"master\" or \"slave\"")
  end
  local cache_ttl = conf.sentinel_cache_ttl == nil and 0 or tonumber(conf.sentinel_cache_ttl)
  if not cache_ttl or cache_ttl < 0 or cache_ttl ~= cache_ttl then
    invalid("sentinel_cache_ttl", "must be a non-negative number of seconds")
  end
  local sentinel_username = optional_string(conf, "sentinel_username")
  local sentinel_password = optional_string(conf, "sentinel_password")
  local pool = optional_string(conf, "pool")
  if pool == "" then
    invalid("pool", "must not be empty")
  end
  local entries = read_sentinels(conf)

  -- the data fields are validated by the core, as for a single node
  local probe = {}
  for _, name in ipairs(DATA_FIELDS) do
    probe[name] = conf[name]
  end
  probe.role = role
  local inst = core.new(probe)
  local fields = inst:fields()
  fields.host, fields.port, fields.role = nil, nil, nil
  fields.master = master
  fields.role = role
  fields.sentinel_username = sentinel_username
  fields.sentinel_password = sentinel_password
  fields.sentinel_cache_ttl = cache_ttl
  fields.pool = pool

  local order = {}
  for i, entry in ipairs(entries) do
    local username = entry.username or sentinel_username
    local password = entry.password or sentinel_password
    local sentinel_pool = core.sentinel_pool_name(entry.host, entry.port, username, password, pool)
    order[i] = {
      host = entry.host,
      port = entry.port,
      username = username,
      password = password,
      force_auth = fields.force_auth == true,
      pool = sentinel_pool,
      connect_options = { pool = sentinel_pool, pool_size = fields.pool_size, backlog = fields.backlog },
      connect_timeout = fields.connect_timeout,
      send_timeout = fields.send_timeout,
      read_timeout = fields.read_timeout,
      keepalive_timeout = fields.keepalive_timeout,
      pool_size = fields.pool_size,
    }
  end
  fields.sentinels = entries

  return setmetatable({ [STATE] = {
    fields = fields,
    master = master,
    role = role,
    pool = pool,
    cache_ttl = cache_ttl,
    order = order,     -- per worker: the sentinel that answered last goes first
    servers = {},      -- "host:port" -> single-node instance and view
    cached = nil,      -- { host, port, expires } with sentinel_cache_ttl
    answered = nil,    -- the entry of order that gave the last answer
    transport_view = { transport = fields.transport },
  } }, metatable)
end

---
-- Creates a storage instance with the methods of `resty.session.hiredis`
-- (`set`, `get`, `delete`, `read_metadata`, same arguments and results). No
-- connection is made here.
-- @function new
-- @tparam table configuration see @{configuration}
-- @treturn table the storage instance
-- @raise `invalid <field>: <why>`, e.g. `invalid sentinels: must be a non-empty array
-- of { host = ..., port = ... }`, `invalid role: must be "master" or "slave"`
-- @usage
-- local storage = require("resty.session.hiredis.sentinel").new({
--   master = "mymaster",
--   sentinels = { { host = "10.0.0.1", port = 26379 }, { host = "10.0.0.2", port = 26379 } },
--   sentinel_password = os.getenv("SENTINEL_PASSWORD"),
--   password = os.getenv("REDIS_PASSWORD"),
-- })
function _M.new(configuration)
  local ok, storage = pcall(build, configuration)
  if not ok then
    error(storage, 2)
  end
  return storage
end

return _M
