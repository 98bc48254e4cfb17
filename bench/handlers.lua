-- The HTTP benchmark's request handlers, loaded inside nginx by bench/http_bench.lua:
-- one storage call per request, the same keys and arguments for every implementation.
--
--   location = /up/get { content_by_lua_block { B.run("up", "get") } }
--
-- Implementations: "up" (upstream resty.session.redis), "co" (resty.session.hiredis,
-- transport picked by phase: cosockets here, auto-pipelining on as by default), "cn" (the
-- same with pipelining = false: what pipelining gains), "na" (resty.session.hiredis with
-- transport = "native"). B.noop() does the same per-request work minus the storage call.
--
-- Keys (session name = the implementation's tag, so each has its own data):
--   get, set       k<i % SESSIONS>
--   set_meta       m<i % SESSIONS>, old key m<(i - 1) % SESSIONS>, metadata web/api x u<i % SUBJECTS>
--   delete         d<i> (i restarts at 1 after /bench/reset), metadata web/api x u<i % SUBJECTS>
--   read_metadata  web:r<i % SUBJECTS> (bench/dataset.lua gives each 4 live sessions)
-- where i is a counter shared by all workers (a shared dict), so 2 workers never
-- race for the same delete key.
--
-- Redis Cluster rows (B.init's `cluster` given): "up" = upstream resty.session.redis.cluster,
-- "co" / "na" = resty.session.hiredis.cluster (cosockets / native), under session names
-- "cl-<impl>", get on k<i % CLUSTER_SESSIONS>, read_metadata on web:r<i % SUBJECTS> as above
-- (B.cluster_fill writes both), set_meta as above:
--   location = /cluster/up/get { content_by_lua_block { B.run_cluster("up", "get") } }
--
-- Redis Sentinel rows (B.init's `sentinel` given): "up" = upstream resty.session.redis.sentinel
-- (on lua-resty-redis-connector), "co" / "na" = resty.session.hiredis with `sentinels` (its
-- sentinel storage; cosockets / native), under session names "se-<impl>", the keys of the
-- single-node rows (bench/http_bench.lua writes them on the master beforehand):
--   location = /sentinel/up/get { content_by_lua_block { B.run_sentinel("up", "get") } }
--
-- Both tables' "sc" is the single-node rows' "co" storage on the single Redis, under session
-- name "sc" and the single-node keys (bench/http_bench.lua writes them before each pass):
-- the reference their storage CPU is set against, measured in the same pass.
--
-- Durability rows (B.init's `durability` given): "co" / "na" as above, "cw" / "nw" the same
-- with durability's wait_replicas / wait_timeout; session names and keys as above:
--   location = /durability/cw/set { content_by_lua_block { B.run_durability("cw", "set") } }
local ngx = ngx
local tostring = tostring
local next = next
local type = type

local dataset = require "dataset"

local _M = {}

local VALUE = dataset.value()
local SESSIONS = dataset.SESSIONS
local SUBJECTS = dataset.SUBJECTS
local TTL = dataset.TTL
local STALE_TTL = dataset.STALE_TTL

local storages = {}
local cluster_storages = {}
local sentinel_storages = {}
local durability_storages = {}
-- get keys per cluster implementation: enough to spread over the 3 masters,
-- few enough to write in well under a second
local CLUSTER_SESSIONS = 2000
_M.CLUSTER_SESSIONS = CLUSTER_SESSIONS
local counter          -- ngx.shared.bench
local errors           -- ngx.shared.bench_errors

-- Two metadata pairs per subject, built once: the caller's tables are not what we measure.
local METADATA = {}
for j = 0, SUBJECTS - 1 do
  local subject = "u" .. j
  METADATA[j] = { audiences = { "web", "api" }, subjects = { subject, subject } }
end

---
-- Called from init_by_lua: builds the storages. `cfg` = { host, port, prefix };
-- `with_upstream` = whether resty.session.redis can be loaded; `cluster` (optional) =
-- { nodes, password, with_upstream (resty.session.redis.cluster can be loaded),
-- lock_zone (the lua_shared_dict upstream's client locks in) }; `durability` (optional) =
-- { wait_replicas, wait_timeout } for cw and nw; `sentinel` (optional) = { sentinels,
-- master, sentinel_password, password, with_upstream (resty.session.redis.sentinel and
-- lua-resty-redis-connector can be loaded) }.
function _M.init(cfg, with_upstream, cluster, durability, sentinel)
  local hiredis = require "resty.session.hiredis"
  local function config(extra)
    local c = { host = cfg.host, port = cfg.port, prefix = dataset.PREFIX }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end
  if with_upstream then
    storages.up = require("resty.session.redis").new(config())
  end
  storages.co = hiredis.new(config())
  storages.cn = hiredis.new(config({ pipelining = false }))
  storages.na = hiredis.new(config({ transport = "native" }))
  if cluster then
    local function cluster_config(extra)
      local c = { nodes = cluster.nodes, password = cluster.password, prefix = dataset.PREFIX }
      for k, v in pairs(extra or {}) do c[k] = v end
      return c
    end
    if cluster.with_upstream then
      -- A new upstream storage per call: Kong's client (resty.rediscluster 1.6.1) derives
      -- its pool names in the options table it is given and re-reads them as the base of
      -- the next call's, so one storage instance (what lua-resty-session keeps) gets a
      -- longer pool name per call: no connection is ever reused and the pools grow until
      -- nginx runs out of worker_connections (about 1,000 calls). Fresh options per call
      -- avoid that; the few table allocations are counted in upstream's CPU.
      local up_cluster = require "resty.session.redis.cluster"
      local up_config = cluster_config({ name = "bench", lock_zone = cluster.lock_zone })
      cluster_storages.up = setmetatable({}, { __index = function(self, method)
        local f = function(_, ...)
          local s = up_cluster.new(up_config)
          return s[method](s, ...)
        end
        rawset(self, method, f)
        return f
      end })
    end
    local hiredis_cluster = require "resty.session.hiredis.cluster"
    cluster_storages.co = hiredis_cluster.new(cluster_config())
    cluster_storages.na = hiredis_cluster.new(cluster_config({ transport = "native" }))
  end
  if sentinel then
    -- the same configuration for all three (upstream's fields), timeouts given (their
    -- defaults differ: lua-resty-redis-connector connects within 100 ms)
    local function sentinel_config(extra)
      local c = { sentinels = sentinel.sentinels, master = sentinel.master,
                  sentinel_password = sentinel.sentinel_password, password = sentinel.password,
                  prefix = dataset.PREFIX, connect_timeout = 1000, send_timeout = 1000, read_timeout = 1000 }
      for k, v in pairs(extra or {}) do c[k] = v end
      return c
    end
    if sentinel.with_upstream then
      sentinel_storages.up = require("resty.session.redis.sentinel").new(sentinel_config())
    end
    sentinel_storages.co = hiredis.new(sentinel_config())
    sentinel_storages.na = hiredis.new(sentinel_config({ transport = "native" }))
  end
  if durability then
    local n, ms = durability.wait_replicas, durability.wait_timeout
    durability_storages.co = storages.co
    durability_storages.na = storages.na
    durability_storages.cw = hiredis.new(config({ wait_replicas = n, wait_timeout = ms }))
    durability_storages.nw = hiredis.new(config({ transport = "native", wait_replicas = n, wait_timeout = ms }))
  end
  counter = ngx.shared.bench
  errors = ngx.shared.bench_errors
end

local function next_index()
  return counter:incr("n", 1, 0)
end

local function fail(impl, op, err)
  local key = impl .. " " .. op
  local n = errors:incr(key, 1, 0)
  if n == 1 then
    errors:set(key .. " first", tostring(err))
  end
  ngx.status = 500
  ngx.print(tostring(err))
end

local OPS = {
  get = function(s, name, i)
    local value, err = s:get(name, "k" .. i % SESSIONS)
    if type(value) ~= "string" then
      return nil, err or "missing session"
    end
    return true
  end,
  set = function(s, name, i)
    return s:set(name, "k" .. i % SESSIONS, VALUE, TTL, ngx.time())
  end,
  set_meta = function(s, name, i)
    return s:set(name, "m" .. i % SESSIONS, VALUE, TTL, ngx.time(), "m" .. (i - 1) % SESSIONS,
                 STALE_TTL, METADATA[i % SUBJECTS])
  end,
  delete = function(s, name, i)
    return s:delete(name, "d" .. i, ngx.time(), METADATA[i % SUBJECTS])
  end,
  read_metadata = function(s, name, i)
    local sessions, err = s:read_metadata(name, "web", "r" .. i % SUBJECTS, ngx.time())
    if type(sessions) ~= "table" or next(sessions) == nil then
      return nil, err or "no sessions in the metadata"
    end
    return true
  end,
}
_M.OPS = OPS

---
-- One storage call; 200 "ok", or 500 with the error (counted per impl and op).
function _M.run(impl, op)
  local ok, err = OPS[op](storages[impl], impl, next_index())
  if not ok then
    return fail(impl, op, err)
  end
  ngx.print("ok")
end

local CLUSTER_OPS = {
  get = function(s, name, i)
    local value, err = s:get(name, "k" .. i % CLUSTER_SESSIONS)
    if type(value) ~= "string" then
      return nil, err or "missing session"
    end
    return true
  end,
  set_meta = OPS.set_meta,
  read_metadata = OPS.read_metadata,
}
_M.CLUSTER_OPS = CLUSTER_OPS

-- One storage call of a table of its own (`kind`: its ops, its storages, its session
-- names' prefix); "sc" is the single-node co storage, the reference set against it.
-- Errors counted under "<kind> <impl> <op>".
local function run_side(kind, ops, side_storages, prefix, impl, op)
  local ok, err
  if impl == "sc" then
    ok, err = OPS[op](storages.co, "sc", next_index())
  else
    ok, err = ops[op](side_storages[impl], prefix .. impl, next_index())
  end
  if not ok then
    return fail(kind .. " " .. impl, op, err)
  end
  ngx.print("ok")
end

---
-- One storage call on the Redis Cluster.
function _M.run_cluster(impl, op)
  return run_side("cluster", CLUSTER_OPS, cluster_storages, "cl-", impl, op)
end

---
-- One storage call through the sentinel group.
function _M.run_sentinel(impl, op)
  return run_side("sentinel", OPS, sentinel_storages, "se-", impl, op)
end

---
-- One storage call of the durability rows; errors (a write the replica did not acknowledge
-- too) counted under "durability <impl> <op>".
function _M.run_durability(impl, op)
  local ok, err = OPS[op](durability_storages[impl], impl, next_index())
  if not ok then
    return fail("durability " .. impl, op, err)
  end
  ngx.print("ok")
end

---
-- /bench/cluster_fill?impl=: writes k0..k<CLUSTER_SESSIONS - 1> for that cluster
-- implementation's get, and READ_SESSIONS live sessions r<j>-1.. in each web:r<j>
-- (j < SUBJECTS) for its read_metadata, through this module's native cluster storage
-- (the layout is upstream's too), 200 "<count>" or 500 with the error.
function _M.cluster_fill()
  local name = "cl-" .. ngx.var.arg_impl
  local s = cluster_storages.na
  local value, now = dataset.value(), ngx.time()
  for j = 0, CLUSTER_SESSIONS - 1 do
    local ok, err = s:set(name, "k" .. j, value, TTL, now)
    if not ok then
      ngx.status = 500
      return ngx.print("cluster fill k", j, ": ", tostring(err))
    end
  end
  for j = 0, SUBJECTS - 1 do
    local meta = { audiences = { "web" }, subjects = { "r" .. j } }
    for k = 1, dataset.READ_SESSIONS do
      local ok, err = s:set(name, "r" .. j .. "-" .. k, value, TTL, now, nil, nil, meta)
      if not ok then
        ngx.status = 500
        return ngx.print("cluster fill web:r", j, ": ", tostring(err))
      end
    end
  end
  ngx.print(CLUSTER_SESSIONS + SUBJECTS * dataset.READ_SESSIONS)
end

-- The statistics rows: cq / nq are co / na's storages with counting off (a per-process
-- switch: flipped by the first request of a run, as wrk runs one implementation at a time).
local STATS_STORAGE = { co = "co", cq = "co", na = "na", nq = "na" }
local COUNTING = { co = true, na = true, cq = false, nq = false }

---
-- One storage call of the statistics rows; errors counted under "stats <impl> <op>".
local stats_enabled = require("resty.session.hiredis").stats_enabled
function _M.run_stats(impl, op)
  local counting = COUNTING[impl]
  if stats_enabled() ~= counting then
    stats_enabled(counting)
  end
  local ok, err = OPS[op](storages[STATS_STORAGE[impl]], impl, next_index())
  if not ok then
    return fail("stats " .. impl, op, err)
  end
  ngx.print("ok")
end

-- /bench/stats_on: counting on again (after the statistics rows).
function _M.stats_on()
  stats_enabled(true)
  ngx.print("ok")
end

---
-- The same handler work without the storage call (counter, key string, response).
function _M.noop()
  local _ = "k" .. next_index() % SESSIONS
  ngx.print("ok")
end

-- /bench/reset: the delete counter restarts at 1 and the error counts at 0.
function _M.reset()
  counter:set("n", 0)
  errors:flush_all()
  ngx.print("ok")
end

-- /bench/count: storage calls (and no-op requests) started since the last reset.
function _M.count()
  ngx.print(counter:get("n") or 0)
end

-- /bench/errors: "impl op<TAB>count<TAB>first error" lines.
function _M.report_errors()
  for _, key in ipairs(errors:get_keys(0)) do
    if not key:find(" first$") then
      ngx.say(key, "\t", errors:get(key), "\t", errors:get(key .. " first") or "")
    end
  end
end

-- /bench/info: what runs inside nginx.
function _M.info()
  local redis_ok, redis = pcall(require, "resty.redis")
  local session_ok, session = pcall(require, "resty.session")
  local connector_ok, connector = pcall(require, "resty.redis.connector")
  ngx.say("luajit\t", jit and jit.version or "?")
  ngx.say("ngx_lua\t", ngx.config.ngx_lua_version)
  ngx.say("hiredis_module\t", require("resty.session.hiredis")._VERSION)
  ngx.say("resty_redis\t", redis_ok and redis._VERSION or "absent")
  ngx.say("resty_session\t", session_ok and session._VERSION or "absent")
  ngx.say("resty_redis_connector\t", connector_ok and connector._VERSION or "absent")
  ngx.say("upstream\t", storages.up and "yes" or "no")
  ngx.say("upstream_cluster\t", cluster_storages.up and "yes" or "no")
  ngx.say("upstream_sentinel\t", sentinel_storages.up and "yes" or "no")
end

return _M
