-- The side-by-side benchmark's driver (run by bench/run.sh under
-- spec/support/with-servers.sh --only plain[,cluster], and spec/support/with-sentinels.sh
-- for the Sentinel rows): starts nginx (spec/support/nginx.lua) with bench/handlers.lua,
-- runs wrk against upstream resty.session.redis and this module (cosocket with and
-- without auto-pipelining, native) interleaved per row, reads the workers' CPU from /proc,
-- then the Redis Cluster rows, the Sentinel rows and the durability rows (wait_replicas,
-- with a replica attached for them: bench/replica.lua), the limits (no-op handler,
-- redis-benchmark, the plain-LuaJIT native loop), and writes bench/results/results.{csv,md}
-- and the chart's data.
--
--   luajit bench/http_bench.lua                       the benchmark (settings: env, see bench/run.sh)
--   luajit bench/http_bench.lua --profile IMPL OP CONC SECONDS WORKERS
--                                                     perf record -g on the workers under load
package.path = "spec/support/?.lua;bench/?.lua;lua/?.lua;lua/?/init.lua;" .. package.path

local socket = require "socket"
local nginx = require "nginx"
local raw = require "raw_redis"
local proc = require "proc"
local report = require "report"
local dataset = require "dataset"
local replica = require "replica"
local group = require "sentinel_group"

local sh, quote = proc.sh, proc.quote
local ROOT = nginx.root

local REDIS_PORT = assert(tonumber(os.getenv("HIREDIS_TEST_PORT")),
  "run through bench/run.sh (make bench): HIREDIS_TEST_PORT is not set")
-- The Redis Cluster (with-servers.sh's `cluster`), when bench/run.sh started it.
local CLUSTER_PORTS = {}
for port in (os.getenv("HIREDIS_TEST_CLUSTER_PORTS") or ""):gmatch("%d+") do
  CLUSTER_PORTS[#CLUSTER_PORTS + 1] = tonumber(port)
end

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local function list(s, numeric)
  local out = {}
  for item in s:gmatch("[^,%s]+") do out[#out + 1] = numeric and assert(tonumber(item), item) or item end
  return out
end

local function log(fmt, ...)
  io.stderr:write(string.format(fmt, ...), "\n")
end

-- Settings ------------------------------------------------------------------

local QUICK = env("BENCH_QUICK", "0") == "1"
local ALL_OPS = "get,set,set_meta,delete,read_metadata"
-- BENCH_CLUSTER, BENCH_DURABILITY: 1 (default) the Redis Cluster rows / the durability rows
-- too, 0 none, only: nothing else (both only: those two kinds of rows)
local CLUSTER_MODE = env("BENCH_CLUSTER", "1")
assert(CLUSTER_MODE == "0" or CLUSTER_MODE == "1" or CLUSTER_MODE == "only", "BENCH_CLUSTER: 0, 1 or only")
local DURABILITY_MODE = env("BENCH_DURABILITY", "1")
assert(DURABILITY_MODE == "0" or DURABILITY_MODE == "1" or DURABILITY_MODE == "only",
       "BENCH_DURABILITY: 0, 1 or only")
-- BENCH_STATS: the statistics rows (counting on against off), 1 (default), 0 or only.
local STATS_MODE = env("BENCH_STATS", "1")
assert(STATS_MODE == "0" or STATS_MODE == "1" or STATS_MODE == "only", "BENCH_STATS: 0, 1 or only")
-- BENCH_SENTINEL: the Redis Sentinel rows (upstream's sentinel storage against ours), 1 (default), 0 or only.
local SENTINEL_MODE = env("BENCH_SENTINEL", "1")
assert(SENTINEL_MODE == "0" or SENTINEL_MODE == "1" or SENTINEL_MODE == "only", "BENCH_SENTINEL: 0, 1 or only")
local ONLY = CLUSTER_MODE == "only" or DURABILITY_MODE == "only" or STATS_MODE == "only" or SENTINEL_MODE == "only"
local plan = {
  ops = ONLY and {} or list(env("BENCH_OPS", QUICK and "get,set_meta" or ALL_OPS)),
  conc = list(env("BENCH_CONC", QUICK and "1,32" or "1,32,128"), true),
  -- the tables of their own run at those of their worker counts that are here too
  workers = list(env("BENCH_WORKERS", QUICK and "1" or "1,2"), true),
}
-- Rows in tables of their own, each repetition's after its single-node rows: these ops
-- at these concurrencies, with these nginx worker counts (those BENCH_WORKERS has), these
-- implementations (ratios to bases[impl]), served at /<name>/<impl>/<op> by B.<handler>.
-- The Redis Cluster's (upstream's cluster storage against ours).
-- Their `sc` is the single-node rows' co storage on the single Redis, run on the same
-- rows of the same pass (`reference`): the no-op baseline drifts between passes, so a
-- storage CPU is set against the single node's only within one pass.
local CLUSTER_PLAN = { name = "cluster", ops = { "get", "set_meta", "read_metadata" },
                       conc = QUICK and { 32 } or { 32, 128 }, workers = { 1, 2 },
                       impls = { "up", "co", "na", "sc" }, bases = { up = "up", co = "up", na = "up" },
                       reference = "sc", handler = "run_cluster" }
-- The Redis Sentinel group's (upstream's sentinel storage against ours), the same rows.
local SENTINEL_PLAN = { name = "sentinel", ops = { "get", "set_meta", "read_metadata" },
                        conc = QUICK and { 32 } or { 32, 128 }, workers = { 1, 2 },
                        impls = { "up", "co", "na", "sc" }, bases = { up = "up", co = "up", na = "up" },
                        reference = "sc", handler = "run_sentinel" }
-- The durability rows: co and na as in the single-node rows, cw and nw the same with `wait`,
-- all with a replica attached to the single Redis for these rows only, so that the other
-- rows keep measuring a master without one (bench/replica.lua).
local DURABILITY_PLAN = { name = "durability", ops = { "set", "set_meta" }, conc = QUICK and { 32 } or { 32, 128 },
                          workers = { 1 }, impls = { "co", "cw", "na", "nw" },
                          bases = { co = "co", cw = "co", na = "na", nw = "na" }, handler = "run_durability",
                          wait = { wait_replicas = 1, wait_timeout = 1000 }, waits = { cw = true, nw = true },
                          stats = true }
-- The statistics rows: co and na as in the single-node rows (counting on, the default),
-- cq and nq the same calls with counting off (stats_enabled(false)): what stats() costs.
local STATS_PLAN = { name = "stats", ops = { "get", "set" }, conc = QUICK and { 32 } or { 32, 128 }, workers = { 1 },
                     impls = { "cq", "co", "nq", "na" }, bases = { cq = "cq", co = "cq", nq = "nq", na = "nq" },
                     handler = "run_stats" }
local REPS = tonumber(env("BENCH_REPS", QUICK and "1" or "3"))
local DURATION = tonumber(env("BENCH_DURATION", "1"))     -- s per wrk run (wrk takes whole seconds)
local WARMUP = tonumber(env("BENCH_WARMUP", QUICK and "0" or "1"))  -- s per (workers, op), impls at once
local WRK_THREADS = tonumber(env("BENCH_WRK_THREADS", "1"))
local LIMIT_N = tonumber(env("BENCH_LIMIT_N", QUICK and "5000" or "20000"))
local RESULTS = env("BENCH_RESULTS", "bench/results")
-- delete needs a fresh key per request: this many are written before each run
-- (above what the no-op handler reaches here: no run can delete them all)
local DELETE_KEYS = tonumber(env("BENCH_DELETE_KEYS", tostring(150000 * DURATION)))

for _, op in ipairs(plan.ops) do
  assert(report.OP_NAMES[op], "BENCH_OPS: unknown op '" .. op .. "' (" .. ALL_OPS .. ")")
end
-- Implementations, in report order whatever the order given.
local wanted = {}
for _, impl in ipairs(list(env("BENCH_IMPLS", table.concat(report.IMPLS, ",")))) do
  assert(report.IMPL_NAMES[impl], "BENCH_IMPLS: unknown implementation '" .. impl .. "' ("
         .. table.concat(report.IMPLS, ",") .. ")")
  wanted[impl] = true
end

-- Upstream: UPSTREAM_LUA_PATH (a Lua path with '?', or a LuaRocks tree), else ../shared/third_party.
-- Relative paths are taken from the project root (nginx needs absolute ones).
local function absolute(path)
  return path:sub(1, 1) == "/" and path or (ROOT .. "/" .. path)
end
-- Upstream's cluster storage needs Kong's resty.rediscluster, resty.lock and resty.string
-- too, its sentinel storage lua-resty-redis-connector (in the same UPSTREAM_LUA_PATH / tree,
-- or next to the others in ../shared/third_party).
local function upstream_path()
  local given = env("UPSTREAM_LUA_PATH")
  if given and given:find("?", 1, true) then
    local parts = {}
    for p in given:gmatch("[^;]+") do parts[#parts + 1] = absolute(p) end
    return table.concat(parts, ";")
  elseif given then
    local tree = absolute(given)
    return tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua"
  end
  local base = ROOT .. "/../shared/third_party/"
  local parts = {}
  for _, lib in ipairs({ "lua-resty-session", "lua-resty-redis", "lua-resty-openssl", "lua-ffi-zlib",
                         "lua-resty-string", "kong-redis-cluster", "lua-resty-lock",
                         "lua-resty-redis-connector" }) do
    parts[#parts + 1] = base .. lib .. "/lib/?.lua"
  end
  return table.concat(parts, ";")
end
local UPSTREAM_PATH = upstream_path()
local WITH_UPSTREAM = package.searchpath("resty.session.redis", UPSTREAM_PATH) ~= nil
                      and package.searchpath("resty.redis", UPSTREAM_PATH) ~= nil
if not WITH_UPSTREAM then
  log("bench: upstream resty.session.redis / resty.redis not found in %s: running without it "
      .. "(set UPSTREAM_LUA_PATH to a LuaRocks tree with lua-resty-session installed); no ratios", UPSTREAM_PATH)
end
-- Whether `side` runs with `workers` nginx workers.
local function runs_at(side, workers)
  for _, w in ipairs(side.workers) do
    if w == workers then return true end
  end
  return false
end
-- `side`'s worker counts cut to those BENCH_WORKERS has: false (logged) when none is left.
local function side_workers(side)
  local kept, wanted_counts = {}, { workers = plan.workers }
  for _, w in ipairs(side.workers) do
    if runs_at(wanted_counts, w) then kept[#kept + 1] = w end
  end
  if #kept == 0 then
    log("bench: no %s rows: they run with %s worker(s), and BENCH_WORKERS has none of these", side.name,
        table.concat(side.workers, " or "))
    return false
  end
  side.workers = kept
  return true
end
local CLUSTER = (CLUSTER_MODE == "only" or (CLUSTER_MODE == "1" and not ONLY)) and #CLUSTER_PORTS > 0
if CLUSTER_MODE == "only" and not CLUSTER then
  error("BENCH_CLUSTER=only: no Redis Cluster (run through bench/run.sh)")
end
local DURABILITY = (DURABILITY_MODE == "only" or (DURABILITY_MODE == "1" and not ONLY))
                   and side_workers(DURABILITY_PLAN)
local STATS = (STATS_MODE == "only" or (STATS_MODE == "1" and not ONLY)) and side_workers(STATS_PLAN)
local WITH_UPSTREAM_CLUSTER = false
if CLUSTER then
  local has = true
  for _, module in ipairs({ "resty.session.redis.cluster", "resty.rediscluster", "resty.lock", "resty.string",
                            "resty.redis" }) do
    if not package.searchpath(module, UPSTREAM_PATH) then
      has = false
      log("bench: cluster rows without upstream: %s not found in %s (Kong's resty-redis-cluster, "
          .. "lua-resty-lock, lua-resty-string)", module, UPSTREAM_PATH)
      break
    end
  end
  WITH_UPSTREAM_CLUSTER = has
  CLUSTER_PLAN.upstream = has
  CLUSTER = side_workers(CLUSTER_PLAN)
end
-- The sentinel group (spec/support/with-sentinels.sh), when bench/run.sh started it.
local SENTINEL = SENTINEL_MODE == "only" or (SENTINEL_MODE == "1" and not ONLY)
if SENTINEL and not group.available then
  if SENTINEL_MODE == "only" then error("BENCH_SENTINEL=only: " .. group.why_absent) end
  log("bench: no sentinel rows: %s", group.why_absent)
  SENTINEL = false
end
local WITH_UPSTREAM_SENTINEL = false
if SENTINEL then
  local has = true
  for _, module in ipairs({ "resty.session.redis.sentinel", "resty.redis.connector", "resty.redis.sentinel",
                            "resty.redis" }) do
    if not package.searchpath(module, UPSTREAM_PATH) then
      has = false
      log("bench: sentinel rows without upstream: %s not found in %s (lua-resty-redis-connector)", module,
          UPSTREAM_PATH)
      break
    end
  end
  WITH_UPSTREAM_SENTINEL = has
  SENTINEL_PLAN.upstream = has
  SENTINEL = side_workers(SENTINEL_PLAN)
end
-- The tables of their own that run.
local SIDES = {}
if CLUSTER then SIDES[#SIDES + 1] = CLUSTER_PLAN end
if SENTINEL then SIDES[#SIDES + 1] = SENTINEL_PLAN end
if DURABILITY then SIDES[#SIDES + 1] = DURABILITY_PLAN end
if STATS then SIDES[#SIDES + 1] = STATS_PLAN end
local CLUSTER_PASSWORD = os.getenv("HIREDIS_TEST_CLUSTER_PASSWORD")
-- the group with-sentinels.sh's sentinels monitor (its TLS group is not used)
local SENTINEL_MASTER = "mymaster"
local CLUSTER_LOCK_ZONE = "redis_cluster_slot_locks"
local IMPLS = {}
for _, impl in ipairs(report.IMPLS) do
  if wanted[impl] and (impl ~= "up" or WITH_UPSTREAM) then IMPLS[#IMPLS + 1] = impl end
end
assert(#IMPLS > 0, "BENCH_IMPLS: nothing to run")

-- cn (pipelining = false) runs only on rows with more than one connection: with one,
-- no worker ever has two calls in flight, so co takes cn's path (a pooled connection
-- per call, nothing to batch) and a cn run would repeat co's at the cost of a run.
local function runs_on(impl, conc)
  return impl ~= "cn" or conc > 1
end

-- Redis ---------------------------------------------------------------------

local redis = assert(raw.connect(REDIS_PORT))
redis:settimeout(60)
local function call(...) return redis:call(...) end

-- Sessions d1..d<n> that each implementation's next delete run must (re)write: all of
-- them after a FLUSHALL, then only those the previous run deleted.
local delete_refill = {}

local function flush()
  assert(redis:call("FLUSHALL"))
  delete_refill = {}
end

-- What `op` reads (delete: set_meta's sessions, whose metadata it cleans), for each of
-- `names` (default: the implementations of the single-node rows).
local function populate(op, names)
  if op == "delete" then op = "set_meta" end
  for _, name in ipairs(names or IMPLS) do
    dataset.populate(call, op, name, os.time())
  end
end

-- What each of `ops` reads, for each of `names`.
local function populate_all(ops, names)
  for _, op in ipairs(ops) do populate(op, names) end
end

-- nginx ---------------------------------------------------------------------

local function locations()
  local out = {
    "location = /noop { content_by_lua_block { B.noop() } }",
    "location = /bench/reset { content_by_lua_block { B.reset() } }",
    "location = /bench/errors { content_by_lua_block { B.report_errors() } }",
    "location = /bench/count { content_by_lua_block { B.count() } }",
    "location = /bench/info { content_by_lua_block { B.info() } }",
    "location = /bench/stats_on { content_by_lua_block { B.stats_on() } }",
  }
  for _, impl in ipairs(IMPLS) do
    for op in pairs(report.OP_NAMES) do
      out[#out + 1] = string.format('location = /%s/%s { content_by_lua_block { B.run("%s", "%s") } }',
                                    impl, op, impl, op)
    end
  end
  if CLUSTER then
    out[#out + 1] = "location = /bench/cluster_fill { content_by_lua_block { B.cluster_fill() } }"
  end
  for _, side in ipairs(SIDES) do
    for _, impl in ipairs(side.impls) do
      for _, op in ipairs(side.ops) do
        out[#out + 1] = string.format('location = /%s/%s/%s { content_by_lua_block { B.%s("%s", "%s") } }',
                                      side.name, impl, op, side.handler, impl, op)
      end
    end
  end
  return table.concat(out, "\n")
end

-- A table of its own's implementations that run: up only with upstream's storage for
-- that topology (side.upstream).
local function side_impls(side)
  local out = {}
  for _, impl in ipairs(side.impls) do
    if impl ~= "up" or side.upstream then out[#out + 1] = impl end
  end
  return out
end

-- Those whose sessions the table writes on its own servers: all but the single-node
-- reference (side.reference), whose sessions side_pass writes on the single Redis.
local function own_impls(side)
  local out = {}
  for _, impl in ipairs(side_impls(side)) do
    if impl ~= side.reference then out[#out + 1] = impl end
  end
  return out
end

local function start_nginx(workers)
  local cluster
  if CLUSTER and runs_at(CLUSTER_PLAN, workers) then
    local nodes = {}
    for i, port in ipairs(CLUSTER_PORTS) do nodes[i] = { ip = "127.0.0.1", port = port } end
    cluster = { nodes = nodes, password = CLUSTER_PASSWORD, with_upstream = WITH_UPSTREAM_CLUSTER,
                lock_zone = CLUSTER_LOCK_ZONE }
  end
  local sentinel
  if SENTINEL and runs_at(SENTINEL_PLAN, workers) then
    sentinel = { sentinels = group.sentinels(), master = SENTINEL_MASTER, sentinel_password = group.sentinel_password,
                 password = group.password, with_upstream = WITH_UPSTREAM_SENTINEL }
  end
  local srv = nginx.start({
    workers = workers,
    log_level = "error",  -- nginx's default (at warn, stock nginx's pipelines do not linger)
    vars = { port = REDIS_PORT, path = ROOT .. "/bench/?.lua;" .. UPSTREAM_PATH .. ";",
             with_upstream = WITH_UPSTREAM, cluster = cluster, sentinel = sentinel,
             durability = DURABILITY and runs_at(DURABILITY_PLAN, workers) and DURABILITY_PLAN.wait or nil },
    init = [[
      package.path = T.path .. package.path
      B = require "handlers"
      B.init({ host = "127.0.0.1", port = T.port }, T.with_upstream, T.cluster, T.durability, T.sentinel)
    ]],
    http = [[
      lua_shared_dict bench 1m;
      lua_shared_dict bench_errors 1m;
      # upstream's cluster client keeps its slot-cache lock here
      lua_shared_dict ]] .. CLUSTER_LOCK_ZONE .. [[ 1m;
      keepalive_requests 1000000;
    ]],
    server = locations(),
  })
  -- the workers, once all are up
  local deadline = socket.gettime() + 10
  repeat
    srv.workers = proc.children(srv.pid)
    if #srv.workers == workers then return srv end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  srv:stop()
  error("nginx did not start " .. workers .. " workers")
end

local function http_get(srv, path)
  local body, status = srv:get(path)
  assert(status == 200, path .. ": HTTP " .. tostring(status) .. " " .. tostring(body))
  return body
end

-- "impl op" -> { count, first error } since the last /bench/reset.
local function handler_errors(srv)
  local out = {}
  for line in http_get(srv, "/bench/errors"):gmatch("[^\n]+") do
    local key, count, first = line:match("^([^\t]+)\t(%d+)\t(.*)$")
    if key then out[key] = { tonumber(count), first } end
  end
  return out
end

-- wrk -----------------------------------------------------------------------

-- What Redis saw since CONFIG RESETSTAT: commands by name, and connections accepted.
local function redis_counts()
  local text = assert(call("INFO", "commandstats")) .. assert(call("INFO", "stats"))
  local commands, total = {}, 0
  for name, calls in text:gmatch("cmdstat_([%w|]+):calls=(%d+)") do
    if not name:find("^info") and not name:find("^config") then   -- the harness's own
      commands[name] = tonumber(calls)
      total = total + tonumber(calls)
    end
  end
  return { commands = commands, total = total,
           connections = tonumber(text:match("total_connections_received:(%d+)")) or 0 }
end

-- Requests the handlers started since the last /bench/reset, once they have all
-- finished: when wrk stops, up to one request per connection is still in the workers
-- (a blocked native call, a queued cosocket); their CPU belongs to this run, and they
-- must not spill into the next one.
local function settled_count(srv)
  local last = tonumber(http_get(srv, "/bench/count"))
  local deadline = socket.gettime() + 10
  repeat
    socket.sleep(0.02)
    local now = tonumber(http_get(srv, "/bench/count"))
    if now == last then return now end
    last = now
  until socket.gettime() > deadline
  return last
end

-- "get=1.00 hello=0.23": Redis commands per request, most frequent first.
local function command_mix(commands, served)
  if served == 0 then return "" end
  local names = {}
  for name in pairs(commands) do names[#names + 1] = name end
  table.sort(names, function(a, b) return commands[a] > commands[b] or (commands[a] == commands[b] and a < b) end)
  local parts = {}
  for i, name in ipairs(names) do parts[i] = string.format("%s=%.2f", name, commands[name] / served) end
  return table.concat(parts, " ")
end

-- One wrk run against `path`; the workers' CPU is read right before and once the
-- last request is done, and divided by the requests the handlers served. `no_stats`:
-- the storage is not the single Redis (the cluster rows), whose counts mean nothing.
local function wrk(srv, path, conc, seconds, no_stats)
  local cmd = string.format("wrk -t%d -c%d -d%ds --timeout 5s -s %s %s", math.min(WRK_THREADS, conc), conc,
                            seconds, quote(ROOT .. "/bench/wrk_report.lua"), quote(srv:url(path)))
  local count_before = tonumber(http_get(srv, "/bench/count"))   -- the previous run has settled
  if not no_stats then assert(call("CONFIG", "RESETSTAT")) end
  local cpu_before = proc.cpu_us(srv.workers)
  local output = sh(cmd, true)
  local served = settled_count(srv) - count_before
  local cpu_after = proc.cpu_us(srv.workers)
  local redis_stats = not no_stats and redis_counts() or nil
  local line = output:match("RESULT ([^\n]+)")
  if not line then error("wrk failed: " .. cmd .. "\n" .. output) end
  local r = {}
  for k, v in line:gmatch("([%w_]+)=(%d+)") do r[k] = tonumber(v) end
  local requests = r.requests
  local note = ""
  if not cpu_before or not cpu_after then note = "a worker exited" end
  return {
    requests = requests,
    rps = requests / (r.duration_us / 1e6),
    p50_ms = r.p50_us / 1000,
    p99_ms = r.p99_us / 1000,
    served = served,
    cpu_us = cpu_before and cpu_after and served > 0 and (cpu_after - cpu_before) / served or nil,
    redis_cmds = redis_stats and served > 0 and redis_stats.total / served or nil,
    redis_conns = redis_stats and served > 0 and redis_stats.connections / served or nil,
    redis_mix = redis_stats and command_mix(redis_stats.commands, served) or "",
    redis_commands = redis_stats and redis_stats.commands,
    non2xx = r.status,
    socket_errors = r.connect + r.read + r.write + r.timeout,
    note = note,
  }
end

local runs = {}
local function record(key, result)
  runs[key] = runs[key] or {}
  table.insert(runs[key], result)
end

-- One measured run of `impl` on `op` (delete: fresh keys first), errors checked.
local function measure(srv, workers, op, conc, impl)
  local path = impl == "noop" and "/noop" or ("/" .. impl .. "/" .. op)
  http_get(srv, "/bench/reset")
  local deletes = op == "delete" and impl ~= "noop"
  if deletes then
    local n = delete_refill[impl] or DELETE_KEYS
    if n > 0 then dataset.populate(call, "delete", impl, os.time(), 1, n) end
  end
  local r = wrk(srv, path, conc, DURATION)
  local errs = handler_errors(srv)
  local e = errs[(impl == "noop" and "noop noop") or (impl .. " " .. op)]
  if e then r.note = (r.note ~= "" and r.note .. "; " or "") .. "first error: " .. e[2] end
  if deletes then
    -- every request must have deleted a prepared session: the first and the last are gone
    -- (d1..d<served>, and no further)
    local base = dataset.PREFIX .. ":" .. impl .. ":d"
    delete_refill[impl] = math.min(r.served, DELETE_KEYS)
    if r.served >= DELETE_KEYS then
      r.note = (r.note ~= "" and r.note .. "; " or "")
               .. string.format("%d requests >= %d prepared keys (BENCH_DELETE_KEYS)", r.served, DELETE_KEYS)
    elseif call("EXISTS", base .. "1", base .. r.served) ~= 0 or call("EXISTS", base .. (r.served + 1)) ~= 1 then
      r.note = (r.note ~= "" and r.note .. "; " or "") .. "delete missed the prepared sessions"
    end
  end
  record(workers .. "/" .. op .. "/" .. conc .. "/" .. impl, r)
  log("  w%d %-13s c%-3d %-4s %8.0f rps  p50 %6.2f ms  p99 %6.2f ms  cpu %6.1f us/req  redis %s, %.2f conns/req%s%s",
      workers, op, conc, impl, r.rps, r.p50_ms, r.p99_ms, r.cpu_us or -1, r.redis_mix, r.redis_conns or -1,
      (r.non2xx + r.socket_errors > 0) and string.format("  ERRORS non2xx=%d socket=%d", r.non2xx,
                                                          r.socket_errors) or "",
      r.note ~= "" and ("  " .. r.note) or "")
  return r
end

-- One measured run of a row of `side` (CLUSTER_PLAN, DURABILITY_PLAN...) with `workers`
-- nginx workers: `impl` (or "noop", then `op` is "noop" too) on `op` at `conc` connections,
-- recorded under "<side>/<workers>/<op>/<conc>/<impl>". Redis's counts only when the side's
-- storage is the single Redis (side.stats); with side.waits, every request of those
-- implementations must have sent one WAIT and the others' none, give or take one per
-- connection: the requests in flight when wrk stops may land in the next run;
-- side.check(), when given, returns what spoiled the run (or nil).
local function measure_side(srv, side, workers, op, conc, impl)
  local path = impl == "noop" and "/noop" or ("/" .. side.name .. "/" .. impl .. "/" .. op)
  http_get(srv, "/bench/reset")
  local r = wrk(srv, path, conc, DURATION, not side.stats)
  local errs = handler_errors(srv)
  local e = errs[(impl == "noop" and "noop noop") or (side.name .. " " .. impl .. " " .. op)]
  if e then r.note = (r.note ~= "" and r.note .. "; " or "") .. "first error: " .. e[2] end
  if side.waits and impl ~= "noop" then
    local waits, want = r.redis_commands.wait or 0, side.waits[impl] and r.served or 0
    if math.abs(waits - want) > conc then
      r.note = (r.note ~= "" and r.note .. "; " or "") .. string.format("%d WAIT for %d requests", waits, r.served)
    end
  end
  local spoiled = side.check and side.check()
  if spoiled then r.note = (r.note ~= "" and r.note .. "; " or "") .. spoiled end
  record(side.name .. "/" .. workers .. "/" .. op .. "/" .. conc .. "/" .. impl, r)
  log("  %s w%d %-13s c%-3d %-4s %8.0f rps  p50 %6.2f ms  p99 %6.2f ms  cpu %6.1f us/req%s%s%s", side.name,
      workers, impl == "noop" and "-" or op, conc, impl, r.rps, r.p50_ms, r.p99_ms, r.cpu_us or -1,
      side.stats and ("  redis " .. r.redis_mix) or "",
      (r.non2xx + r.socket_errors > 0) and string.format("  ERRORS non2xx=%d socket=%d", r.non2xx,
                                                          r.socket_errors) or "",
      r.note ~= "" and ("  " .. r.note) or "")
  return r
end

-- Limits --------------------------------------------------------------------

local function redis_benchmark(conc)
  local out = sh(string.format("redis-benchmark -h 127.0.0.1 -p %d -t set,get -d %d -c %d -n %d --csv",
                               REDIS_PORT, dataset.VALUE_BYTES, conc, LIMIT_N * math.max(1, conc / 8)), true)
  local res = {}
  for test, rps, p50, p99 in out:gmatch('"(%u+)","([%d.]+)","[%d.]+","[%d.]+","([%d.]+)","[%d.]+","([%d.]+)"') do
    res[test] = { kind = "redis-benchmark", op = test, conc = conc, impl = "redis-benchmark",
                  rps = tonumber(rps), p50_ms = tonumber(p50), p99_ms = tonumber(p99) }
  end
  assert(res.GET and res.SET, "redis-benchmark output not understood:\n" .. out)
  return res
end

local function native_loop()
  local out = sh(string.format("RSH_BUILD_DIR=build luajit bench/native_bench.lua %d '^tcp [gs]et$'", LIMIT_N), true)
  local res = {}
  for op, rps in out:gmatch("tcp (%a+)%s+%d+ calls%s+[%d.]+ s%s+(%d+) calls/s") do
    res[op:upper()] = tonumber(rps)
  end
  assert(res.GET and res.SET, "native_bench output not understood:\n" .. out)
  return res
end

-- Warm-up of one op: every implementation (of the single-node rows, or of `side`'s) under
-- wrk at 32 connections at once, for WARMUP seconds (JIT traces, filled pools, the cluster
-- clients' slot maps); nothing recorded.
local function warm_up(srv, op, side)
  local cmds = {}
  for _, impl in ipairs(side and side_impls(side) or IMPLS) do
    cmds[#cmds + 1] = string.format("wrk -t1 -c32 -d%ds --timeout 5s %s >/dev/null 2>&1 &", WARMUP,
                                    quote(srv:url((side and "/" .. side.name .. "/" or "/") .. impl .. "/" .. op)))
  end
  sh(table.concat(cmds, " ") .. " wait")
  settled_count(srv)
end

-- One pass over `side`'s rows with `workers` nginx workers: per connection count the no-op
-- handler once, then per op the implementations back to back (each op warmed up on the
-- first pass).
local function side_pass(srv, side, workers, rep)
  -- the single-node reference's sessions, on the single Redis (its rows flush it per op)
  if side.reference then populate_all(side.ops, { side.reference }) end
  for i, conc in ipairs(side.conc) do
    measure_side(srv, side, workers, "noop", conc, "noop")
    for _, op in ipairs(side.ops) do
      if rep == 1 and i == 1 and WARMUP > 0 then warm_up(srv, op, side) end
      -- every other repetition in reverse order: no implementation always runs
      -- after another (a drift within a pass, e.g. Redis growing, favours neither)
      local impls = side_impls(side)
      local first, last, step = 1, #impls, 1
      if rep % 2 == 0 then first, last, step = #impls, 1, -1 end
      for k = first, last, step do measure_side(srv, side, workers, op, conc, impls[k]) end
    end
  end
end

-- The durability rows' pass: their sessions written, then a replica attached to the single
-- Redis for these rows alone (started and in sync, then stopped and gone from the master).
local function durability_pass(srv, workers, rep)
  flush()
  populate_all(DURABILITY_PLAN.ops, DURABILITY_PLAN.impls)
  local r = replica.start(REDIS_PORT, call)
  local ok, err = pcall(side_pass, srv, DURABILITY_PLAN, workers, rep)
  if not ok then
    r:kill()
    error(err, 0)
  end
  r:stop()
end

-- The statistics rows' pass: their sessions written; counting is on again afterwards
-- (the handler turns it off for cq and nq; the other rows count, as by default).
local function stats_pass(srv, workers, rep)
  flush()
  populate_all(STATS_PLAN.ops, STATS_PLAN.impls)
  local ok, err = pcall(side_pass, srv, STATS_PLAN, workers, rep)
  http_get(srv, "/bench/stats_on")
  if not ok then error(err, 0) end
end

-- The Sentinel rows' pass: the master the sentinels agree on gets their sessions (it
-- replicates them to the replica), then the rows; a run after which the sentinels name
-- another master (a failover) is spoiled (SENTINEL_PLAN.check).
local sentinel_master
function SENTINEL_PLAN.check()
  local now = group.agreed_master()
  if now ~= sentinel_master then
    return string.format("the sentinels named master %s after the run, %s before", tostring(now),
                         tostring(sentinel_master))
  end
end

local function sentinel_pass(srv, workers, rep)
  sentinel_master = group.wait_stable(30)
  local master = group.raw_server(sentinel_master)
  master:settimeout(60)
  local ok, err = pcall(function()
    assert(master:call("FLUSHALL"))
    local function master_call(...) return master:call(...) end
    for _, op in ipairs(SENTINEL_PLAN.ops) do
      for _, impl in ipairs(own_impls(SENTINEL_PLAN)) do
        dataset.populate(master_call, op, "se-" .. impl, os.time())
      end
    end
  end)
  master:close()
  if not ok then error(err, 0) end
  side_pass(srv, SENTINEL_PLAN, workers, rep)
end

-- Profile mode --------------------------------------------------------------

local function profile(impl, op, conc, seconds, workers)
  -- also a statistics row, as stats/<impl> (stats/cq: co with counting off)
  assert(impl == "noop" or report.IMPL_NAMES[impl] or impl == "stats/cq" or impl == "stats/co",
         "impl: " .. table.concat(report.IMPLS, ", ") .. ", noop, stats/cq or stats/co")
  assert(report.OP_NAMES[op], "op: " .. ALL_OPS)
  local srv = start_nginx(workers)
  local ok, err = pcall(function()
    populate(op == "delete" and "get" or op)
    if op == "delete" then dataset.populate(call, "delete", impl, os.time(), 1, 100000) end
    local path = impl == "noop" and "/noop" or ("/" .. impl .. "/" .. op)
    wrk(srv, path, conc, 1)   -- warm-up
    local pids = {}
    for i, pid in ipairs(srv.workers) do pids[i] = tostring(pid) end
    local data = os.getenv("BENCH_PERF_DATA") or (RESULTS .. "/perf.data")
    local load = string.format("wrk -t%d -c%d -d%ds %s >/dev/null 2>&1 &", math.min(WRK_THREADS, conc), conc,
                               seconds + 2, quote(srv:url(path)))
    os.execute(load)
    socket.sleep(0.5)
    log("profile: perf record -g -p %s for %d s (%s %s c%d, %d worker(s))", table.concat(pids, ","), seconds,
        impl, op, conc, workers)
    local rec = sh(string.format("perf record -g -o %s -p %s -- sleep %d", quote(data), table.concat(pids, ","),
                                 seconds), true)
    if not proc.read_file(data) then
      error("perf record failed (perf not usable here?):\n" .. rec)
    end
    socket.sleep(2)
    -- by shared object, then the top symbols (no call graphs: `perf report -i` has them)
    for _, sort in ipairs({ "dso", "dso,sym" }) do
      print("== perf report --sort " .. sort .. " (share of the workers' samples)")
      print(sh(string.format("perf report -i %s --stdio --no-children -g none --sort %s --percent-limit 0.5 "
                             .. "2>/dev/null | grep -v '^$' | grep -v '^#' | head -%d | cut -c1-160",
                             quote(data), sort, sort == "dso" and 20 or 50)))
    end
    io.stdout:flush()
    log("profile: data in %s (perf report -i %s)", data, data)
  end)
  srv:stop()
  if not ok then error(err, 0) end
end

if arg[1] == "--profile" then
  profile(arg[2] or "co", arg[3] or "get", tonumber(arg[4]) or 32, tonumber(arg[5]) or 10, tonumber(arg[6]) or 1)
  return
end

-- The benchmark -------------------------------------------------------------

local started = socket.gettime()
local load_before = proc.loadavg()
local info_text
local side_text = {}
for i, side in ipairs(SIDES) do
  side_text[i] = string.format("; %s rows: ops %s, c%s, w%s, impls %s", side.name, table.concat(side.ops, ","),
                               table.concat(side.conc, ","), table.concat(side.workers, ","),
                               table.concat(side_impls(side), ","))
end
log("bench: ops %s, conns %s, workers %s, impls %s, %d rep(s) of %d s, warm-up %d s%s",
    table.concat(plan.ops, ","), table.concat(plan.conc, ","), table.concat(plan.workers, ","),
    table.concat(IMPLS, ","), REPS, DURATION, WARMUP, table.concat(side_text))

-- Each side's pass: side_pass, or a pass that prepares what the side needs first.
local PASSES = { sentinel = sentinel_pass, durability = durability_pass, stats = stats_pass }

for _, workers in ipairs(plan.workers) do
  -- the tables of their own that run with this many workers
  local here = {}
  for _, side in ipairs(SIDES) do
    if runs_at(side, workers) then here[#here + 1] = side end
  end
  if #plan.ops > 0 or #here > 0 then
    flush()
    local srv = start_nginx(workers)
    local ok, err = pcall(function()
      info_text = info_text or http_get(srv, "/bench/info")
      if WITH_UPSTREAM and not info_text:find("upstream\tyes", 1, true) then
        error("upstream resty.session.redis did not load inside nginx:\n" .. srv:error_log())
      end
      if CLUSTER and runs_at(CLUSTER_PLAN, workers) then
        if WITH_UPSTREAM_CLUSTER and not http_get(srv, "/bench/info"):find("upstream_cluster\tyes", 1, true) then
          error("upstream resty.session.redis.cluster did not load inside nginx:\n" .. srv:error_log())
        end
        -- bench/run.sh has the cluster made in the background, while the rows above run
        local ready_file = os.getenv("HIREDIS_TEST_CLUSTER_READY")
        if ready_file then
          local deadline = socket.gettime() + 60
          while not proc.read_file(ready_file) and socket.gettime() < deadline do socket.sleep(0.05) end
          local state = proc.read_file(ready_file) or "timed out"
          if not state:find("^ready") then error("the Redis Cluster did not come up: " .. state) end
        end
        -- the cluster's get and read_metadata sessions, once per nginx: its rows only add
        -- to them (set_meta's keys cycle over a fixed set and expire), so the passes see
        -- the same data
        for _, impl in ipairs(own_impls(CLUSTER_PLAN)) do http_get(srv, "/bench/cluster_fill?impl=" .. impl) end
      end
      if SENTINEL and runs_at(SENTINEL_PLAN, workers) and WITH_UPSTREAM_SENTINEL
          and not http_get(srv, "/bench/info"):find("upstream_sentinel\tyes", 1, true) then
        error("upstream resty.session.redis.sentinel did not load inside nginx:\n" .. srv:error_log())
      end
      -- Each repetition is a pass over every row, so that the repetitions of a row lie
      -- minutes apart: a burst of load from elsewhere spoils one of them, not the median.
      -- Within a pass the no-op handler and the implementations run back to back on each
      -- row (noop, up, co, cn, na).
      for rep = 1, REPS do
        log("bench: %d worker(s), pass %d of %d", workers, rep, REPS)
        for _, op in ipairs(plan.ops) do
          flush()
          populate(op)
          if rep == 1 and WARMUP > 0 then warm_up(srv, op) end
          for _, conc in ipairs(plan.conc) do
            -- the no-op handler first: each row's baseline is measured in the same minute
            measure(srv, workers, op, conc, "noop")
            for _, impl in ipairs(IMPLS) do
              if runs_on(impl, conc) then measure(srv, workers, op, conc, impl) end
            end
          end
        end
        -- the tables of their own, in the same pass
        for _, side in ipairs(here) do
          local pass = PASSES[side.name]
          if pass then pass(srv, workers, rep) else side_pass(srv, side, workers, rep) end
        end
      end
    end)
    local nginx_errors = srv:errors()
    srv:stop()
    if not ok then error(err, 0) end
    if #nginx_errors > 0 then
      log("bench: nginx (%d workers) logged %d error lines, first: %s", workers, #nginx_errors, nginx_errors[1])
    end
  end
end

local limits = {}
if #plan.ops > 0 then   -- not on a run of only the tables of their own (BENCH_CLUSTER=only...)
  log("bench: limits (redis-benchmark, native loop)")
  local rb1 = redis_benchmark(1)
  local rb32 = redis_benchmark(32)
  for _, r in ipairs({ rb1.GET, rb32.GET, rb1.SET, rb32.SET }) do limits[#limits + 1] = r end
  local native = native_loop()
  for _, op in ipairs({ "GET", "SET" }) do
    limits[#limits + 1] = { kind = "native-loop", op = op, conc = 1, impl = "na", rps = native[op],
                            base_rps = rb1[op].rps, rps_ratio = native[op] / rb1[op].rps,
                            ratio_base = "redis-benchmark -c 1" }
  end
end

-- Report --------------------------------------------------------------------

local function info_field(name)
  return (info_text or ""):match(name .. "\t([^\n]*)") or "?"
end
local rev = sh("git rev-parse --short HEAD")
if rev ~= "" and sh("git status --porcelain --untracked-files=no -- src lua bench") ~= "" then
  rev = rev .. "+dirty"
end
local elapsed = socket.gettime() - started
local info = {
  machine = proc.machine({
    { "LuaJIT (nginx)", info_field("luajit") },
    { "ngx_lua", info_field("ngx_lua") },
    { "load average", load_before .. " at start, " .. proc.loadavg() .. " at end" },
    { "commit", rev ~= "" and rev or "?" },
    { "date", os.date("!%Y-%m-%d %H:%M UTC") },
  }, nginx.binary),
  settings = string.format("%d rep(s) x %d s per wrk run (%d thread), each repetition a pass over all rows "
    .. "with %s back to back per row%s, warm-up %d s per op (all implementations at once), %d-byte values, "
    .. "one storage call per request, %d s in all", REPS, DURATION, WRK_THREADS, table.concat(IMPLS, "/"),
    wanted.cn and " (cn on rows with more than one connection)" or "", WARMUP, dataset.VALUE_BYTES, elapsed),
  impls = IMPLS,
  upstream = "absent",
}
-- "lua-resty-session <version> on <what>": an upstream storage and the client under it
local function upstream_on(what)
  local session_version = info_field("resty_session")
  if session_version == "absent" then session_version = "of unknown version" end
  return "lua-resty-session " .. session_version .. " on " .. what
end
if WITH_UPSTREAM then
  info.upstream = upstream_on("lua-resty-redis " .. info_field("resty_redis"))
end
local rows = report.rows(plan, runs)
local sides = {}
for i, side in ipairs(SIDES) do sides[i] = report.side_rows(side, runs) end
if CLUSTER then
  local up_cluster = "absent"
  if WITH_UPSTREAM_CLUSTER then
    up_cluster = upstream_on("Kong's resty-redis-cluster and lua-resty-redis " .. info_field("resty_redis"))
  end
  info.cluster = { upstream = up_cluster, impls = side_impls(CLUSTER_PLAN) }
end
if SENTINEL then
  local up_sentinel = "absent"
  if WITH_UPSTREAM_SENTINEL then
    up_sentinel = upstream_on("lua-resty-redis-connector " .. info_field("resty_redis_connector")
                              .. " and lua-resty-redis " .. info_field("resty_redis"))
  end
  info.sentinel = { upstream = up_sentinel, impls = side_impls(SENTINEL_PLAN) }
end
if DURABILITY then
  info.durability = { settings = string.format("wait_replicas = %d, wait_timeout = %d",
                                               DURABILITY_PLAN.wait.wait_replicas, DURABILITY_PLAN.wait.wait_timeout) }
end
local md = report.markdown(info, rows, limits, sides)
sh("mkdir -p " .. quote(RESULTS))
local function write(name, data)
  local f = assert(io.open(RESULTS .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end
write("results.csv", report.csv(rows, limits, sides))
write("results.md", md)
write("chart.dat", report.chart_data(rows))
print(md)
log("bench: %d s; results in %s/results.{csv,md}", elapsed, RESULTS)
