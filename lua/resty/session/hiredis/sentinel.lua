---
-- Redis Sentinel storage for lua-resty-session: a drop-in for upstream's
-- `resty.session.redis.sentinel` (same configuration fields, methods, results and
-- Redis data layout as `resty.session.hiredis`).
--
-- `require("resty.session.hiredis").new(configuration)` routes here when the
-- configuration has `sentinels` (and no `nodes`); the module can be named as
-- lua-resty-session's storage directly too (`storage = "resty.session.hiredis.sentinel"`).
--
-- Each call:
--
-- 1. asks every sentinel at once: the request goes to each of them first, then
--    the answers are read, so the lookup costs the slowest answer, not their sum
--    (cosockets: one socket per sentinel, no light threads; native: the same,
--    with blocking reads after all the sends). The query is `SENTINEL MASTER`
--    (`SENTINEL MASTER` and `SENTINEL REPLICAS` in one write with `role = "slave"`),
--    on a connection authenticated once with the sentinel's credentials only
--    (pooled; over cosockets, kept between lookups by the worker's lookup runner);
-- 2. follows the answer with the highest `config-epoch`: a sentinel that has not
--    heard of a failover yet (they learn of it up to seconds apart) names the old
--    master at an older epoch and is ignored. Ties go to the first in the list;
-- 3. during a failover (an answer at that epoch flagged `failover_in_progress`:
--    its leader, the only sentinel that knows which replica it promotes, until the
--    others hear of it), asks the leader, in one write, for `SENTINEL MASTER` and
--    `SENTINEL REPLICAS` and routes to the replica flagged `promoted`. Writes that
--    go to the old master once the replica stopped replicating from it are
--    acknowledged and then discarded when the old master resyncs; the promoted
--    replica keeps them. Until it has taken over (its `ROLE` still says slave, for
--    the tens of milliseconds before the leader's `REPLICAOF NO ONE`), the call
--    fails with `failover in progress: the promoted replica is not master yet`
--    rather than risk a lost write. Before a replica is picked, the old master
--    still replicates to it and is used;
-- 4. runs the storage call on that address through the single-node path (pooled
--    connections, cosockets or native sockets by phase, auto-pipelining). A new
--    data connection sends `AUTH`/`SELECT` (the master's credentials only) and
--    `ROLE` in the same round trip; a server in another role than asked (a stale
--    sentinel answer) is refused with `role mismatch: expected master, got slave`,
--    the sentinel that named it loses ties from then on, and the call asks the
--    sentinels once more;
-- 5. a server whose call timed out may be a stalled master: when it wakes it
--    answers what waited in its socket before the sentinels demote it, and a
--    write acknowledged then is lost when it resyncs. The next call that is routed
--    there sends it a lone `PING` first and follows a second lookup, begun after
--    the answer; while it does not answer, the call fails and sends nothing there.
--
-- The master's data connections belong to the address followed when they were
-- opened (per worker, a pool name per address generation): once the sentinels
-- name another address, the old one's pool is never used again (native pools are
-- closed at once, idle cosockets time out), so a demoted master never gets a write
-- on a pooled connection, and any new connection there runs the `ROLE` check.
--
-- A sentinel that fails (unreachable, timed out, an error reply) is not asked for
-- 2 seconds, doubling while it keeps failing, up to 60. It is then asked again
-- after the others, and waited for (connect included) only as long again as the
-- others took to answer (the round lasting 5 ms at least): a dead or hung sentinel
-- costs its timeout once, not on every call or retry. When no other sentinel
-- answers, every sentinel is asked with its full timeouts.
--
-- Inside nginx, the sentinels' events are followed (`sentinel_watch`, on by
-- default; see sentinel_watch.lua): per worker, a subscription (`PSUBSCRIBE *`) to
-- every sentinel. While all are confirmed, a lookup's answer routes the calls
-- that follow it until any sentinel publishes any event or a subscription is
-- lost; the next call then looks up again. A failover begins with `+try-failover`
-- two sentinel timer ticks or more before the replica is promoted, so from then
-- on calls are routed by lookups, which see the failover in progress.
--
-- Without it (`sentinel_watch = false`, or natively), the master address is looked
-- up on every call: after a failover the
-- old master keeps accepting writes for seconds (until the sentinels reconfigure
-- it), and a client that cached its address would write to a dataset that is about
-- to be discarded. Over cosockets, concurrent calls of a worker share lookups,
-- each still routed by one that began after it arrived: a runner per storage and
-- worker runs them one after another, and a call joins the next one, not begun
-- yet (see "Shared lookups" below). A call to the master already followed parks
-- on it: its command goes out on the master's pipeline once the lookup named that
-- master. `sentinel_cache_ttl` trades that for fewer round trips. Any
-- connection error, `READONLY`, `LOADING`, `MASTERDOWN` or role mismatch drops the
-- cached address.
--
-- **Differences from `resty.session.redis.sentinel` (4.1.5 on lua-resty-redis-connector):**
--
-- * Every sentinel is asked and the newest configuration (`config-epoch`) is
--   followed, with a failover's promoted replica as soon as it is master; upstream
--   takes the first sentinel's `get-master-addr-by-name`, and its writes to the
--   old master between the promotion and the switch are acknowledged and lost.
-- * Two round trips per call on pooled connections (the sentinels' round, the
--   command); upstream: about five for a `set` (sentinel query, `AUTH` and `SELECT`
--   on every call, the command, `DISCARD`).
-- * `ROLE` is checked on each new data connection, and a demoted master's pooled
--   connections are dropped (upstream trusts the sentinel's answer, and writes to
--   a demoted master until its connections are killed).
-- * A failed sentinel is skipped for a while and its retries are bounded: upstream
--   tries the list in the configured order every call, so a hung first sentinel
--   adds its timeout to each.
-- * Sentinel and data connections live in separate pools whose names include the
--   role, the endpoint and the identity, also under a custom `pool` (upstream's
--   `pool` is shared by sentinel and master connections).
-- * `force_auth` (added): `AUTH` on every call, on the data and sentinel connections.
-- * Methods, results and error handling as `resty.session.hiredis` (`true` from
--   `set`/`delete`; errors inside a transaction are errors).
-- * Inside nginx, no round trip to the sentinels while they publish no event
--   (`sentinel_watch`); upstream asks a sentinel on every call.
-- * Works in every nginx phase and outside nginx (upstream needs cosockets).
-- * TLS to the sentinels as upstream: `ssl`, `ssl_verify` and `server_name` (and
--   `ssl_trusted_certificate`, `ssl_client_cert`, `ssl_client_priv_key`) apply to the
--   sentinels as to the Redis servers; `sentinel_ssl`, `sentinel_ssl_verify` and
--   `sentinel_server_name` (added) override them for the sentinels alone (TLS
--   sentinels in front of plain servers, or the other way round).
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
-- @tfield[opt] boolean ssl TLS to the Redis servers and, unless `sentinel_ssl` says
-- otherwise, to the sentinels (default `false`).
-- @tfield[opt] boolean ssl_verify Verify the certificates (servers; sentinels unless
-- `sentinel_ssl_verify`) (default `nil`: off). Inside nginx the CA comes from
-- `lua_ssl_trusted_certificate`, and names are checked, not IP addresses.
-- @tfield[opt] string server_name SNI and the name verified (servers; sentinels unless
-- `sentinel_server_name`) (default `nil`: the host).
-- @tfield[opt] string ssl_trusted_certificate *Extension.* As in `resty.session.hiredis`
-- (native transport), for the servers and the sentinels.
-- @tfield[opt] string ssl_client_cert *Extension.* As in `resty.session.hiredis`, for the
-- servers and the sentinels; needs `ssl_client_priv_key`.
-- @tfield[opt] string ssl_client_priv_key *Extension.* Its private key.
-- @tfield[opt] boolean sentinel_ssl *Extension.* TLS to the sentinels (default `nil`: as `ssl`).
-- @tfield[opt] boolean sentinel_ssl_verify *Extension.* Verify the sentinels' certificates
-- (default `nil`: as `ssl_verify`).
-- @tfield[opt] string sentinel_server_name *Extension.* SNI and the name verified for the
-- sentinels (default `nil`: as `server_name`, else each sentinel's host).
-- @tfield[opt] boolean force_auth `AUTH` on every call (default `nil`).
-- @tfield[opt] number sentinel_cache_ttl *Extension.* Seconds a master (or replica)
-- address is reused without asking a sentinel, per worker (default `0`: ask on every
-- call). Errors that suggest a failover drop it at once.
-- @tfield[opt] boolean sentinel_watch *Extension.* Inside nginx, follow the sentinels'
-- events (a subscription per sentinel and worker) and route cosocket calls by the last
-- lookup's answer until a sentinel publishes an event or a subscription is lost
-- (default `true`; `false`: a lookup per call).
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
local recycler = require "resty.session.hiredis.recycler"
local stats = require "resty.session.hiredis.stats"

local type = type
local error = error
local pcall = pcall
local rawget = rawget
local ipairs = ipairs
local pairs = pairs
local tonumber = tonumber
local tostring = tostring
local setmetatable = setmetatable
local random = math.random
local min = math.min
local max = math.max
local ceil = math.ceil
local remove = table.remove
local insert = table.insert
local find = string.find
local sub = string.sub

local serves = cosocket.serves
local cosocket_call = cosocket.call
local lone_round_trip = cosocket.lone_round_trip
local pipelines = cosocket.pipelines
local park, launch, unpark, await_parked = cosocket.park, cosocket.launch, cosocket.unpark, cosocket.await_parked
local new_operation = core.operation
local start_tls = cosocket.start_tls
local SET, GET, DELETE, READ_METADATA = cosocket.SET, cosocket.GET, cosocket.DELETE, cosocket.READ_METADATA
local counts = stats.counts
local counted_sentinel = counts.sentinel
local record = stats.record

local ngx = type(_G.ngx) == "table" and _G.ngx or nil
local now = ngx and ngx.now or os.time
local new_semaphore = ngx and require("ngx.semaphore").new
local turn = ngx and require("resty.session.hiredis.turn")
local sentinel_watch = ngx and require("resty.session.hiredis.sentinel_watch")
local timer_at = ngx and ngx.timer and ngx.timer.at
local worker_exiting = ngx and ngx.worker and ngx.worker.exiting

local RECEIVE_SIZE = 16384

local _M = {
  _VERSION = core._VERSION,
}

-- The fields handed to the single-node core for the data connections.
local DATA_FIELDS = {
  "prefix", "suffix", "username", "password", "database", "connect_timeout", "send_timeout",
  "read_timeout", "keepalive_timeout", "pool_size", "backlog", "ssl", "ssl_verify", "server_name",
  "ssl_trusted_certificate", "ssl_client_cert", "ssl_client_priv_key", "force_auth", "transport",
  "pipelining", "max_reply_size", "wait_replicas", "wait_timeout",
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

local function optional_boolean(conf, field)
  local value = conf[field]
  if value ~= nil and type(value) ~= "boolean" then
    invalid(field, "must be a boolean")
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
-- Asking the sentinels

-- A sentinel that failed (unreachable, timed out, an error reply) is not asked
-- for RETRY_AFTER seconds, doubling while it keeps failing, up to RETRY_AFTER_MAX.
local RETRY_AFTER, RETRY_AFTER_MAX = 2, 60

-- Fills `asked` (reused) with the sentinels a call asks: every healthy one and,
-- marked `retry`, the failed ones whose time came. When none is healthy, all of
-- them, each with its own timeouts (they are the only hope).
local function plan(order, asked, t)
  for i = #asked, 1, -1 do
    asked[i] = nil
  end
  local healthy = false
  for i = 1, #order do
    if not order[i].retry_at then
      healthy = true
      break
    end
  end
  for i = 1, #order do
    local entry = order[i]
    local retry_at = entry.retry_at
    if not healthy or not retry_at then
      entry.retry = false
      asked[#asked + 1] = entry
    elseif retry_at <= t then
      entry.retry = true
      asked[#asked + 1] = entry
    end
  end
end

local function mark(entry, failure, t)
  if failure then
    local failures = (entry.failures or 0) + 1
    entry.failures = failures
    entry.retry_at = t + min(RETRY_AFTER_MAX, RETRY_AFTER * 2 ^ (failures - 1))
  elseif entry.failures then
    entry.failures, entry.retry_at = nil, nil
  end
end

-- The cosocket round's clock.
local function milliseconds()
  ngx.update_time()
  return ngx.now() * 1000
end

-- Lookup rounds, reused: a round keeps its queries and their buffers, so a
-- cosocket lookup allocates nothing in the core (a round whose caller went away
-- mid-lookup is simply not given back).
local take_round, give_round = recycler.new(function()
  return core.sentinel_round("master", "", 0)
end, 16)

local function new_round(ask, master)
  local round = take_round()
  round:reset(ask, master, milliseconds())
  return round
end

-- A configured timeout (0: nginx's default) bounded by what is left of a budget.
local function bounded(configured, left)
  if not left then
    return configured
  end
  left = max(1, ceil(left))
  if configured == 0 or configured > left then
    return left
  end
  return configured
end

-- Connects to sentinel i of the round (the lookup runner's own connection to it,
-- else a pooled one, else a new one) and sends its request. Returns sock, or nil,
-- err, reused (a kept connection the sentinel had closed: worth one more try).
-- `held`: the runner's connections by sentinel (taken here, kept again by read_answer).
local function send_query(round, i, target, left, held)
  local sock = held and held[target]
  local kept = sock ~= nil
  local err
  if kept then
    held[target] = nil
  else
    local created
    created, sock, err = pcall(ngx.socket.tcp)
    if not created then
      return nil, "cosocket transport unavailable: " .. tostring(sock)
    end
    if not sock then
      return nil, err
    end
  end
  sock:settimeouts(bounded(target.connect_timeout, left), bounded(target.send_timeout, left),
                   bounded(target.read_timeout, left))
  local reused = kept
  if not kept then
    local ok
    ok, err = sock:connect(target.host, target.port, target.connect_options)
    if not ok then
      return nil, err
    end
    reused = sock:getreusedtimes() > 0
  end
  if target.ssl and not reused then
    local shaken, terr = start_tls(sock, target.tls_view)
    if not shaken then
      sock:close()
      return nil, terr
    end
  end
  local request = round:prepare(i, target.username, target.password, not reused or target.force_auth)
  local sent
  sent, err = sock:send(request)
  if not sent then
    sock:close()
    return nil, err, reused
  end
  return sock
end

-- Errors that mean "the sentinel closed this pooled connection".
local CLOSED_ERRORS = { ["closed"] = true, ["broken pipe"] = true, ["connection reset by peer"] = true }

-- Reads sentinel i's answer into the round; keeps the connection after a clean
-- one (the runner's, else pooled). A kept connection found closed before any
-- byte is replaced once.
local function read_answer(round, i, target, sock, left, held)
  local received, replaced = false, false
  while true do
    local data, err = sock:receiveany(RECEIVE_SIZE)
    if not data then
      sock:close()
      if received or replaced or not CLOSED_ERRORS[err] then
        round:fail(i, err)
        return
      end
      local serr
      sock, serr = send_query(round, i, target, left, held)
      if not sock then
        round:fail(i, serr)
        return
      end
      replaced = true
    else
      received = true
      local done, ferr = round:feed(i, data)
      if done == nil then
        sock:close()
        round:fail(i, ferr)
        return
      end
      if done then
        if round:failed(i) then
          sock:close()  -- a refused AUTH, an error reply: never kept
        elseif held then
          held[target] = sock
        elseif not sock:setkeepalive(target.keepalive_timeout, target.pool_size) then
          sock:close()
        end
        return
      end
    end
  end
end

-- One target's whole exchange (a retry: all of it within the budget left).
local function exchange(round, i, target, left, held)
  local deadline = left and milliseconds() + left
  local sock, err, reused = send_query(round, i, target, left, held)
  if sock then
    if deadline then
      left = deadline - milliseconds()
      sock:settimeout(bounded(target.read_timeout, left))
    end
    return read_answer(round, i, target, sock, left, held)
  end
  if reused then
    -- a kept connection the sentinel had closed: once more on a new one
    sock, err = send_query(round, i, target, left, held)
    if sock then
      return read_answer(round, i, target, sock, left, held)
    end
  end
  round:fail(i, err)
end

local function is_unavailable(err)
  return find(err, "^cosocket transport unavailable") ~= nil
end

-- The round over cosockets: every healthy sentinel's request sent, then their
-- answers read; the retries after them within the round's budget. Returns the
-- round, or nil, err when cosockets are unavailable.
local function cosocket_round(ask, master, asked, held)
  if not (ngx and ngx.socket) then
    return nil, "cosocket transport unavailable: not running inside nginx"
  end
  local round = new_round(ask, master)
  local socks = {}
  local retries = false
  for i = 1, #asked do
    round:add(asked[i].retry)
  end
  for i = 1, #asked do
    local target = asked[i]
    if target.retry then
      retries = true
    else
      local sock, err, reused = send_query(round, i, target, nil, held)
      if sock then
        socks[i] = sock
      elseif is_unavailable(err) then
        give_round(round)
        return nil, err
      elseif not reused then
        round:fail(i, err)
      end
    end
  end
  for i = 1, #asked do
    local target = asked[i]
    if not target.retry then
      local sock = socks[i]
      if sock then
        read_answer(round, i, target, sock, nil, held)
      elseif not round:failed(i) then
        exchange(round, i, target, nil, held)  -- its kept connection was closed
      end
    end
  end
  if retries then
    local started = milliseconds()
    local budget = round:retry_budget(started)
    for i = 1, #asked do
      local target = asked[i]
      if target.retry then
        local left = budget and budget - (milliseconds() - started)
        if left and left <= 0 then
          round:fail(i, "timeout")
        else
          exchange(round, i, target, left, held)
        end
      end
    end
  end
  return round
end

-- The lookup over cosockets, with the same results as core.ask_sentinels.
local function ask_over_cosocket(ask, master, asked, held)
  local round, err = cosocket_round(ask, master, asked, held)
  if not round then
    return "unavailable", err
  end
  for i = 1, #asked do
    asked[i].failure = round:failed(i)
  end
  local kind, a, b, from = round:choose()
  give_round(round)
  if kind ~= "failover" then
    return kind, a, b, from
  end
  -- a failover in progress: its leader tells which replica it promotes (after
  -- an o_down, the others trying until one is elected tell none)
  local leaders = from
  for n = 1, #leaders do
    local leader = leaders[n]
    local follow_up = new_round("promoted", master)
    follow_up:add(false)
    exchange(follow_up, 1, asked[leader], nil, held)
    local host, port, promoted = follow_up:promoted(1)
    give_round(follow_up)
    if host and (promoted or host ~= a or port ~= b) then
      return "master", host, port, leader, promoted
    end
  end
  return "master", a, b, leaders[1], false
end

-- Asks the sentinels; follows the answer with the newest configuration.
-- Returns host, port, promoted | replicas | nil, err.
-- `runner`: the lookup runner's own list and connections (see run_lookups).
local function ask_sentinels(self, ask, over_cosocket, runner)
  local asked = runner and runner.asked or self.asked
  local t = now()
  plan(self.order, asked, t)
  local kind, a, b, from, promoted
  if over_cosocket then
    kind, a, b, from, promoted = ask_over_cosocket(ask, self.master, asked, runner and runner.held)
    if kind == "unavailable" then
      return nil, a
    end
  else
    kind, a, b, from, promoted = core.ask_sentinels(asked, ask, self.master)
    if kind == nil then
      return nil, a
    end
  end
  for i = 1, #asked do
    local entry = asked[i]
    mark(entry, entry.failure, t)
  end
  if kind == "master" then
    self.answered = asked[from]
    return a, b, promoted
  elseif kind == "replicas" then
    self.answered = asked[from]
    return a
  elseif kind == "unknown" then
    return nil, "invalid master name"
  end
  return nil, "no hosts available: " .. tostring(a)
end

-- One lookup asked of the sentinels, counted. With the sentinels' events
-- followed (sentinel_watch), its answer is kept, tagged with the watch's
-- generation when it began: it routes the calls that come while the generation
-- stays (no event, every subscription confirmed). A failover's promoted replica
-- is never kept: each call asks until it is master.
local function ask_counted(self, ask, over_cosocket, runner)
  counted_sentinel.lookups = counted_sentinel.lookups + counts.step
  local watch = self.watch
  local generation = watch and sentinel_watch.generation(watch)
  local a, b, promoted = ask_sentinels(self, ask, over_cosocket, runner)
  if generation and a and not promoted then
    self.watched = { a = a, b = b, generation = generation }
  end
  return a, b, promoted
end

-- ---------------------------------------------------------------------------
-- Shared lookups (cosockets)
--
-- The concurrent cosocket calls of a worker share lookups (single flight), but a
-- call only takes the answer of a lookup that began after it arrived: one under
-- way may have been answered before a failover that the call must see. Per
-- storage and worker, a runner (a timer, as a pipeline lane's) runs the lookups
-- one after another on connections to the sentinels that it keeps between them:
-- a call joins the next flight, not begun yet, and the runner begins it as soon
-- as the one under way ended, for every call that joined it. A call then waits
-- for its flight (lookup) or parks on it (parked_call).

-- How long an idle runner keeps its sentinel connections before pooling them and exiting.
local IDLE_SECONDS = 0.1

-- The calls parked on a flight (see parked_call) go out once it ended: on the
-- master's pipeline when the lookup named the server they were built for,
-- else back to their callers unsent, which then follow the flight's answer
-- the usual way.
local function launch_parked(self, flight)
  local parked = flight.parked
  if not parked then
    return
  end
  local host, port, promoted = flight.r1, flight.r2, flight.r3
  local current = self.current
  local named = host and not promoted and current and current.host == host and current.port == port
                and not current.suspect and pipelines(current.view)
  local entries = flight.entries
  for i = 1, #parked do
    local call = parked[i]
    if named and entries[i] == current then
      launch(call, current.inst, current.view)
    else
      unpark(call)
    end
  end
end

local start_lookups

local function run_lookups(premature, self)
  local runner = { held = {}, asked = {} }
  local turns = turn.start()
  local ask = self.role == "master" and "master" or "replicas"
  while true do
    local flight = self.next
    if not flight then
      if premature or worker_exiting() then
        break
      end
      self.idle = true
      self.work:wait(IDLE_SECONDS)
      self.idle = false
      flight = self.next
      if not flight then
        break
      end
    end
    -- the rest of the event loop's turn first: the requests it reads join this
    -- flight (at 32 connections, about 15 calls per lookup instead of 9)
    turn.next(turns)
    self.next = nil  -- begun: a call arriving from now on joins the next one
    local ok, r1, r2, r3 = pcall(ask_counted, self, ask, true, runner)
    if not ok then
      r1, r2, r3 = nil, "sentinel lookup failed: " .. tostring(r1), nil
    end
    flight.r1, flight.r2, flight.r3, flight.ended = r1, r2, r3, true
    launch_parked(self, flight)
    if flight.waiting > 0 then
      flight.done:post(flight.waiting)
    end
  end
  for target, sock in pairs(runner.held) do
    if not sock:setkeepalive(target.keepalive_timeout, target.pool_size) then
      sock:close()
    end
  end
  self.looking = false
  if self.next then
    start_lookups(self)  -- a call joined while this runner was giving up
  end
end

start_lookups = function(self)
  if not self.work then
    self.work = new_semaphore()
  end
  if not timer_at(0, run_lookups, self) then
    return false
  end
  self.looking = true
  return true
end

-- The next flight (not begun), which the call joins; nil when no runner can start
-- (then the call looks up on its own).
local function next_flight(self)
  local flight = self.next
  if flight then
    return flight
  end
  flight = { done = new_semaphore(), waiting = 0 }
  self.next = flight
  if not self.looking then
    if not start_lookups(self) then
      self.next = nil
      return nil
    end
  elseif self.idle then
    self.idle = false
    self.work:post(1)
  end
  return flight
end

-- A flight that did not end in time (a runner that cannot go on): the next call
-- starts another runner rather than wait for it too.
local function forget(self, flight)
  if self.next == flight then
    self.next = nil
  end
  if not flight.ended then
    self.looking = false
  end
end

-- A lookup for a call: shared over cosockets (see above), the call's own
-- natively. Returns what ask_sentinels returns.
local function lookup(self, ask, over_cosocket)
  if not over_cosocket then
    return ask_counted(self, ask, false)
  end
  local flight = next_flight(self)
  if not flight then
    return ask_counted(self, ask, true)
  end
  flight.waiting = flight.waiting + 1
  if flight.done:wait(self.flight_wait) then
    return flight.r1, flight.r2, flight.r3
  end
  forget(self, flight)
  return ask_counted(self, ask, true)
end

-- ---------------------------------------------------------------------------
-- The call

-- A call parked on a lookup that did not end in time looks up on its own.
local ALONE = {}

-- A healthy replica of a lookup's answer, at random: host, port, or nil, err.
local function pick_replica(replicas)
  if #replicas == 0 then
    return nil, "no slaves available"
  end
  local pick = replicas[random(#replicas)]
  return pick.host, pick.port
end

-- The address an earlier lookup left that still routes calls: the one cached for
-- sentinel_cache_ttl, else sentinel_watch's answer while no sentinel published an
-- event. host, port; nil, err (role "slave": no replica in it); nothing when the
-- call is to be routed by a lookup.
local function kept_address(self)
  local cached = self.cached
  if cached and now() < cached.expires then
    return cached.host, cached.port
  end
  local watched = self.watched
  if watched and sentinel_watch.current(self.watch, watched.generation) then
    if self.role == "master" then
      return watched.a, watched.b
    end
    return pick_replica(watched.a)
  end
end

-- The server to use: host, port, promoted, or nil, err. `flight`: an ended
-- lookup that began after the call arrived (it parked there), whose answer
-- routes it, or ALONE.
local function resolve(self, over_cosocket, flight)
  local host, port = kept_address(self)
  if host or port then
    return host, port  -- (nil, err: no replica in the answer kept)
  end
  local promoted
  if self.role == "master" then
    if flight == ALONE then
      host, port, promoted = ask_counted(self, "master", over_cosocket)
    elseif flight then
      host, port, promoted = flight.r1, flight.r2, flight.r3
    else
      host, port, promoted = lookup(self, "master", over_cosocket)
    end
    if not host then
      return nil, port
    end
  else
    local replicas, err = lookup(self, "replicas", over_cosocket)
    if not replicas then
      return nil, err
    end
    host, port = pick_replica(replicas)
    if not host then
      return nil, port
    end
  end
  if self.cache_ttl > 0 and not promoted then
    self.cached = { host = host, port = port, expires = now() + self.cache_ttl }
  end
  return host, port, promoted
end

-- A single-node instance (and its cosocket view) serving host:port. A pool
-- generation makes its pool names new: connections pooled before never serve it.
local function new_server(self, host, port, generation)
  local inst = core.new(data_config(self, host, port))
  inst:set_metered(false)  -- its calls are parts of this storage's calls, counted by `call`
  if self.pool or generation then
    -- a custom pool is namespaced by role, endpoint and identity (the derived name)
    inst.pool = self.role .. "|" .. (self.pool and self.pool .. "|" or "")
                .. (generation and "gen=" .. generation .. "|" or "") .. inst:pool_name()
  end
  return { host = host, port = port, inst = inst, view = cosocket.view(inst, inst:fields()) }
end

-- The server for this call. The master's connections belong to the address the
-- sentinels named when they were opened: once they name another one, the old
-- address's pool is retired (native connections closed; cosocket ones are never
-- asked for again and idle out), so a demoted master never gets a pooled write,
-- and a new connection there runs the ROLE check.
local function server(self, host, port)
  if self.role ~= "master" then
    local address = host .. ":" .. port
    local entry = self.servers[address]
    if not entry then
      entry = new_server(self, host, port)
      self.servers[address] = entry
    end
    return entry
  end
  local current = self.current
  if current and current.port == port and current.host == host then
    return current
  end
  if current then
    core.retire_pool(current.inst:pool_name())
    counted_sentinel.master_changes = counted_sentinel.master_changes + counts.step
  end
  current = new_server(self, host, port, core.sentinel_generation())
  self.current = current
  return current
end

-- A lone PING to the server: true once it answered, or nil, err.
local function probe(entry, over_cosocket)
  local inst = entry.inst
  if not over_cosocket then
    return inst:probe()
  end
  local op = new_operation()  -- a rare path: after a timeout only
  local ok, err, stale = lone_round_trip(inst, entry.view, op, inst:load_probe(op))
  if not ok and stale then  -- a pooled connection the server had closed: once more
    ok, err = lone_round_trip(inst, entry.view, op, inst:load_probe(op))
  end
  op:trim()
  return ok, err
end

-- The server for this call, routed by a lookup: entry, promoted, or nil, err.
-- A server that timed out lately may be a stalled master: when it wakes it
-- answers what waited in its socket before the sentinels demote it, so a write
-- sent then is acknowledged and lost once it resyncs from the promoted replica.
-- It gets a lone PING first, and the call follows a lookup begun after the answer.
local function route(self, over_cosocket, flight)
  local host, port, promoted = resolve(self, over_cosocket, flight)
  if not host then
    return nil, port
  end
  local entry = server(self, host, port)
  if not entry.suspect then
    return entry, promoted
  end
  local ok, err = probe(entry, over_cosocket)
  -- (sentinel_cache_ttl, sentinel_watch) an address looked up before the answer
  self.cached, self.watched = nil, nil
  if not ok then
    return nil, err
  end
  entry.suspect = nil
  host, port, promoted = resolve(self, over_cosocket)
  if not host then
    return nil, port
  end
  return server(self, host, port), promoted
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

-- A cosocket call to a master already followed parks on the next lookup rather
-- than wait for it: its operation is built for that master now and goes out on
-- its pipeline as soon as the lookup names the same server (one wake-up for the
-- call, not one for the lookup and one for its reply). The call is still routed
-- by a lookup that began after it arrived. Returns the server and the call's
-- results; or nil and the ended flight, when it was not sent (another server was
-- named); or nothing, when it could not park.
local function parked_call(self, method, a, b, c, d, e, f, g, h, j)
  local entry = self.current
  if not entry or entry.suspect or self.role ~= "master" or not pipelines(entry.view) then
    return
  end
  if kept_address(self) then
    return  -- routed without a lookup (see resolve)
  end
  local flight = next_flight(self)
  if not flight then
    return
  end
  local call, err = park(entry.inst, entry.view, method, a, b, c, d, e, f, g, h, j)
  if not call then
    return entry, nil, err
  end
  local parked = flight.parked
  if not parked then
    parked = {}
    flight.parked, flight.entries = parked, {}
  end
  local n = #parked + 1
  parked[n], flight.entries[n] = call, entry
  local r1, r2 = await_parked(call, self.flight_wait)
  if r1 ~= false then
    return entry, r1, r2
  end
  if flight.ended then
    return nil, flight
  end
  forget(self, flight)
  return nil, ALONE  -- its runner did not end the lookup in time: the call looks up on its own
end

-- A checked call: routed by a lookup, retried once on a refusal that changed nothing.
local function routed_call(self, method, a, b, c, d, e, f, g, h, j)
  local over_cosocket = serves(self.transport_view)
  if over_cosocket and self.watching and not self.watch then
    self.watch = sentinel_watch.of(self.order)
  end
  for attempt = 1, 2 do
    local entry, promoted, r1, r2, flight
    if over_cosocket and attempt == 1 then
      entry, r1, r2 = parked_call(self, method, a, b, c, d, e, f, g, h, j)
      if not entry then
        flight = r1
      end
    end
    if not entry then
      entry, promoted = route(self, over_cosocket, flight)
      if not entry then
        return nil, promoted
      end
      if over_cosocket then
        r1, r2 = cosocket_call(entry.inst, entry.view, method, a, b, c, d, e, f, g, h, j)
      else
        local inst = entry.inst
        r1, r2 = inst[NATIVE[method]](inst, a, b, c, d, e, f, g, h, j)
      end
    end
    if r2 == nil then
      return r1  -- one value, as the single-node module returns
    end
    if r1 ~= nil then
      return r1, r2
    end
    local stale, retry, wrong_role = is_stale(r2)
    if stale then
      self.cached, self.watched = nil, nil
    end
    if r2 == "timeout" then
      entry.suspect = true
    end
    if wrong_role and promoted then
      -- the failover's leader picked it, it has not taken over yet: writing to the
      -- old master now could be acknowledged and then lost
      return nil, "failover in progress: the promoted replica is not master yet"
    end
    if wrong_role then
      counted_sentinel.role_mismatches = counted_sentinel.role_mismatches + counts.step
      -- the sentinel that named this server is behind the others: its answers
      -- lose ties from now on
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

local function call(self, method, a, b, c, d, e, f, g, h, j)
  -- bad arguments are refused before any sentinel is asked; the call is counted
  -- (core stats) from here, around its lookups and its data instance's call
  local started, invalid_err = self.checker:check_call(method, a, b, c, d, e, f, g, h, j)
  if not started then
    return nil, invalid_err
  end
  local r1, r2 = routed_call(self, method, a, b, c, d, e, f, g, h, j)
  record(method, started, r1, r2)
  if r2 == nil then
    return r1  -- one value, as the single-node module returns
  end
  return r1, r2
end

-- Private key of each storage table: the instance's state.
local STATE = {}

local methods = {}

for name, id in pairs({ set = SET, get = GET, delete = DELETE, read_metadata = READ_METADATA }) do
  -- named arguments rather than `...`: see the methods of resty.session.hiredis
  methods[name] = function(self, a, b, c, d, e, f, g, h, j)
    return call(self[STATE], id, a, b, c, d, e, f, g, h, j)
  end
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
  local watching = optional_boolean(conf, "sentinel_watch")
  if watching == nil then
    watching = true
  end
  local sentinel_username = optional_string(conf, "sentinel_username")
  local sentinel_password = optional_string(conf, "sentinel_password")
  local pool = optional_string(conf, "pool")
  if pool == "" then
    invalid("pool", "must not be empty")
  end
  local sentinel_ssl = optional_boolean(conf, "sentinel_ssl")
  local sentinel_ssl_verify = optional_boolean(conf, "sentinel_ssl_verify")
  local sentinel_server_name = optional_string(conf, "sentinel_server_name")
  local entries = read_sentinels(conf)

  -- the data fields are validated by the core, as for a single node
  local data_fields = {}
  for _, name in ipairs(DATA_FIELDS) do
    data_fields[name] = conf[name]
  end
  data_fields.role = role
  local inst = core.new(data_fields)
  local fields = inst:fields()
  fields.host, fields.port, fields.role = nil, nil, nil
  fields.master = master
  fields.role = role
  fields.sentinel_username = sentinel_username
  fields.sentinel_password = sentinel_password
  fields.sentinel_cache_ttl = cache_ttl
  fields.sentinel_watch = watching
  fields.pool = pool

  -- TLS to the sentinels: the data nodes' settings (as upstream passes its connection
  -- options to both), each overridable by its sentinel_ field
  local tls = {
    ssl = sentinel_ssl,
    ssl_verify = sentinel_ssl_verify,
    server_name = sentinel_server_name,
  }
  if tls.ssl == nil then tls.ssl = fields.ssl == true end
  if tls.ssl_verify == nil then tls.ssl_verify = fields.ssl_verify == true end
  if tls.server_name == nil then tls.server_name = fields.server_name end
  if tls.ssl then
    tls.ssl_trusted_certificate = fields.ssl_trusted_certificate
    tls.ssl_client_cert = fields.ssl_client_cert
    tls.ssl_client_priv_key = fields.ssl_client_priv_key
  end
  fields.sentinel_ssl = sentinel_ssl
  fields.sentinel_ssl_verify = sentinel_ssl_verify
  fields.sentinel_server_name = sentinel_server_name

  local order = {}
  for i, entry in ipairs(entries) do
    local username = entry.username or sentinel_username
    local password = entry.password or sentinel_password
    local sentinel_pool = core.sentinel_pool_name(entry.host, entry.port, username, password, pool,
                                                  tls.ssl and tls or nil)
    order[i] = {
      host = entry.host,
      port = entry.port,
      username = username,
      password = password,
      ssl = tls.ssl,
      ssl_verify = tls.ssl_verify,
      server_name = tls.server_name,  -- native: nil means the host
      tls_view = tls.ssl and {        -- cosockets (the CA: lua_ssl_trusted_certificate)
        server_name = tls.server_name or entry.host,
        ssl_verify = tls.ssl_verify,
        ssl_client_cert = tls.ssl_client_cert,
        ssl_client_priv_key = tls.ssl_client_priv_key,
      } or nil,
      ssl_trusted_certificate = tls.ssl_trusted_certificate,
      ssl_client_cert = tls.ssl_client_cert,
      ssl_client_priv_key = tls.ssl_client_priv_key,
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

  -- how long a call waits for a shared lookup (see lookup): twice what one
  -- sentinel's exchange may take (0: nginx's default of 60 s), and a second
  local function ms(v)
    v = tonumber(v) or 0
    return v > 0 and v or 60000
  end
  local flight_wait = (2 * (ms(fields.connect_timeout) + ms(fields.send_timeout) + ms(fields.read_timeout))
                       + 1000) / 1000

  return setmetatable({ [STATE] = {
    fields = fields,
    master = master,
    role = role,
    pool = pool,
    cache_ttl = cache_ttl,
    order = order,     -- per worker: ties go to the first; one that named a wrong role goes last
    asked = {},        -- the entries of order a call asks (reused)
    servers = {},      -- role "slave": "host:port" -> single-node instance and view
    current = nil,     -- role "master": the server followed, its pools of this generation
    cached = nil,      -- { host, port, expires } with sentinel_cache_ttl
    watching = watching and sentinel_watch ~= nil,
    watch = nil,       -- the sentinels' events followed (made by the first cosocket call)
    watched = nil,     -- { a, b, generation }: the answer kept while the watch's generation stays
    answered = nil,    -- the entry of order whose answer was followed last
    next = nil,        -- cosockets: the next shared lookup, not begun, joined by the calls arriving
    looking = false,   -- whether its runner runs (see run_lookups)
    idle = false,      -- and waits for work, on:
    work = nil,        -- its semaphore
    flight_wait = flight_wait,
    transport_view = { transport = fields.transport },
    checker = inst,    -- validates a call's arguments as the data instances load them
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
