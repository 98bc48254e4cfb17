---
-- Exports the statistics of resty.session.hiredis (`hiredis.stats()`) to Prometheus
-- through nginx-lua-prometheus (`luarocks install nginx-lua-prometheus`), added up over
-- every nginx worker. An example to copy next to your configuration (see
-- examples/metrics.conf); it is not part of the installed rock.
--
--   lua_shared_dict prometheus_metrics 10m;
--   init_worker_by_lua_block { require("metrics_exporter").init() }
--   location = /metrics { content_by_lua_block { require("metrics_exporter").collect() } }
--
-- How the workers' numbers meet: stats() counts per worker. Each worker remembers the
-- stats() it pushed last and pushes the differences since then: from a timer every
-- `interval` seconds, and right before it serves a scrape (so the scraping worker's
-- own numbers are current). The counters and the gauge go through the library (its
-- per-worker counters reach the shared dict at its own `sync_interval`, the same
-- second by default); the latency histogram is added straight into the same shared
-- dict. Another worker's calls therefore show within about two intervals.
--
-- Why the histogram is not one of the library's: stats() hands out latencies already
-- bucketed (a count per bucket and a sum), while the library's histogram only records
-- one observed value at a time (`observe`, which adds that value to `_sum` and one to
-- each bucket at or above it), and its counters refuse an `le` label. So this module
-- keeps the per-bucket counts and the sum in the shared dict (with `incr`, atomic
-- across workers) and writes that one family itself, after the library's output:
-- cumulative `_bucket` samples in seconds up to `le="+Inf"`, `_sum`, `_count`.
local hiredis = require "resty.session.hiredis"
local prometheus_lib = require "prometheus"

local ngx = ngx
local pairs, ipairs, pcall = pairs, ipairs, pcall
local concat, sort = table.concat, table.sort
local format = string.format
local max = math.max

local _M = { _VERSION = "0.1.0" }

local NAME = "resty_session_hiredis_"
local HISTOGRAM = NAME .. "call_duration_seconds"
-- Keys of this module's own entries in the shared dict: "#" starts no metric name,
-- so they never meet the library's keys.
local KEY = "#resty_session_hiredis#"

-- The counters without labels: stats() group, field, help.
local COUNTERS = {
    { "connections", "opened", "New connections to Redis (the pool had none)." },
    { "connections", "reused", "Pooled connections reused." },
    { "connections", "failed", "Connections that failed to open (connect, TLS, AUTH/SELECT/HELLO)." },
    { "pipeline", "batches", "Writes of the cosocket auto-pipeline, each with one or more concurrent calls." },
    { "pipeline", "calls", "Calls sent by the cosocket auto-pipeline (divided by batches: the mean batch)." },
    { "pipeline", "lingers", "Auto-pipeline writes held for one more poll of the event loop, for the calls it reads." },
    { "cluster", "moved", "Redis Cluster MOVED redirections followed." },
    { "cluster", "ask", "Redis Cluster ASK redirections followed." },
    { "cluster", "retries", "Redis Cluster calls run again (redirection, TRYAGAIN, CLUSTERDOWN, node failure)." },
    { "cluster", "refreshes", "Redis Cluster slot maps loaded, the first one included." },
    { "sentinel", "lookups", "Master or replica lookups asked of the sentinels." },
    { "sentinel", "role_mismatches", "Servers refused for answering another role than the sentinels said." },
    { "sentinel", "master_changes", "Times a storage's master moved to another address." },
    { "sentinel", "events", "Events the sentinels published to the worker's subscriptions." },
    { "sentinel", "watch_failures", "Subscriptions to a sentinel lost or refused." },
}

local prom, dict, stats
local series = {}     -- { read = function(stats) -> number, emit = function(delta) }
local last = {}       -- series[i]'s value at the last push
local ops, le = {}, {}  -- op names (sorted); the histogram's le values, "+Inf" last
local max_calls_gauge, max_calls_key
local subscriptions_gauge, subscriptions_key

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    sort(keys)
    return keys
end

local function add_series(read, emit)
    series[#series + 1] = { read = read, emit = emit }
end

local function counter_series(metric, label, read)
    local labels = label and { label } or nil
    add_series(read, function(delta) metric:inc(delta, labels) end)
end

local function bucket_key(op, i)
    return KEY .. op .. "|" .. i
end

local function sum_key(op)
    return KEY .. op .. "|sum_ms"
end

local function dict_series(key, read)
    add_series(read, function(delta)
        local _, err, forcible = dict:incr(key, delta, 0)
        if err or forcible then
            -- counted in the library's nginx_metric_errors_total too
            prom:log_error("resty.session.hiredis metrics: adding to ", key, ": ",
                           err or "the shared dict is full, entries were evicted")
        end
    end)
end

local function register(first)
    local calls = prom:counter(NAME .. "calls_total", "Storage calls, failed ones included.", { "op" })
    local errors = prom:counter(NAME .. "errors_total", "Storage calls that returned nil, err.", { "op" })
    for _, op in ipairs(ops) do
        counter_series(calls, op, function(s) return s.ops[op].calls end)
        counter_series(errors, op, function(s) return s.ops[op].errors end)
        for i = 1, #le do
            dict_series(bucket_key(op, i), function(s) return s.ops[op].latency.counts[i] end)
        end
        dict_series(sum_key(op), function(s) return s.ops[op].latency.sum_ms end)
    end

    local classes = prom:counter(NAME .. "errors_by_class_total",
                                 "Failed storage calls by the class of their error.", { "class" })
    for _, class in ipairs(sorted_keys(first.errors)) do
        counter_series(classes, class, function(s) return s.errors[class] end)
    end

    for _, c in ipairs(COUNTERS) do
        local group, field = c[1], c[2]
        local metric = prom:counter(NAME .. group .. "_" .. field .. "_total", c[3])
        counter_series(metric, nil, function(s) return s[group][field] end)
    end

    max_calls_gauge = prom:gauge(NAME .. "pipeline_max_calls",
                                 "Most calls one auto-pipeline write carried, in any worker, since nginx started.")
    max_calls_key = KEY .. "max_calls|"
    subscriptions_gauge = prom:gauge(NAME .. "sentinel_subscriptions",
                                     "Subscriptions to the sentinels' events confirmed now, all workers.")
    subscriptions_key = KEY .. "subscriptions|"
end

-- The values every worker keeps in the dict under `prefix` .. its id, folded by
-- `combine` from 0.
local function across_workers(prefix, combine)
    local acc = 0
    for id = 0, ngx.worker.count() - 1 do
        acc = combine(acc, dict:get(prefix .. id) or 0)
    end
    return acc
end

local function add(a, b)
    return a + b
end

-- Each worker keeps its own largest batch in the dict; the gauge is the largest of them
-- (a read-then-set of one shared value would lose a race between two workers).
local function push_max_calls(s)
    local own = max_calls_key .. ngx.worker.id()
    local mine = s.pipeline.max_calls
    if mine > (dict:get(own) or 0) then
        dict:set(own, mine)
    end
    max_calls_gauge:set(across_workers(max_calls_key, max))
end

-- Each worker keeps its own count in the dict; the gauge is their sum.
local function push_subscriptions(s)
    dict:set(subscriptions_key .. ngx.worker.id(), s.sentinel.subscriptions)
    subscriptions_gauge:set(across_workers(subscriptions_key, add))
end

---
-- Adds what this worker counted since its last push. A counter lower than at the last
-- push means stats() was reset in between (`stats_reset()`): then every value is what
-- was counted since that reset.
function _M.push()
    local s = stats()
    local values, reset = {}, false
    for i = 1, #series do
        local v = series[i].read(s) or 0
        values[i] = v
        if v < last[i] then reset = true end
    end
    for i = 1, #series do
        local delta = reset and values[i] or values[i] - last[i]
        if delta ~= 0 then series[i].emit(delta) end
        last[i] = values[i]
    end
    push_max_calls(s)
    push_subscriptions(s)
end

local function push_timer(premature)
    if premature then return end
    local ok, err = pcall(_M.push)
    if not ok then
        ngx.log(ngx.ERR, "resty.session.hiredis metrics: push failed: ", err)
    end
end

---
-- Sets the exporter up in this worker; call it from `init_worker_by_lua*`, before the
-- worker makes storage calls. opts (all optional):
--   dict        the lua_shared_dict of the metrics ("prometheus_metrics")
--   interval    seconds between two pushes of this worker (1)
--   prometheus  an instance of `require("prometheus").init(...)` to add these metrics
--               to (one the configuration already uses for other metrics: pass its
--               dict too); else one is made on `dict`, its sync_interval being `interval`
function _M.init(opts)
    assert(not prom, "metrics_exporter.init() runs once per worker")
    opts = opts or {}
    local interval = opts.interval or 1
    assert(hiredis.stats, "resty.session.hiredis has no stats(): a version with statistics is needed")
    stats = hiredis.stats
    local dict_name = opts.dict or "prometheus_metrics"
    dict = ngx.shared[dict_name]
    assert(dict, "no lua_shared_dict " .. dict_name)
    prom = opts.prometheus or prometheus_lib.init(dict_name, { sync_interval = interval })

    local first = stats()
    ops = sorted_keys(first.ops)
    local bounds = first.ops[ops[1]].latency.bounds
    for i, ms in ipairs(bounds) do
        le[i] = format("%.10g", ms / 1000)
    end
    le[#bounds + 1] = "+Inf"

    register(first)
    -- The worker starts from what it inherited (calls nginx's master made in
    -- init_by_lua): those are no worker's. The zero increments create every series,
    -- so a scrape shows them before the first call.
    for i = 1, #series do
        last[i] = series[i].read(first) or 0
        series[i].emit(0)
    end
    push_max_calls(first)
    push_subscriptions(first)

    local ok, err = ngx.timer.every(interval, push_timer)
    if not ok then
        error("resty.session.hiredis metrics: cannot start the push timer: " .. tostring(err))
    end
end

local function count_text(n)
    return format("%.0f", n)
end

-- The histogram family, in Prometheus's text format: one block, op by op.
local function histogram_lines()
    local out = {
        "# HELP " .. HISTOGRAM .. " Duration of storage calls, failed ones included.\n",
        "# TYPE " .. HISTOGRAM .. " histogram\n",
    }
    for _, op in ipairs(ops) do
        local total = 0
        for i = 1, #le do
            total = total + (dict:get(bucket_key(op, i)) or 0)
            out[#out + 1] = format('%s_bucket{op="%s",le="%s"} %s\n', HISTOGRAM, op, le[i], count_text(total))
        end
        out[#out + 1] = format('%s_sum{op="%s"} %.14g\n', HISTOGRAM, op, (dict:get(sum_key(op)) or 0) / 1000)
        out[#out + 1] = format('%s_count{op="%s"} %s\n', HISTOGRAM, op, count_text(total))
    end
    return concat(out)
end

---
-- Every metric of the shared dict (the library's and the histogram), as an array of
-- strings, after pushing this worker's own numbers.
function _M.metric_data()
    _M.push()
    local data = prom:metric_data()
    data[#data + 1] = histogram_lines()
    return data
end

---
-- Serves a scrape: the body of `location /metrics` (`content_by_lua*`).
function _M.collect()
    local data = _M.metric_data()
    ngx.header.content_type = "text/plain; version=0.0.4"
    ngx.print(data)
end

return _M
