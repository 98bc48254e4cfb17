-- The benchmark's figures: medians over repetitions, storage CPU (minus the no-op
-- handler), ratios to upstream, validity; written as CSV, a markdown table and the
-- chart's data file (bench/chart.gp draws it).
local _M = {}

-- Every implementation, in report order (a run may measure a subset: BENCH_IMPLS).
_M.IMPLS = { "up", "co", "cn", "na" }
_M.IMPL_NAMES = {
  up = "upstream resty.session.redis",
  co = "hiredis, cosocket",
  cn = "hiredis, cosocket, pipelining = false",
  na = "hiredis, native (blocking)",
}
_M.OP_NAMES = {
  get = "get",
  set = "set",
  set_meta = "set +old_key +2 meta",
  delete = "delete +meta",
  read_metadata = "read_metadata",
}

local function median(values)
  local v = {}
  for i, x in ipairs(values) do v[i] = x end
  table.sort(v)
  local n = #v
  if n == 0 then return nil end
  if n % 2 == 1 then return v[(n + 1) / 2] end
  return (v[n / 2] + v[n / 2 + 1]) / 2
end
_M.median = median

-- A row whose repetitions' throughputs differ by more than this share of their
-- median is flagged noisy (load from elsewhere during one of them).
_M.NOISY_SPREAD = 0.5

local function field(runs, name)
  local out = {}
  for i, r in ipairs(runs) do out[i] = r[name] end
  return out
end

local function sum(runs, name)
  local s = 0
  for _, r in ipairs(runs) do s = s + (r[name] or 0) end
  return s
end

-- Medians of one configuration's runs (each: rps, p50_ms, p99_ms, cpu_us, non2xx,
-- socket_errors, requests, note). Errors are summed: any error invalidates.
function _M.aggregate(runs)
  if not runs or #runs == 0 then return nil end
  local notes, seen = {}, {}
  for _, r in ipairs(runs) do
    if r.note and r.note ~= "" and not seen[r.note] then
      seen[r.note] = true
      notes[#notes + 1] = r.note
    end
  end
  local rps = field(runs, "rps")
  local lo, hi = math.min(unpack(rps)), math.max(unpack(rps))
  return {
    reps = #runs,
    rps = median(rps),
    rps_spread = (hi - lo) / median(rps),
    p50_ms = median(field(runs, "p50_ms")),
    p99_ms = median(field(runs, "p99_ms")),
    cpu_us = median(field(runs, "cpu_us")),
    redis_cmds = median(field(runs, "redis_cmds")),
    redis_conns = median(field(runs, "redis_conns")),
    redis_mix = runs[1].redis_mix,
    non2xx = sum(runs, "non2xx"),
    socket_errors = sum(runs, "socket_errors"),
    rps_reps = (table.concat(field(runs, "rps"), "|"):gsub("%.%d+", "")),
    note = table.concat(notes, "; "),
  }
end

local function ratio(a, b)
  if a and b and b > 0 then return a / b end
  return nil
end

-- Why a configuration's runs make their row invalid (any non-2xx response or socket
-- error, or a note such as a handler's first error), or nil.
local function invalid_reason(m)
  local why = {}
  if m.non2xx > 0 then why[#why + 1] = m.non2xx .. " non-2xx" end
  if m.socket_errors > 0 then why[#why + 1] = m.socket_errors .. " socket errors" end
  if m.note ~= "" then why[#why + 1] = m.note end
  return #why > 0 and table.concat(why, ", ") or nil
end

-- A row's results, `impls` from runs[key(impl)]: storage CPU = CPU minus the row's
-- no-op baseline (row.noop), and the reasons the row is invalid.
local function fill(row, impls, runs, key)
  for _, impl in ipairs(impls) do
    local m = _M.aggregate(runs[key(impl)])
    if m then
      m.storage_us = row.noop and m.cpu_us and row.noop.cpu_us and (m.cpu_us - row.noop.cpu_us) or nil
      row.impl[impl] = m
      local why = invalid_reason(m)
      if why then row.invalid[#row.invalid + 1] = impl .. ": " .. why end
    end
  end
end

-- `m`'s ratios to `base` (named `base_name` in the CSV's ratio_base).
local function compare(m, base, base_name)
  m.rps_ratio = ratio(m.rps, base.rps)
  m.storage_ratio = ratio(m.storage_us, base.storage_us)
  m.p50_ratio = ratio(m.p50_ms, base.p50_ms)
  m.p99_ratio = ratio(m.p99_ms, base.p99_ms)
  m.ratio_base = base_name
end

-- After fill: the baseline's errors invalidate the row too; noisy = the runs (the
-- baseline's, then `impls`') whose repetitions' throughputs spread too far.
local function finish(row, impls)
  local noop = row.noop
  if noop and (noop.non2xx > 0 or noop.socket_errors > 0) then
    row.invalid[#row.invalid + 1] = string.format("noop: %d non-2xx, %d socket errors", noop.non2xx,
                                                  noop.socket_errors)
  end
  row.valid = #row.invalid == 0
  row.noisy = {}
  if noop and noop.rps_spread > _M.NOISY_SPREAD then row.noisy[1] = "noop" end
  for _, name in ipairs(impls) do
    local m = row.impl[name]
    if m and m.rps_spread > _M.NOISY_SPREAD then row.noisy[#row.noisy + 1] = name end
  end
end

---
-- Rows of the HTTP benchmark, in plan order: one per (workers, op, conc) with a
-- result per implementation (nil when not run). `runs[key]` lists the runs of
-- key = workers .. "/" .. op .. "/" .. conc .. "/" .. impl (impl "noop": the no-op handler
-- measured on that row, its baseline).
function _M.rows(plan, runs)
  local rows = {}
  for _, w in ipairs(plan.workers) do
    for _, op in ipairs(plan.ops) do
      for _, c in ipairs(plan.conc) do
        local base = w .. "/" .. op .. "/" .. c .. "/"
        local row = { workers = w, op = op, conc = c, impl = {}, invalid = {},
                      noop = _M.aggregate(runs[base .. "noop"]) }
        fill(row, _M.IMPLS, runs, function(impl) return base .. impl end)
        local up = row.impl.up
        if up then
          for _, impl in ipairs(_M.IMPLS) do
            if row.impl[impl] then compare(row.impl[impl], up, "up") end
          end
        end
        -- what auto-pipelining gains: co (on, the default) against cn (off)
        local co, cn = row.impl.co, row.impl.cn
        if co and cn then
          row.pipelining = { rps_ratio = ratio(co.rps, cn.rps), storage_ratio = ratio(co.storage_us, cn.storage_us),
                             p99_ratio = ratio(co.p99_ms, cn.p99_ms) }
        end
        finish(row, _M.IMPLS)
        rows[#rows + 1] = row
      end
    end
  end
  -- the no-op handler per workers and concurrency, over every row's runs
  rows.noop = {}
  for _, w in ipairs(plan.workers) do
    for _, c in ipairs(plan.conc) do
      local all = {}
      for _, op in ipairs(plan.ops) do
        for _, r in ipairs(runs[w .. "/" .. op .. "/" .. c .. "/noop"] or {}) do all[#all + 1] = r end
      end
      local agg = _M.aggregate(all)
      if agg then rows.noop[#rows.noop + 1] = { workers = w, conc = c, m = agg } end
    end
  end
  return rows
end

---
-- The rows of a table of their own (the Redis Cluster's, the durability rows...): one per
-- (workers, op, conc) of `side` ({ name, ops, conc = { ... }, workers = { ... }, impls,
-- bases }), from runs["<name>/<workers>/<op>/<conc>/<impl>"], with the no-op handler
-- measured in the same passes with the same workers and connections
-- (runs["<name>/<workers>/noop/<conc>/noop"]) as every row's baseline; bases[impl] = the
-- implementation impl's ratios are to; validity as for the other rows.
function _M.side_rows(side, runs)
  local bases = side.bases
  local rows = { name = side.name, impls = side.impls, bases = bases, reference = side.reference }
  for _, w in ipairs(side.workers) do
    local prefix = side.name .. "/" .. w .. "/"
    local noops = {}
    for _, c in ipairs(side.conc) do noops[c] = _M.aggregate(runs[prefix .. "noop/" .. c .. "/noop"]) end
    for _, op in ipairs(side.ops) do
      for _, c in ipairs(side.conc) do
        local base = prefix .. op .. "/" .. c .. "/"
        local row = { kind = side.name, workers = w, op = op, conc = c, impl = {}, invalid = {},
                      noop = noops[c], impls = side.impls }
        fill(row, side.impls, runs, function(impl) return base .. impl end)
        for _, impl in ipairs(side.impls) do
          local m, b = row.impl[impl], row.impl[bases[impl] or ""]
          if m and b then compare(m, b, bases[impl]) end
        end
        -- co's storage CPU over the single-node reference's, both in the same passes
        local co, ref = row.impl.co, side.reference and row.impl[side.reference]
        if co and ref then
          row.reference_ratio = ratio(co.storage_us, ref.storage_us)
          row.reference_extra = co.storage_us and ref.storage_us and co.storage_us - ref.storage_us
        end
        finish(row, side.impls)
        rows[#rows + 1] = row
      end
    end
  end
  return rows
end

local function num(x, fmt)
  if x == nil then return "" end
  return string.format(fmt or "%.3f", x)
end

local function csv_field(s)
  s = tostring(s or "")
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local CSV_HEADER = "kind,workers,op,conc,impl,reps,rps,p50_ms,p99_ms,cpu_us_per_req,"
  .. "storage_cpu_us_per_req,rps_ratio,storage_cpu_ratio,p50_ratio,ratio_base,non2xx,socket_errors,"
  .. "valid,note,rps_per_rep,rps_spread,redis_cmds_per_req,redis_conns_per_req,redis_cmd_mix,"
  .. "pipelining_rps_ratio,pipelining_storage_cpu_ratio"

local function csv_line(t)
  local cols = {
    t.kind, t.workers or "", t.op, t.conc or "", t.impl, t.reps or "",
    num(t.rps, "%.0f"), num(t.p50_ms), num(t.p99_ms), num(t.cpu_us, "%.1f"), num(t.storage_us, "%.1f"),
    num(t.rps_ratio), num(t.storage_ratio), num(t.p50_ratio), t.ratio_base or "",
    t.non2xx or "", t.socket_errors or "", t.valid == nil and "" or (t.valid and "yes" or "no"),
    t.note or "", t.rps_reps or "", num(t.rps_spread, "%.2f"), num(t.redis_cmds), num(t.redis_conns), t.redis_mix or "",
    num(t.pipelining_rps_ratio), num(t.pipelining_storage_ratio),
  }
  for i, v in ipairs(cols) do cols[i] = csv_field(v) end
  return table.concat(cols, ",")
end

---
-- The CSV: per row the no-op handler and each implementation, then the rows of the
-- tables of their own (`sides`, from side_rows: kind "cluster" / "sentinel", impl up =
-- upstream's storage for that topology; kind "durability", ratio_base the implementation
-- without WAIT; kind "stats"), then
-- the limits (redis-benchmark, the plain-LuaJIT native loop).
function _M.csv(rows, limits, sides)
  local lines = { CSV_HEADER }
  local all = {}
  for _, row in ipairs(rows) do all[#all + 1] = row end
  for _, side in ipairs(sides or {}) do
    for _, row in ipairs(side) do all[#all + 1] = row end
  end
  for _, row in ipairs(all) do
    local n = row.noop
    local kind = row.kind or "http"
    if n then
      lines[#lines + 1] = csv_line({ kind = kind, workers = row.workers, op = row.op, conc = row.conc,
        impl = "noop", reps = n.reps, rps = n.rps, p50_ms = n.p50_ms, p99_ms = n.p99_ms, cpu_us = n.cpu_us,
        non2xx = n.non2xx, socket_errors = n.socket_errors,
        valid = n.non2xx == 0 and n.socket_errors == 0, note = n.note, rps_reps = n.rps_reps,
        rps_spread = n.rps_spread })
    end
    for _, impl in ipairs(row.impls or _M.IMPLS) do
      local m = row.impl[impl]
      if m then
        lines[#lines + 1] = csv_line({ kind = kind, workers = row.workers, op = row.op, conc = row.conc,
          impl = impl, reps = m.reps, rps = m.rps, p50_ms = m.p50_ms, p99_ms = m.p99_ms, cpu_us = m.cpu_us,
          storage_us = m.storage_us, rps_ratio = m.rps_ratio, storage_ratio = m.storage_ratio,
          p50_ratio = m.p50_ratio, ratio_base = m.rps_ratio and m.ratio_base or "", non2xx = m.non2xx,
          socket_errors = m.socket_errors, valid = row.valid, note = m.note, rps_reps = m.rps_reps,
          rps_spread = m.rps_spread,
          redis_cmds = m.redis_cmds, redis_conns = m.redis_conns, redis_mix = m.redis_mix,
          pipelining_rps_ratio = impl == "co" and row.pipelining and row.pipelining.rps_ratio or nil,
          pipelining_storage_ratio = impl == "co" and row.pipelining and row.pipelining.storage_ratio or nil })
      end
    end
  end
  for _, l in ipairs(limits) do
    lines[#lines + 1] = csv_line(l)
  end
  return table.concat(lines, "\n") .. "\n"
end

local function thousands(x)
  if not x then return "-" end
  local s = string.format("%.0f", x)
  return (s:reverse():gsub("(%d%d%d)(%d)", "%1,%2"):reverse())
end

local function x(r)
  return r and string.format("%.2fx", r) or "-"
end

-- "a / b / c / d": one figure per implementation, "-" where absent.
local function per_impl(row, name, fmt)
  local parts = {}
  for _, impl in ipairs(_M.IMPLS) do
    local m = row.impl[impl]
    parts[#parts + 1] = m and m[name] and string.format(fmt, m[name]) or "-"
  end
  return table.concat(parts, " / ")
end

local IMPL_TEXT = {
  up = "up = upstream `resty.session.redis` (%s)",
  co = "co = this module through cosockets (default transport choice, auto-pipelining on as by default)",
  cn = "cn = the same with `pipelining = false` (a connection per call, as upstream)",
  na = "na = this module with `transport = \"native\"` (blocks the worker)",
}

-- "yes", or why not; then the noisy runs.
local function validity(row)
  return (row.valid and "yes" or ("**INVALID** " .. table.concat(row.invalid, "; ")))
         .. (#row.noisy > 0 and (" (noisy: " .. table.concat(row.noisy, ", ") .. ")") or "")
end

local function cpu_text(m)
  return m and m.cpu_us and string.format("%.1f", m.cpu_us) or "-"
end

-- A table of another topology against upstream's storage for it: `intro`, then per row
-- each of `cimpls` (up, co, na) with its ratios to up.
local function topology_table(add, intro, cimpls, crows)
  add("")
  add(intro)
  add("")
  local names = table.concat(cimpls, " / ")
  -- with a single-node reference (sc): co's storage CPU over its own, in a column of its own
  local ref = crows.reference
  add("| workers | op | conns | rps " .. names .. " | p50 " .. names .. " | p99 " .. names .. " | CPU µs/req "
      .. names .. " | no-op CPU | storage µs/req " .. names .. (ref and (" | storage co/" .. ref) or "")
      .. " | valid |")
  add("|---|---|---|---|---|---|---|---|---|---|" .. (ref and "---|" or ""))
  for _, row in ipairs(crows) do
    local up = row.impl.up
    local function fig(mm, text, r)
      if not mm then return "-" end
      return (r and mm ~= up) and (text .. " (" .. x(r) .. ")") or text
    end
    local rps_cols, st_cols, p50, p99, cpu = {}, {}, {}, {}, {}
    for i, impl in ipairs(cimpls) do
      local mm = row.impl[impl]
      rps_cols[i] = fig(mm, mm and thousands(mm.rps), mm and mm.rps_ratio)
      st_cols[i] = (mm and mm.storage_us) and fig(mm, string.format("%.1f", mm.storage_us), mm.storage_ratio) or "-"
      p50[i] = mm and string.format("%.2f", mm.p50_ms) or "-"
      p99[i] = mm and string.format("%.2f", mm.p99_ms) or "-"
      cpu[i] = cpu_text(mm)
    end
    add(string.format("| %d | %s | %d | %s | %s | %s | %s | %s | %s |%s %s |", row.workers,
      _M.OP_NAMES[row.op] or row.op, row.conc, table.concat(rps_cols, " / "), table.concat(p50, " / "),
      table.concat(p99, " / "), table.concat(cpu, " / "), cpu_text(row.noop), table.concat(st_cols, " / "),
      ref and (" " .. x(row.reference_ratio) .. (row.reference_extra and string.format(" (%+.1f µs)",
        row.reference_extra) or "") .. " |") or "", validity(row)))
  end
end

-- The Redis Cluster table (`info.cluster` = { upstream, impls }).
local function cluster_table(add, info, crows)
  topology_table(add, "Redis Cluster (3 masters + 3 replicas on this machine, `requirepass` on every node): "
      .. "up = upstream `resty.session.redis.cluster` (" .. info.cluster.upstream .. "), "
      .. "co = `resty.session.hiredis.cluster` through cosockets (default transport choice), "
      .. "na = the same with `transport = \"native\"`; the same wrk settings and repetitions, each "
      .. "repetition's cluster rows right after its single-node rows with as many workers; storage CPU = CPU "
      .. "minus the no-op handler's measured in the same pass with the same workers and connections. A `set` "
      .. "with 2 metadata pairs touches 3 slots (session key, web and api metadata keys), mostly on different "
      .. "masters. sc = the single-node rows' co storage on the single Redis, run on the same rows of the same "
      .. "passes: storage co/sc = the cluster's storage CPU over one node's, with the same no-op baseline (and "
      .. "in brackets their difference per request).",
      info.cluster.impls, crows)
end

-- The Redis Sentinel table (`info.sentinel` = { upstream, impls }).
local function sentinel_table(add, info, srows)
  topology_table(add, "Redis Sentinel (a master, a replica and 3 sentinels on this machine, `requirepass` on "
      .. "the servers and on the sentinels): up = upstream `resty.session.redis.sentinel` ("
      .. info.sentinel.upstream .. "), co = `resty.session.hiredis` with `sentinels` (its sentinel storage) "
      .. "through cosockets (default transport choice: it follows the sentinels' events, `sentinel_watch`, and "
      .. "looks the master up after each event only), na = the same with `transport = \"native\"` (a lookup "
      .. "per call); no `sentinel_cache_ttl`, the same configuration and 1 s timeouts for all three. "
      .. "The same wrk settings and repetitions, each repetition's sentinel rows after its single-node and "
      .. "cluster rows with as many workers, the master's sessions written before each pass; storage CPU = CPU "
      .. "minus the no-op handler's measured in the same pass with the same workers and connections; a run "
      .. "after which the sentinels name another master invalidates its row. sc = the single-node rows' co "
      .. "storage on the single Redis, run on the same rows of the same passes: storage co/sc = the sentinel "
      .. "storage's CPU over one node's, with the same no-op baseline (and in brackets their difference per "
      .. "request).", info.sentinel.impls, srows)
end

-- A table of implementations against their bases (`rows.bases`: cw/co, nw/na...): per
-- row every implementation's figures, then the ratios of each to its base.
local function ratio_table(add, rows)
  add("")
  local impls, pairs_ = rows.impls, {}
  for _, impl in ipairs(impls) do
    local base = rows.bases[impl]
    if base and base ~= impl then pairs_[#pairs_ + 1] = { impl, base } end
  end
  local names, ratio_names = table.concat(impls, " / "), {}
  for i, p in ipairs(pairs_) do ratio_names[i] = p[1] .. "/" .. p[2] end
  ratio_names = table.concat(ratio_names, ", ")
  add("| workers | op | conns | rps " .. names .. " | throughput " .. ratio_names .. " | p50 " .. names .. " | p50 "
      .. ratio_names .. " | p99 " .. names .. " | p99 " .. ratio_names .. " | CPU µs/req " .. names
      .. " | no-op CPU | storage µs/req " .. names .. " | storage CPU " .. ratio_names .. " | valid |")
  add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for _, row in ipairs(rows) do
    local function figures(name, fmt)
      local out = {}
      for i, impl in ipairs(impls) do
        local m = row.impl[impl]
        out[i] = m and m[name] and (fmt and string.format(fmt, m[name]) or thousands(m[name])) or "-"
      end
      return table.concat(out, " / ")
    end
    local function ratios(name)
      local out = {}
      for i, p in ipairs(pairs_) do
        local m = row.impl[p[1]]
        out[i] = x(m and m[name])
      end
      return table.concat(out, ", ")
    end
    add(string.format("| %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", row.workers,
      _M.OP_NAMES[row.op] or row.op, row.conc, figures("rps"), ratios("rps_ratio"), figures("p50_ms", "%.2f"),
      ratios("p50_ratio"), figures("p99_ms", "%.2f"), ratios("p99_ratio"), figures("cpu_us", "%.1f"),
      cpu_text(row.noop), figures("storage_us", "%.1f"), ratios("storage_ratio"), validity(row)))
  end
end

-- The durability table (`info.durability` = { settings }).
local function durability_table(add, info, drows)
  add("")
  add("Durable writes: cw and nw = co and na as above with `" .. info.durability.settings .. "`, so each "
      .. "write ends with `WAIT` in the same round trip. For these rows only a replica (a throwaway "
      .. "`redis-server --replicaof` on loopback, attached before the rows of each repetition and stopped "
      .. "after them) follows the single Redis, and co and na run with it too: the ratios (cw/co, nw/na) are "
      .. "what waiting for it costs, and the other tables measure a master without a replica (the "
      .. "replication work is redis-server's, not the nginx worker's). The same wrk settings and repetitions, "
      .. "each repetition's durability rows after its other rows (co, cw, na, nw; every other repetition in "
      .. "reverse order); storage CPU = CPU minus the no-op "
      .. "handler's measured in the same pass at the same connections. Every cw / nw request must have sent "
      .. "one `WAIT` and co / na none (give or take the requests in flight when a run ends), and a write the "
      .. "replica did not acknowledge in time is an error (`write not durable`): either invalidates the row.")
  ratio_table(add, drows)
end

-- The statistics table: what counting (stats()) costs.
local function stats_table(add, _, srows)
  add("")
  add("Statistics: co and na as above, counting on (the default); cq and nq the same calls with counting "
      .. "off (`stats_enabled(false)`). The ratios co/cq and na/nq are what `stats()` costs per call. The same "
      .. "wrk settings and repetitions, each repetition's statistics rows after its other rows, interleaved "
      .. "(cq, co, nq, na; every other repetition in reverse order); "
      .. "storage CPU = CPU minus the no-op handler's measured in the same pass at the same connections.")
  ratio_table(add, srows)
end

local SIDE_TABLES = { cluster = cluster_table, sentinel = sentinel_table, durability = durability_table,
                      stats = stats_table }
-- how the closing count names them
local SIDE_NAMES = { cluster = "Redis Cluster", sentinel = "Redis Sentinel", durability = "durability",
                     stats = "statistics" }

---
-- The markdown report: machine, settings, the HTTP table, what pipelining gains, the
-- tables of their own (`sides`, optional, from side_rows: the Redis Cluster's with
-- `info.cluster`, the Redis Sentinel's with `info.sentinel`, the durability rows' with
-- `info.durability`), the limits, the native
-- loop. `info.impls` = the implementations measured (columns of the others show "-").
function _M.markdown(info, rows, limits, sides)
  local out = {}
  local function add(s) out[#out + 1] = s end
  local m = {}
  for _, pair in ipairs(info.machine) do m[#m + 1] = pair[1] .. " " .. pair[2] end
  add("Machine: " .. table.concat(m, ", ") .. ".")
  add("")
  add("Run: " .. info.settings .. ".")
  add("")
  local measured = {}
  for _, impl in ipairs(info.impls or _M.IMPLS) do
    measured[#measured + 1] = string.format(IMPL_TEXT[impl], info.upstream)
  end
  add(table.concat(measured, ", ") .. ". "
      .. "Medians of the repetitions; latencies in ms; CPU = the nginx workers' utime+stime per request; "
      .. "storage CPU = CPU minus the no-op handler's, measured on the same row right before; "
      .. "(x) = ratio to upstream; Redis conns/req = connections Redis accepted per request (pool misses; "
      .. "the CSV has Redis commands per request too); valid = no non-2xx response and no socket error "
      .. "in any run; noisy = the repetitions' throughputs of the named runs differ by more than "
      .. string.format("%d%%", _M.NOISY_SPREAD * 100) .. " of their median (load from elsewhere); "
      .. "- = not measured.")
  add("")
  if #rows > 0 then   -- none on a cluster-only run
    local names = table.concat(_M.IMPLS, " / ")
    add("| workers | op | conns | rps up | rps co | rps cn | rps na | p50 " .. names .. " | p99 " .. names
        .. " | CPU µs/req " .. names .. " | no-op CPU | storage µs/req up | storage co | storage cn | storage na "
        .. "| Redis conns/req " .. names .. " | valid |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for _, row in ipairs(rows) do
      local up = row.impl.up
      -- a figure, with its ratio to upstream in parentheses (not on upstream's own column)
      local function with_ratio(text, mm, r)
        return (r and mm ~= up) and (text .. " (" .. x(r) .. ")") or text
      end
      local function rps(mm) return mm and with_ratio(thousands(mm.rps), mm, mm.rps_ratio) or "-" end
      local function st(mm)
        if not mm or not mm.storage_us then return "-" end
        return with_ratio(string.format("%.1f", mm.storage_us), mm, mm.storage_ratio)
      end
      local rps_cols, st_cols = {}, {}
      for i, impl in ipairs(_M.IMPLS) do
        rps_cols[i] = rps(row.impl[impl])
        st_cols[i] = st(row.impl[impl])
      end
      add(string.format("| %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |",
        row.workers, _M.OP_NAMES[row.op] or row.op, row.conc, table.concat(rps_cols, " | "),
        per_impl(row, "p50_ms", "%.2f"), per_impl(row, "p99_ms", "%.2f"), per_impl(row, "cpu_us", "%.1f"),
        cpu_text(row.noop), table.concat(st_cols, " | "), per_impl(row, "redis_conns", "%.2f"), validity(row)))
    end
  end
  local gains = {}
  for _, row in ipairs(rows) do
    if row.pipelining then gains[#gains + 1] = row end
  end
  if #gains > 0 then
    add("")
    add("What auto-pipelining gains: co (`pipelining` on, the default) against cn (`pipelining = false`) "
        .. "on the same rows; throughput above 1.00x and storage CPU below 1.00x are gains. cn runs only "
        .. "on rows with more than one connection: with one, no worker ever has two calls in flight, so "
        .. "co takes cn's path (a pooled connection per call).")
    add("")
    add("| workers | op | conns | rps co / cn | throughput co/cn | storage µs/req co / cn | storage CPU co/cn "
        .. "| p99 co / cn | Redis conns/req co / cn | valid |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for _, row in ipairs(gains) do
      local co, cn = row.impl.co, row.impl.cn
      local function pair(name, fmt)
        return string.format(fmt, co[name] or 0 / 0) .. " / " .. string.format(fmt, cn[name] or 0 / 0)
      end
      add(string.format("| %d | %s | %d | %s / %s | %s | %s | %s | %s | %s | %s |", row.workers,
        _M.OP_NAMES[row.op] or row.op, row.conc, thousands(co.rps), thousands(cn.rps), x(row.pipelining.rps_ratio),
        co.storage_us and cn.storage_us and pair("storage_us", "%.1f") or "-", x(row.pipelining.storage_ratio),
        pair("p99_ms", "%.2f"), pair("redis_conns", "%.2f"), row.valid and "yes" or "**INVALID**"))
    end
  end
  for _, side in ipairs(sides or {}) do
    if #side > 0 then SIDE_TABLES[side.name](add, info, side) end
  end
  if #limits > 0 then
    add("")
    add("Limits: the no-op Lua handler (same nginx, same wrk settings) and `redis-benchmark` "
        .. "(512-byte values, its own key) for the raw Redis round trip.")
    add("")
    add("| what | workers | conns | rps | p50 ms | p99 ms | CPU µs/req |")
    add("|---|---|---|---|---|---|---|")
    for _, entry in ipairs(rows.noop or {}) do
      local n = entry.m
      local bad = (n.non2xx > 0 or n.socket_errors > 0) and " **INVALID**" or ""
      add(string.format("| no-op handler (median of %d runs)%s | %d | %d | %s | %.2f | %.2f | %.1f |",
        n.reps, bad, entry.workers, entry.conc, thousands(n.rps), n.p50_ms, n.p99_ms, n.cpu_us))
    end
    for _, l in ipairs(limits) do
      if l.kind == "redis-benchmark" then
        add(string.format("| redis-benchmark %s | - | %d | %s | %.3f | %.3f | - |", l.op, l.conc,
          thousands(l.rps), l.p50_ms, l.p99_ms))
      end
    end
    add("")
    add("Native transport, plain LuaJIT loop (one connection, `bench/native_bench.lua`) against "
        .. "`redis-benchmark -c 1` for the same command:")
    add("")
    add("| command | native loop ops/s | redis-benchmark -c 1 ops/s | ratio |")
    add("|---|---|---|---|")
    for _, l in ipairs(limits) do
      if l.kind == "native-loop" then
        add(string.format("| %s | %s | %s | %s |", l.op, thousands(l.rps), thousands(l.base_rps), x(l.rps_ratio)))
      end
    end
  end
  local invalid, total = 0, #rows
  for _, row in ipairs(rows) do if not row.valid then invalid = invalid + 1 end end
  local included = {}
  for _, side in ipairs(sides or {}) do
    for _, row in ipairs(side) do
      total = total + 1
      if not row.valid then invalid = invalid + 1 end
    end
    if #side > 0 then included[#included + 1] = SIDE_NAMES[side.name] end
  end
  add("")
  -- "a", "a and b", "a, b and c"
  local last_included = table.remove(included)
  local names = #included > 0 and (table.concat(included, ", ") .. " and " .. last_included) or last_included
  add(string.format("%d of %d rows invalid%s.", invalid, total, names and (" (" .. names .. " rows included)") or ""))
  return table.concat(out, "\n") .. "\n"
end

---
-- The chart's data: one line per row, "label rps_up rps_co rps_cn rps_na storage_up storage_co
-- storage_cn storage_na" ("-" where absent; gnuplot skips it).
function _M.chart_data(rows)
  local out = { "# label rps_up rps_co rps_cn rps_na storage_up storage_co storage_cn storage_na" }
  for _, row in ipairs(rows) do
    local cols = { string.format('"w%d %s c%d"', row.workers, row.op, row.conc) }
    for _, name in ipairs({ "rps", "storage_us" }) do
      for _, impl in ipairs(_M.IMPLS) do
        local m = row.impl[impl]
        cols[#cols + 1] = m and m[name] and string.format("%.2f", m[name]) or "-"
      end
    end
    out[#out + 1] = table.concat(cols, " ")
  end
  return table.concat(out, "\n") .. "\n"
end

return _M
