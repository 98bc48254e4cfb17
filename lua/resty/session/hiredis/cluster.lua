---
-- Redis Cluster storage for lua-resty-session, backed by the C++ core.
-- Drop-in for upstream's `resty.session.redis.cluster`: same configuration field
-- names, and the same methods, results and Redis data as `resty.session.hiredis`
-- (no hash tags are added to the keys).
--
-- `require("resty.session.hiredis").new(configuration)` routes here when the
-- configuration has `nodes` (as lua-resty-session's loader does); lua-resty-session
-- can also name this module as its storage directly.
--
-- **How a call runs.** The keys of a call (the session key, each metadata key,
-- the old session key) usually hash to different slots, so one transaction
-- cannot cover them. The commands are grouped by slot (a group of more than one
-- command is one `MULTI`/`EXEC`), the groups of one node go out in one write, and
-- the nodes are asked in parallel (cosockets; the native transport asks them one
-- after the other). The session key is the source of truth and the metadata may
-- over-report (a stale member expires by its score) but never under-report:
--
-- * `set`: phase 1 adds (`SET`; per metadata key `ZREMRANGEBYSCORE`, `ZADD`,
--   `EXPIRE NX`, `EXPIRE GT`); only when phase 1 fully succeeded, phase 2 removes and
--   shortens (`EXPIRE old_key stale_ttl LT`; per metadata key `ZREM old_key`).
-- * `delete`: `UNLINK` first, then the metadata cleanup.
-- * Any failure returns `nil, err` with the state left as above.
--
-- **The atomic option**: a hash-tagged prefix, e.g. `prefix = "{sessions}"`, puts
-- every key of the storage in one slot; each `set` and `delete` is then one
-- `MULTI`/`EXEC` on one node, exactly as on a single Redis (at the price of all
-- sessions living on one master).
--
-- **Topology**: the slot map is learned with `CLUSTER SHARDS` (Redis >= 7.0; else
-- `CLUSTER SLOTS`) from the seed `nodes`, kept per process (an nginx worker is a
-- process), patched by each `MOVED` (which also schedules one refresh); `ASK`
-- sends the group to the target behind `ASKING`, without touching the map;
-- `TRYAGAIN` and `CLUSTERDOWN` back off (10, 20, 40 ... 320 ms) while the call's
-- retry budget lasts. Reads go to masters only. Each node has its own connection
-- pool whose name holds the node and the identity (username, a digest of the
-- password, TLS settings), also under a custom `pool` name. A node whose round
-- trip failed (a timeout: it may be a stalled master, which answers what waited
-- in its socket when it wakes, before it learns of its replica's promotion) gets a
-- lone `PING` before the next call's commands go to it, and is asked for the slot
-- map last; while it does not answer, calls to it fail and send it nothing.
--
-- **Differences from upstream's `resty.session.redis.cluster`** (4.1.5 on Kong's
-- resty-redis-cluster 1.6.1):
--
-- * Errors inside a call (a `WRONGTYPE` in a transaction, a `MOVED`) are `nil, err`,
--   never reported as success nor returned as data; `set` and `delete` return `true`.
-- * Calls to a slot being migrated work (`ASK` is followed; upstream fails them).
-- * Upstream has no atomicity at all (a `TTL`, then a plain pipeline per node); ours
--   follows the phases above, or is one transaction with a hash-tagged prefix.
-- * Hash tags are parsed as Redis does (first `{`, first `}` after it).
-- * `lock_zone` / `lock_prefix` are accepted and unused: no `lua_shared_dict` is
--   needed (upstream fails every call when the dict is missing).
-- * `database` is an error (Redis Cluster has only database 0; upstream ignores
--   it); `nodes` must be a non-empty array (`invalid nodes: ...`); a node may give
--   `host` instead of `ip`; a missing port is 6379 (upstream raises).
-- * A node that refuses connections is skipped for the next one when the map is
--   loaded; a `pool` name never makes two nodes or two identities share a connection.
-- * Works in every nginx phase and outside nginx.
--
-- @module resty.session.hiredis.cluster
-- @license BSD-2-Clause (see LICENSE)

---
-- The configuration table given to @{new}: upstream's field names.
-- @tfield table nodes Seed nodes, a non-empty array of `{ ip = "127.0.0.1", port = 6379 }`
-- (`host` is accepted for `ip`; defaults: ip `"127.0.0.1"`, port `6379`). Required.
-- @tfield[opt] string prefix Prefix of the keys, joined with `:` (default `nil`).
-- Hash-tagged (`"{sessions}"`): every call is one transaction (see above).
-- @tfield[opt] string suffix Suffix of the keys (default `nil`).
-- @tfield[opt] string name Cluster name: keys the per-process slot map together
-- with the seeds and identity (default `nil`).
-- @tfield[opt] string lock_zone Accepted for compatibility, unused (default `nil`).
-- @tfield[opt] string lock_prefix Accepted for compatibility, unused (default `nil`).
-- @tfield[opt] number max_redirections `MOVED`/`ASK` followed per call, an integer
-- >= 0 (default `5`).
-- @tfield[opt] number max_connection_attempts Failed connections to a group's node
-- per call, and failed nodes per map load beyond the first, an integer >= 1 (default `3`).
-- @tfield[opt] number max_connection_timeout Milliseconds a call may keep retrying
-- (redirections, `TRYAGAIN`, `CLUSTERDOWN`, failed nodes) (default `nil`: `read_timeout`).
-- @tfield[opt] string username `AUTH username password` on each node's new connections.
-- @tfield[opt] string password Password for `AUTH` (default `nil`).
-- @tfield[opt] number connect_timeout Milliseconds (default `60000`).
-- @tfield[opt] number send_timeout Milliseconds (default `60000`).
-- @tfield[opt] number read_timeout Milliseconds (default `60000`).
-- @tfield[opt] number keepalive_timeout Milliseconds; `0`: no limit (default `60000`).
-- @tfield[opt] string pool Prefix of the per-node pool names (default: derived).
-- @tfield[opt] number pool_size Idle connections per node pool (default `30`).
-- @tfield[opt] number backlog As in `resty.session.hiredis` (default `nil`).
-- @tfield[opt] boolean ssl TLS on every node (default `false`).
-- @tfield[opt] boolean ssl_verify (default `nil`: off).
-- @tfield[opt] string server_name SNI and the name verified on every node (default `nil`).
-- @tfield[opt] boolean force_auth `AUTH` on every call (default `nil`).
-- @tfield[opt] string transport `"cosocket"` or `"native"` (default `nil`: by phase).
-- @tfield[opt] number max_reply_size As in `resty.session.hiredis`, for every node's
-- replies: bytes of data one reply may carry (default `536870912`, 512 MiB, Redis's
-- `proto-max-bulk-len`); `set` refuses a longer value before sending anything.
-- @tfield[opt] number wait_replicas *Extension.* As in `resty.session.hiredis`: each
-- node a write touches also waits for this many of its replicas (`WAIT` at the end
-- of the node's batch) (default `0`).
-- @tfield[opt] number wait_timeout *Extension.* As in `resty.session.hiredis` (default `1000`).
-- @table configuration

local core = require "resty.session.hiredis.core"
local has_driver, driver = pcall(require, "resty.session.hiredis.cluster_driver")

local setmetatable = setmetatable
local rawget = rawget
local rawset = rawset
local pcall = pcall
local error = error
local pairs = pairs
local type = type

local CORE = {}    -- the core cluster instance
local FIELDS = {}  -- the configuration as given (what field reads return)
local VIEW = {}    -- what the cosocket driver reads per call

local _M = {
  _VERSION = core._VERSION,
}

local serves = has_driver and driver.serves or function() return false end
local call = has_driver and driver.call or nil

local methods = {}
for id, name in ipairs({ "set", "get", "delete", "read_metadata" }) do
  -- named arguments rather than `...`: see the methods of resty.session.hiredis
  methods[name] = function(self, a, b, c, d, e, f, g, h, j)
    local view = rawget(self, VIEW)
    if serves(view) then
      return call(rawget(self, CORE), view, id, a, b, c, d, e, f, g, h, j)
    end
    return rawget(self, CORE)[name](rawget(self, CORE), a, b, c, d, e, f, g, h, j)
  end
end

local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end

local function install(self, configuration)
  local ok, inst = pcall(core.cluster_new, configuration)
  if not ok then
    return nil, inst
  end
  rawset(self, CORE, inst)
  rawset(self, FIELDS, configuration)
  rawset(self, VIEW, has_driver and driver.view(inst, configuration) or { transport = configuration.transport })
  return true
end

-- Field reads return the configuration; writes are validated like new() and
-- apply to the next call (`storage.password = new_token`).
local mt = {
  __index = function(self, k)
    local m = methods[k]
    if m then
      return m
    end
    return rawget(self, FIELDS)[k]
  end,
  __newindex = function(self, k, v)
    local updated = copy(rawget(self, FIELDS))
    updated[k] = v
    local ok, err = install(self, updated)
    if not ok then
      error(err, 2)
    end
  end,
}

-- The core instance of a storage (for the specs).
-- @local
function _M._core(storage)
  return rawget(storage, CORE)
end

---
-- Creates a Redis Cluster storage instance. No connection is made here.
-- @tparam table configuration see @{configuration}
-- @treturn table the storage instance
-- @raise `invalid <field>: <why>`, e.g. `invalid nodes: must be a non-empty array of {ip=, port=}`,
-- `invalid database: not supported by Redis Cluster (only database 0 exists)`
function _M.new(configuration)
  if type(configuration) ~= "table" then
    error("invalid configuration: must be a table with nodes", 2)
  end
  local self = setmetatable({}, mt)
  local ok, err = install(self, copy(configuration))
  if not ok then
    error(err, 2)
  end
  return self
end

return _M
