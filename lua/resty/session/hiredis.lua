---
-- Redis storage for lua-resty-session, backed by a C++ core (hiredis codec).
-- Drop-in for resty.session.redis: same configuration, methods, results and keys.
--
-- Use it by name, `session.init({ storage = "resty.session.hiredis",
-- ["resty.session.hiredis"] = configuration })` (lua-resty-session then calls
-- `require(name).new(configuration[name])`), or pass an instance from @{new} as
-- `storage`.
--
-- The data in Redis is byte-identical to upstream's: a session is the string key
-- `[prefix:]name:key[:suffix]` holding the value with `EX ttl`; with metadata, the
-- sorted set `[prefix:]name:audience:subject[:suffix]` holds the session keys with
-- score `current_time + ttl`. Sessions written by either backend are read by the other.
--
-- Inside OpenResty the calls made where cosockets work (rewrite, access, content,
-- timers, ssl_certificate...) go through `ngx.socket.tcp` and never block the event
-- loop; elsewhere (init, init_worker, set, header and body filters, log, plain LuaJIT)
-- the core's own sockets serve them. Both give the same results and Redis data.
--
-- **Differences from `resty.session.redis` (4.1.5):**
--
-- * A configuration that cannot work raises an error naming the field, at `new` and
--   on field writes (`invalid port: must be an integer from 1 to 65535`); upstream
--   accepts anything and fails on each call. What upstream accepts and can work with
--   is accepted as upstream means it: numeric strings, `0` timeouts (the transport's
--   default). `nodes` / `sentinels` raise: not supported by this module yet. Unknown fields are ignored by `new`, as
--   upstream does, but writing one to an instance raises
--   (`invalid field: <name> is not a configuration field`).
-- * `set` and `delete` return `true` (upstream: `"OK"`, a count, or the raw pipeline
--   table). A failing command inside a transaction (`WRONGTYPE`...) is returned as
--   `nil, err`; upstream's pipeline reports it as success.
-- * `set` with `old_key` or `metadata` is one `MULTI`/`EXEC` transaction sent in one
--   write (upstream: `TTL` then `EXPIRE`, two round trips, not atomic). `old_key`
--   gets `stale_ttl` with `EXPIRE ... LT`: also when it had no TTL (upstream leaves
--   such a key as it is).
-- * The metadata sorted set's TTL only grows (`EXPIRE NX` then `EXPIRE GT`): a short
--   session no longer shortens it for the longer ones (upstream resets it on each write).
-- * `read_metadata` uses `ZRANGEBYSCORE`, which every Redis version has (upstream's
--   `ZRANGE ... BYSCORE` needs Redis 6.2). On Redis 6 and older the module learns the
--   server version once per connection (`HELLO`) and falls back to upstream's
--   command sequence where `EXPIRE` options are missing.
-- * Bad arguments return `nil, "invalid <argument>: <why>"` and send nothing.
-- * `database` is selected once per connection (upstream: `SELECT` on every call).
-- * The default connection pool name is derived from every field that makes a
--   connection different (endpoint, TLS settings, username, a digest of the password,
--   database); upstream's (`host:port`) can hand a connection authenticated as one
--   user to another configuration. A custom `pool` is namespaced by the same identity:
--   configurations sharing it never share a connection across TLS settings,
--   credentials or databases.
-- * Replies are checked at their headers: past `max_reply_size` (512 MiB), 1,048,576
--   array elements or 8 levels of nesting the call fails with `protocol error: ...`
--   before anything is buffered toward it (upstream reads whatever is announced).
-- * Works in every nginx phase and outside nginx (upstream needs cosockets).
-- * Concurrent calls of a worker are auto-pipelined over a shared connection
--   (`pipelining`), and a new connection's AUTH/SELECT/HELLO go in the same write
--   as its first command once the pool has proven its credentials.
-- * Extensions: `transport`, `pipelining`, `ssl_trusted_certificate`, `ssl_client_cert`,
--   `ssl_client_priv_key` (see @{configuration}).
--
-- The module `resty.session.hiredis.cosocket` (the nginx driver) and the C++
-- module `resty.session.hiredis.core` are internal: their API may change.
--
-- @module resty.session.hiredis
-- @license BSD-2-Clause (see LICENSE)

---
-- Configuration
-- @section configuration

---
-- The configuration table given to @{new} (or as `["resty.session.hiredis"]` in
-- lua-resty-session's configuration). Every field is optional; the same fields are
-- readable and writable on an instance, and a write applies to the next call
-- (`storage.password = new_token`). Numbers may be numeric strings (`"6379"`,
-- converted as `tonumber` does, as lua-resty-redis and cosockets do); they read back
-- as numbers. `storage.options` is upstream's `{ pool, pool_size, backlog, ssl,
-- ssl_verify, server_name }` with the values in effect, built on each read.
-- @tfield[opt] string prefix Prefix of the keys, joined with `:` (default `nil`).
-- @tfield[opt] string suffix Suffix of the keys, joined with `:` (default `nil`).
-- @tfield[opt] string host TCP endpoint: an IPv4 or IPv6 address or a host name (default
-- `"127.0.0.1"`). Inside nginx, host names need a `resolver`.
-- @tfield[opt] number port TCP port, an integer from 1 to 65535 (default `6379`).
-- @tfield[opt] string socket Unix socket, `"unix:/path"` or `"/path"`; wins over
-- `host`/`port` (default `nil`).
-- @tfield[opt] string username `AUTH username password` on each new connection
-- (default `nil`: `AUTH password` when `password` is set).
-- @tfield[opt] string password Password for `AUTH` on each new connection (default
-- `nil`: no `AUTH`). Never part of an error message.
-- @tfield[opt] number database `SELECT database` on each new connection, a
-- non-negative integer (default `nil`: no `SELECT`).
-- @tfield[opt] number connect_timeout Milliseconds, 0 to 2147483647, for the TCP
-- connect, the TLS handshake and the `AUTH`/`SELECT`/`HELLO` exchange (default
-- `60000`). `0`: the transport's default (nginx's `lua_socket_connect_timeout` in
-- cosocket phases, `60000` in the native transport).
-- @tfield[opt] number send_timeout Milliseconds, 0 to 2147483647, per send (default
-- `60000`; `0`: `lua_socket_send_timeout`, native `60000`).
-- @tfield[opt] number read_timeout Milliseconds, 0 to 2147483647, per read (default
-- `60000`; `0`: `lua_socket_read_timeout`, native `60000`).
-- @tfield[opt] number keepalive_timeout Milliseconds a pooled connection may stay
-- idle, 0 to 2147483647; `0`: no limit (default `60000`).
-- @tfield[opt] string pool Connection pool name (default: derived from the endpoint,
-- the TLS settings, the username, a SHA-256 digest of the password and the database).
-- A name given here stands for the endpoint and is namespaced by the rest
-- (`"<pool>:id=<digest>"`): never shared across TLS settings, credentials or databases.
-- @tfield[opt] number pool_size Idle connections kept per pool, an integer >= 1; the
-- least recently used go first (default `30`).
-- @tfield[opt] number backlog When set, an integer >= 0: at most `pool_size` connections
-- are open per pool and up to `backlog` callers wait for one (for `connect_timeout`);
-- past that: `nil, "too many waiting connect operations"` (default `nil`: no limit).
-- @tfield[opt] boolean ssl TLS (1.2 or newer) (default `false`).
-- @tfield[opt] boolean ssl_verify Verify the certificate chain and the peer name
-- (`server_name`, else `host`) (default `nil`: off). Inside nginx the CA comes from
-- `lua_ssl_trusted_certificate`.
-- @tfield[opt] string server_name SNI, and the name verified (default `nil`).
-- @tfield[opt] string ssl_trusted_certificate *Extension.* PEM file of the CAs the native
-- transport trusts (default `nil`: the system store; `SSL_CERT_FILE` and `SSL_CERT_DIR`
-- are honoured).
-- @tfield[opt] string ssl_client_cert *Extension.* PEM file of a client certificate, for
-- Redis `tls-auth-clients` (default `nil`); needs `ssl_client_priv_key`.
-- @tfield[opt] string ssl_client_priv_key *Extension.* PEM file of its private key
-- (default `nil`); needs `ssl_client_cert`.
-- @tfield[opt] boolean force_auth `true`: `AUTH` on every call, also on pooled
-- connections (default `nil`).
-- @tfield[opt] string transport *Extension.* `"cosocket"` or `"native"` forces a
-- transport (default `nil`: cosockets where nginx has them, native elsewhere).
-- Forcing `"cosocket"` where there are none fails with
-- `nil, "cosocket transport unavailable: <why>"`.
-- @tfield[opt] boolean pipelining *Extension.* Auto-pipelining of cosocket calls
-- (default `nil`: on). Concurrent calls of one worker to one pool share a
-- connection: calls queued while a round trip is in flight go out in one write and
-- their replies come back in order; each call keeps its own `read_timeout`. A call
-- made while nothing else is in flight runs on its own connection (no added
-- latency). `false`: every call on a connection of its own, as upstream.
-- @tfield[opt] string role *Extension.* `"master"` or `"slave"`: each new connection
-- sends `ROLE` with its handshake (same round trip) and a server in another role is
-- refused with `nil, "role mismatch: expected master, got slave"` (default `nil`: no
-- check). Set by `resty.session.hiredis.sentinel` on its data connections.
-- @tfield[opt] number max_reply_size *Extension.* Bytes of data one reply may carry
-- (a value; a subject's metadata members and scores; RESP framing is not counted),
-- an integer from 1024 to 2147483647 (default `536870912`, 512 MiB: Redis's own
-- `proto-max-bulk-len`, so every value Redis accepts reads back). A reply announcing
-- more fails the call at its header with `protocol error: reply larger than <n> bytes
-- ...` and the connection is closed. `set` refuses a longer value before sending
-- anything, with `nil, "invalid value: <n> bytes exceed max_reply_size (<m> bytes)"`:
-- nothing is written that `get` could not read back.
-- @tfield[opt] number wait_replicas *Extension.* Durability: each `set` and `delete`
-- also waits for this many replicas to acknowledge the write (`WAIT` after the
-- write, in the same round trip), an integer >= 0 (default `0`: no wait, Redis's
-- asynchronous replication). When fewer acknowledge within `wait_timeout` the call
-- returns `nil, "write not durable: <k> of <n> replicas (wait_replicas) acknowledged
-- it within <t> ms (wait_timeout)"`: the master applied the write, but a failover may
-- discard it, so it is not acknowledged. With a Redis Cluster every node a write
-- touches waits for its own replicas. Costs one replica round trip per write;
-- auto-pipelined calls share connections only with calls that wait alike.
-- @tfield[opt] number wait_timeout *Extension.* Milliseconds a write waits for
-- `wait_replicas`, an integer from 1 to 2147483647 (default `1000`). Keep it below
-- `read_timeout`: the read timeout still bounds the whole call.
-- @table configuration

---
-- Storage instance methods. Each returns `nil, err` on failure: bad arguments
-- (`invalid <argument>: <why>`, nothing is sent), connection failures as cosockets
-- word them (`connection refused`, `timeout`, `closed`,
-- `too many waiting connect operations`), TLS failures
-- (`ssl handshake failed: <reason>`), `protocol error: <why>` for a malformed or
-- too large reply, and Redis error replies verbatim (`WRONGPASS ...`, `NOAUTH ...`,
-- `WRONGTYPE ...`). A connection that saw a timeout or a protocol error is closed,
-- never pooled.
-- @section instance

---
-- Stores session data.
--
-- Without `old_key` and `metadata`: `SET key value EX ttl`. Otherwise one transaction:
-- the `SET`, `EXPIRE old_key stale_ttl LT`, and for each audience/subject pair
-- `ZREMRANGEBYSCORE meta 0 current_time-1`, `ZADD meta current_time+ttl key`,
-- `ZREM meta old_key`, `EXPIRE meta ttl NX`, `EXPIRE meta ttl GT`.
--
-- @function instance:set
-- @tparam string name cookie name (the key's first part)
-- @tparam string key session key
-- @tparam string value session data (binary safe)
-- @tparam number ttl seconds, a positive integer
-- @tparam[opt] number current_time seconds since the epoch (needed with `metadata`;
-- default: now)
-- @tparam[opt] string old_key the previous session key, whose TTL is lowered to `stale_ttl`
-- @tparam[opt] number stale_ttl seconds, an integer >= 0 (needed with `old_key`)
-- @tparam[opt] table metadata `{ audiences = { ... }, subjects = { ... } }`, arrays of
-- strings of the same length
-- @tparam[opt] boolean remember accepted and ignored, as upstream
-- @treturn[1] boolean `true`
-- @treturn[2] nil
-- @treturn[2] string error, e.g. `invalid ttl: must be a positive integer`,
-- `invalid metadata: audiences and subjects differ in length`, `connection refused`
-- @usage local ok, err = storage:set("session", key, data, 3600, ngx.time())

---
-- Retrieves session data.
--
-- @function instance:get
-- @tparam string name cookie name
-- @tparam string key session key
-- @treturn[1] string the value (binary safe)
-- @treturn[2] nil when the key does not exist (no error)
-- @treturn[3] nil
-- @treturn[3] string error, e.g. `invalid key: must be a string`, `timeout`
-- @usage local data, err = storage:get("session", key)

---
-- Deletes session data (`UNLINK`), and with `metadata` removes the key from each
-- audience/subject sorted set and drops its expired members, in one transaction.
-- The short form `delete(name, key, metadata)` is accepted too.
--
-- @function instance:delete
-- @tparam string name cookie name
-- @tparam string key session key
-- @tparam[opt] number current_time seconds since the epoch (default: now)
-- @tparam[opt] table metadata `{ audiences = { ... }, subjects = { ... } }`
-- @treturn[1] boolean `true`, whether or not the key existed
-- @treturn[2] nil
-- @treturn[2] string error, e.g. `invalid metadata: must be a table`, `closed`
-- @usage local ok, err = storage:delete("session", key, ngx.time(), metadata)

---
-- Reads the sessions of an audience and subject that have not expired:
-- `ZRANGEBYSCORE meta current_time +inf WITHSCORES`.
--
-- @function instance:read_metadata
-- @tparam string name cookie name
-- @tparam string audience audience (as lua-resty-session stores it: base64url)
-- @tparam string subject subject (as lua-resty-session stores it)
-- @tparam[opt] number current_time seconds since the epoch (default: now)
-- @treturn[1] table `{ [key] = "score" }`, scores as strings (as upstream); `{}` when none
-- @treturn[2] nil
-- @treturn[2] string error, e.g. `invalid audience: must be a string`, `WRONGTYPE ...`
-- @usage local sessions, err = storage:read_metadata("session", audience, subject, ngx.time())

---
-- Constructors
-- @section constructors

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"
local stats = require "resty.session.hiredis.stats"

local setmetatable = setmetatable
local rawget = rawget
local rawset = rawset
local pcall = pcall
local error = error
local pairs = pairs
local type = type

-- Private keys of each storage table.
local CORE = {}    -- the core instance: validation, the native transport, operations
local FIELDS = {}  -- plain-table mirror of the configuration (what reads return)
local VIEW = {}    -- what the cosocket driver reads per call

local serves = cosocket.serves
local cosocket_call = cosocket.call
local SET, GET, DELETE, READ_METADATA = cosocket.SET, cosocket.GET, cosocket.DELETE, cosocket.READ_METADATA

local _M = {
  _VERSION = core._VERSION,
}

-- set, get, delete, read_metadata: the same signatures and results whichever
-- transport serves the call. Cosockets wherever nginx allows them (rewrite,
-- access, content, timer, ssl_cert...), so the event loop never blocks, and the
-- core's native sockets everywhere else (init, init_worker, set, header/body
-- filters, log, plain LuaJIT); `transport = "native" | "cosocket"` forces one.
--
-- Nine named arguments, the most a method takes (set's), rather than `...`, here
-- and down to the core (the cluster and sentinel modules do the same): a vararg
-- frame around a call that yields, as a cosocket call does, costs about 1,000
-- user-space instructions per call in an nginx worker (callgrind, one `get` per
-- request: 18,130 against 17,150). The core treats a missing argument and nil alike.
local methods = {}

for method, id in pairs({ set = SET, get = GET, delete = DELETE, read_metadata = READ_METADATA }) do
  local native = core.native[method]
  methods[method] = function(self, a, b, c, d, e, f, g, h, j)
    local view = rawget(self, VIEW)
    if serves(view) then
      return cosocket_call(rawget(self, CORE), view, id, a, b, c, d, e, f, g, h, j)
    end
    return native(rawget(self, CORE), a, b, c, d, e, f, g, h, j)
  end
end

-- The mirror and the driver's view, from the core's validated configuration.
local function refresh(self, inst)
  local fields = inst:fields()
  rawset(self, FIELDS, fields)
  rawset(self, VIEW, cosocket.view(inst, fields))
end

local function set_field(inst, k, v)
  inst[k] = v
end

-- Instances are plain tables (lua-resty-session asserts `type(storage) == "table"`);
-- configuration fields are read from a plain mirror and written through the
-- core, which validates them; the mirror follows every accepted write.
local mt = {
  __index = function(self, k)
    local m = methods[k]
    if m then
      return m
    end
    if k == "options" then  -- upstream's table, built per read: writing into it changes nothing
      return rawget(self, CORE).options
    end
    return rawget(self, FIELDS)[k]
  end,
  __newindex = function(self, k, v)
    local inst = rawget(self, CORE)
    local ok, err = pcall(set_field, inst, k, v)
    if not ok then
      error(err, 2)
    end
    refresh(self, inst)
  end,
}

-- An instance of another storage module (cluster, sentinel) for this
-- configuration; its errors are raised at new()'s caller.
local function routed(module, configuration)
  local created, storage = pcall(require(module).new, configuration)
  if not created then
    error(storage, 3)
  end
  return storage
end

---
-- Creates a storage instance: a table with the methods `set`, `get`, `delete`,
-- `read_metadata` and the @{configuration} fields. No connection is made here.
-- @function new
-- @tparam[opt] table configuration see @{configuration}; nil: every default
-- @treturn table the storage instance
-- @raise `invalid <field>: <why>` for a field that cannot work, e.g.
-- `invalid port: must be an integer from 1 to 65535`, `invalid port: must be a number`,
-- `invalid connect_timeout: must be a number of milliseconds from 0 to 2147483647 (0: the default)`,
-- `invalid nodes: Redis Cluster (nodes) is not supported by this module yet`,
-- `invalid pool_size: must be an integer >= 1`, `invalid ssl: must be a boolean`,
-- `invalid transport: must be "cosocket" or "native"`,
-- `invalid configuration: must be a table`
-- @usage
-- local storage = require("resty.session.hiredis").new({
--   host = "127.0.0.1", port = 6379, prefix = "sessions",
--   password = os.getenv("REDIS_PASSWORD"),
-- })
-- require("resty.session").init({ secret = "...", storage = storage })
function _M.new(configuration)
  -- Routing as lua-resty-session's loader: nodes -> cluster, else sentinels ->
  -- sentinel, else a single node.
  if type(configuration) == "table" then
    if configuration.nodes ~= nil then
      local storage = routed("resty.session.hiredis.cluster", configuration)  -- no tail call: error levels
      return storage
    end
    if configuration.sentinels ~= nil then
      local storage = routed("resty.session.hiredis.sentinel", configuration)
      return storage
    end
  end
  local ok, inst = pcall(core.new, configuration)
  if not ok then
    error(inst, 2)
  end
  local self = setmetatable({}, mt)
  rawset(self, CORE, inst)
  refresh(self, inst)
  return self
end

---
-- Statistics
-- @section statistics

---
-- What the storage modules did in this process (an nginx worker; plain LuaJIT:
-- the process), both transports and the single-node, cluster and sentinel
-- modules together, as a fresh plain table (names fixed, for dashboards):
--
--     {
--       ops = {          -- set, get, delete, read_metadata
--         get = { calls = N, errors = N,
--                 latency = { bounds = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000 },
--                             counts = { 13 numbers }, sum_ms = x } },
--         ...
--       },
--       errors = { timeout = N, connect = N, closed = N, protocol = N, server = N, config = N },
--       connections = { opened = N, reused = N, failed = N },
--       pipeline = { batches = N, calls = N, max_calls = N },
--       cluster = { moved = N, ask = N, retries = N, refreshes = N },
--       sentinel = { lookups = N, role_mismatches = N, master_changes = N },
--     }
--
-- * `ops.<method>.calls`: calls of the method, once per call whatever its retries,
--   refused arguments included; `errors`: those that returned `nil, err`.
-- * `latency`: every call (errors too), from where it enters the core to where its
--   result is made (a few microseconds less than the caller sees), in
--   milliseconds from a monotonic clock; `counts[i]` counts calls that took at most
--   `bounds[i]` ms and more than `bounds[i-1]` (not cumulative); `counts[13]` the
--   slower ones; `sum_ms` their total.
-- * `errors`: the error results by class: `config` (`invalid ...`: refused
--   arguments or configuration, `cosocket transport unavailable`), `protocol`
--   (`protocol error: ...`), `server` (a Redis error reply such as `WRONGTYPE` or
--   `READONLY`, `write not durable`, `role mismatch`, `failover in progress`, `no
--   slaves available`), `timeout`, `closed` (`closed`, `broken pipe`, `connection
--   reset by peer`), `connect` (the rest: `connection refused`, TLS handshake
--   failures, `too many waiting connect operations`, `no hosts available`...).
-- * `connections`: data connections (not the sentinels' own): `opened` new ones
--   (pool misses), `reused` ones taken from a pool (hits), `failed` the opens that
--   failed at connect, TLS or the first handshake.
-- * `pipeline`: auto-pipelined cosocket writes (`batches`), the calls they carried
--   (`calls`) and the most in one (`max_calls`). A call that ran alone on its own
--   connection is in none.
-- * `cluster`: `MOVED` and `ASK` redirections followed, `retries` (rounds run again
--   after a redirection, `TRYAGAIN`, `CLUSTERDOWN` or a node failure), `refreshes`
--   (slot maps loaded, the first one included).
-- * `sentinel`: `lookups` (master or replica lookups asked of the sentinels; one
--   shared by concurrent cosocket calls counts once),
--   `role_mismatches` (servers refused for answering another role) and
--   `master_changes` (a storage's master moved to another address).
--
-- The core counts the calls where they enter it and where their results are
-- made: counting adds no crossing into C and no allocation per call; see
-- `stats_enabled`.
-- @function stats
-- @treturn table the counters
-- @usage local get = require("resty.session.hiredis").stats().ops.get
-- ngx.say(get.calls, " gets, ", get.errors, " failed")
_M.stats = stats.snapshot

---
-- Zeroes every counter of this process.
-- @function stats_reset
_M.stats_reset = stats.reset

---
-- Turns counting on (`true`, the default) or off (`false`) for this process, from
-- the next call on; with `nil`, only reads the state.
-- @function stats_enabled
-- @tparam[opt] boolean on
-- @treturn boolean whether calls are counted
_M.stats_enabled = stats.enable

return _M
