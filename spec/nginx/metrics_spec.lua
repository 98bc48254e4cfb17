-- examples/metrics.conf in a real nginx: resty.session.hiredis's stats() exported
-- through nginx-lua-prometheus by examples/metrics_exporter.lua, added up over the
-- workers, read on /metrics over HTTP. What changes in the example: the Redis port, the
-- key prefix, worker_processes, the harness's paths and listen port, plus what the spec
-- needs to look inside (a location calling a closed port, one returning stats(), one
-- calling stats_reset(), and with 2 workers a timer per worker that makes calls and keeps
-- that worker's stats()).
-- Every exported number is checked against the sum of the workers' stats().
local h = require "helpers"
local nginx = require "nginx"
local upstream = require "upstream"

local PROMETHEUS, MISSING = upstream.library("nginx-lua-prometheus",
                                             { "prometheus", "prometheus_keys", "prometheus_resty_counter" })
if MISSING then
    io.stderr:write("metrics: specs skipped: ", MISSING, "\n")
end

local N = "resty_session_hiredis_"
local HISTOGRAM = N .. "call_duration_seconds"
local LE = { "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
             "0.25", "1", "+Inf" }
local BOUNDS = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000 }
local OPS = { "delete", "get", "read_metadata", "set" }
local GROUPS = { connections = true, pipeline = true, cluster = true, sentinel = true }

-- Reads the example and makes its changes; fails when the example lacks what is replaced.
local function example(substitutions)
    local f = assert(io.open(nginx.root .. "/examples/metrics.conf", "rb"))
    local text = f:read("*a")
    f:close()
    for _, sub in ipairs(substitutions) do
        local from, to = sub[1], sub[2]
        local escaped = from:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
        local n
        text, n = text:gsub(escaped, (to:gsub("%%", "%%%%")))
        assert(n > 0, "not found in examples/metrics.conf: " .. from)
    end
    return text
end

-- What the spec adds to init_worker_by_lua_block: STATS_TEXT(), this worker's stats()
-- as "path value" lines; with calls, a timer that makes them, then keeps STATS_TEXT()
-- in the shared dict `spec` under the worker's id.
local function spec_init_worker(calls, down_port)
    return [[
        function STATS_TEXT()
            local out = {}
            local function walk(prefix, t)
                for k, v in pairs(t) do
                    local key = prefix .. tostring(k)
                    if type(v) == "table" then
                        walk(key .. ".", v)
                    else
                        out[#out + 1] = key .. " " .. string.format("%.17g", v)
                    end
                end
            end
            walk("", require("resty.session.hiredis").stats())
            return table.concat(out, "\n") .. "\n"
        end
        if ]] .. tostring(calls ~= nil) .. [[ then
            assert(ngx.timer.at(0, function()
                for _ = 1, ]] .. (calls or 0) .. [[ do
                    assert(SESSIONS:get("session", "missing") == nil)
                end
                -- as many again, concurrent: the worker batches them
                local threads = {}
                for i = 1, ]] .. (calls or 0) .. [[ do
                    threads[i] = ngx.thread.spawn(SESSIONS.get, SESSIONS, "session", "missing")
                end
                for i = 1, #threads do
                    assert(ngx.thread.wait(threads[i]))
                end
                local down = require("resty.session.hiredis").new({ port = ]] .. down_port .. [[ })
                assert(select(2, down:get("session", "x")))
                ngx.shared.spec:set(ngx.worker.id(), STATS_TEXT())
            end))
        end
    ]]
end

local function spec_locations(down_port)
    return [[
        location = /spec/down {
            content_by_lua_block {
                local down = require("resty.session.hiredis").new({ port = ]] .. down_port .. [[,
                                                                    connect_timeout = 1000 })
                local value, err = down:get("session", "x")
                ngx.say(tostring(value), " ", tostring(err))
            }
        }
        location = /spec/stats {
            content_by_lua_block { ngx.print(STATS_TEXT()) }
        }
        location = /spec/reset {
            content_by_lua_block { require("resty.session.hiredis").stats_reset() }
        }
        location = /spec/kept {
            content_by_lua_block { ngx.print(ngx.shared.spec:get(tonumber(ngx.var.arg_worker)) or "") }
        }
        location = /metrics {]]
end

local function start(workers, calls)
    local down_port = h.unused_port()
    local conf = example({
        { "worker_processes auto;", "worker_processes " .. workers .. ";" },
        { "port = 6379,", "port = " .. h.port .. "," },
        { 'prefix = "sessions",', 'prefix = "' .. h.unique("metrics") .. '",' },
        { "lua_shared_dict prometheus_metrics 10m;", "lua_shared_dict prometheus_metrics 10m;\n"
                                                     .. "    lua_shared_dict spec 1m;" },
        { "init_worker_by_lua_block {", "init_worker_by_lua_block {\n" .. spec_init_worker(calls, down_port) },
        { "location = /metrics {", spec_locations(down_port) },
    })
    return nginx.start_config(conf, { lua_path = nginx.root .. "/examples/?.lua;" .. PROMETHEUS })
end

-- The error log's [error]-or-worse lines, but for the refused connects the spec makes
-- (nginx does not name the port there; a refused connect to the test Redis would show in
-- the counts anyway).
local function shutdown(srv)
    local out = {}
    for _, line in ipairs(srv:shutdown()) do
        if not line:find("connect() failed (111: Connection refused)", 1, true) then
            out[#out + 1] = line
        end
    end
    return out
end

local function flat_stats(text)
    local flat = {}
    for key, value in text:gmatch("(%S+) (%S+)\n") do
        flat[key] = assert(tonumber(value), value)
    end
    assert(next(flat), "no stats in: " .. text)
    return flat
end

-- Family of a sample name (a histogram's samples belong to the histogram).
local function family(name)
    return name:match("^(" .. HISTOGRAM .. ")_") or name
end

-- GET /metrics, parsed: samples["name{labels}"] = value, types[family] = type, and the
-- sample keys in their order. Checks the text format on the way: TYPE before samples,
-- each family's samples in one block, no sample twice.
local function scrape(srv)
    local body, status, headers = srv:get("/metrics")
    assert.equal(200, status, body)
    assert.matches("^text/plain", headers["content-type"])
    local m = { samples = {}, types = {}, order = {} }
    local done, current = {}, nil
    for line in body:gmatch("[^\n]+") do
        local fam, typ = line:match("^# TYPE (%S+) (%S+)$")
        if fam then
            m.types[fam] = typ
        elseif not line:find("^#") then
            local key, value = line:match("^(%S+) (%S+)$")
            assert(key, "not a sample: " .. line)
            local name = key:match("^[%w_:]+")
            local f = family(name)
            assert(m.types[f], "no TYPE before " .. line)
            if f ~= current then
                assert(not done[f], "samples of " .. f .. " in two blocks")
                if current then done[current] = true end
                current = f
            end
            assert(m.samples[key] == nil, "sample twice: " .. key)
            m.samples[key] = assert(tonumber(value), line)
            m.order[#m.order + 1] = key
        end
    end
    return m
end

local function sample(m, name, labels)
    return m.samples[name .. (labels and ("{" .. labels .. "}") or "")]
end

-- Every sample of the exporter that the workers' stats() (flat, one table per worker)
-- say it should show: counters summed, the gauge the largest, buckets cumulative.
local function expected(flats)
    local e, counts, sums = {}, {}, {}
    local function add(key, v) e[key] = (e[key] or 0) + v end
    for _, flat in ipairs(flats) do
        for key, v in pairs(flat) do
            local op, field = key:match("^ops%.([%w_]+)%.(%a+)$")
            local bucket = key:match("^ops%.[%w_]+%.latency%.counts%.(%d+)$")
            local bound = key:match("^ops%.[%w_]+%.latency%.bounds%.(%d+)$")
            local group, name = key:match("^(%a+)%.([%w_]+)$")
            if op and (field == "calls" or field == "errors") then
                add(N .. field .. '_total{op="' .. op .. '"}', v)
            elseif bucket then
                op = key:match("^ops%.([%w_]+)%.")
                counts[op] = counts[op] or {}
                counts[op][tonumber(bucket)] = (counts[op][tonumber(bucket)] or 0) + v
            elseif key:match("%.latency%.sum_ms$") then
                op = key:match("^ops%.([%w_]+)%.")
                sums[op] = (sums[op] or 0) + v
            elseif bound then
                assert.equal(BOUNDS[tonumber(bound)], v, key)
            elseif group == "errors" then
                add(N .. 'errors_by_class_total{class="' .. name .. '"}', v)
            elseif key == "pipeline.max_calls" then
                e[N .. "pipeline_max_calls"] = math.max(e[N .. "pipeline_max_calls"] or 0, v)
            elseif key == "sentinel.subscriptions" then
                e[N .. "sentinel_subscriptions"] = (e[N .. "sentinel_subscriptions"] or 0) + v
            elseif group and GROUPS[group] then
                add(N .. group .. "_" .. name .. "_total", v)
            else
                error("a stats() field the exporter does not know: " .. key)
            end
        end
    end
    for op, c in pairs(counts) do
        local total = 0
        for i = 1, #LE do
            total = total + (c[i] or 0)
            e[HISTOGRAM .. '_bucket{op="' .. op .. '",le="' .. LE[i] .. '"}'] = total
        end
        e[HISTOGRAM .. '_count{op="' .. op .. '"}'] = total
    end
    return e, sums
end

-- The scrape shows exactly what the stats say (the histogram's _sum to float precision),
-- and nothing more of resty_session_hiredis_.
local function assert_matches_stats(m, flats)
    local e, sums = expected(flats)
    for key, v in pairs(e) do
        assert.equal(v, m.samples[key], key)
    end
    for op, sum_ms in pairs(sums) do
        local got = sample(m, HISTOGRAM .. "_sum", 'op="' .. op .. '"')
        assert(math.abs(got - sum_ms / 1000) <= 1e-9 * math.max(1, sum_ms), op .. " _sum " .. got)
        e[HISTOGRAM .. '_sum{op="' .. op .. '"}'] = got
    end
    for _, key in ipairs(m.order) do
        if key:find("^" .. N) then
            assert(e[key], "exported but not in stats(): " .. key)
        end
    end
end

-- The histogram of one op: 13 buckets in le order, cumulative, +Inf = _count.
local function assert_histogram(m, op)
    local buckets = {}
    for _, key in ipairs(m.order) do
        local o, le = key:match("^" .. HISTOGRAM .. '_bucket{op="([%w_]+)",le="([^"]+)"}$')
        if o == op then buckets[#buckets + 1] = { le = le, n = m.samples[key] } end
    end
    assert.equal(#LE, #buckets)
    local per_bucket, previous = 0, 0
    for i, b in ipairs(buckets) do
        assert.equal(LE[i], b.le)
        assert(b.n >= previous, "bucket le=" .. b.le .. " below the one before")
        per_bucket = per_bucket + (b.n - previous)
        previous = b.n
    end
    local count = sample(m, HISTOGRAM .. "_count", 'op="' .. op .. '"')
    assert.equal(count, per_bucket)
    assert.equal(count, buckets[#buckets].n)
    return count, sample(m, HISTOGRAM .. "_sum", 'op="' .. op .. '"')
end

-- Counters, buckets, sums and counts never go down from one scrape to the next.
local function assert_not_lower(before, after)
    for key, v in pairs(before.samples) do
        local f = family(key:match("^[%w_:]+"))
        if after.types[f] ~= "gauge" then
            assert(after.samples[key], "gone: " .. key)
            assert(after.samples[key] >= v, key .. " went down: " .. v .. " -> " .. after.samples[key])
        end
    end
end

-- status, body
local function call(srv, method, path, body)
    local text, status = srv:request(path, method, body)
    return status, text
end

local function it_with_prometheus(name, fn)
    if MISSING then
        return it(name, function() pending("skipped: " .. MISSING) end)
    end
    return it(name, fn)
end

describe("examples/metrics.conf: stats() through nginx-lua-prometheus", function()
    it_with_prometheus("one worker: exact numbers at once, the scraping worker's own pushed first", function()
        local srv = start(1)
        local ok, err = pcall(function()
            local m0 = scrape(srv)
            assert.equal("counter", m0.types[N .. "calls_total"])
            assert.equal("counter", m0.types[N .. "errors_by_class_total"])
            assert.equal("gauge", m0.types[N .. "pipeline_max_calls"])
            assert.equal("histogram", m0.types[HISTOGRAM])
            for _, op in ipairs(OPS) do
                assert.equal(0, sample(m0, N .. "calls_total", 'op="' .. op .. '"'))
                assert.same({ 0, 0 }, { assert_histogram(m0, op) })
            end

            local gets = 20
            assert.same({ 204, "" }, { call(srv, "PUT", "/session?id=a", "payload") })
            for _ = 1, gets do
                assert.same({ 200, "payload" }, { call(srv, "GET", "/session?id=a") })
            end
            local status, body = call(srv, "GET", "/spec/down")
            assert.equal(200, status)
            assert.matches("^nil .*refused", body)
            assert.same({ 204, "" }, { call(srv, "DELETE", "/session?id=a") })

            -- no wait: the worker serving the scrape pushes its own counts first
            local m1 = scrape(srv)
            assert_not_lower(m0, m1)
            local function grew(name, labels)
                return sample(m1, name, labels) - sample(m0, name, labels)
            end
            assert.equal(gets + 1, grew(N .. "calls_total", 'op="get"'))
            assert.equal(1, grew(N .. "errors_total", 'op="get"'))
            assert.equal(1, grew(N .. "calls_total", 'op="set"'))
            assert.equal(0, grew(N .. "errors_total", 'op="set"'))
            assert.equal(1, grew(N .. "calls_total", 'op="delete"'))
            assert.equal(0, grew(N .. "calls_total", 'op="read_metadata"'))
            assert.equal(1, grew(N .. "errors_by_class_total", 'class="connect"'))
            for _, class in ipairs({ "timeout", "closed", "protocol", "server", "config" }) do
                assert.equal(0, grew(N .. "errors_by_class_total", 'class="' .. class .. '"'), class)
            end
            local count, sum = assert_histogram(m1, "get")
            assert.equal(sample(m1, N .. "calls_total", 'op="get"'), count)
            assert.is_true(sum > 0)
            assert_matches_stats(m1, { flat_stats(srv:get("/spec/stats")) })

            -- scraping again adds nothing
            local m2 = scrape(srv)
            assert_not_lower(m1, m2)
            assert.same(m1.samples, m2.samples)

            -- stats_reset() in the worker: what it counts next is added, nothing goes down
            assert.equal(200, (call(srv, "GET", "/spec/reset")))
            for _ = 1, 3 do
                assert.equal(404, (call(srv, "GET", "/session?id=a")))
            end
            local m3 = scrape(srv)
            assert_not_lower(m2, m3)
            assert.equal(3, sample(m3, N .. "calls_total", 'op="get"') - sample(m2, N .. "calls_total", 'op="get"'))
            assert.equal(3, (assert_histogram(m3, "get")) - (assert_histogram(m2, "get")))
        end)
        local errors = shutdown(srv)
        assert(ok, err)
        assert.same({}, errors)
    end)

    it_with_prometheus("two workers: every worker's calls reach /metrics, counted once", function()
        local calls = 25   -- per worker: that many gets, as many concurrent, one refused
        local srv = start(2, calls)
        local ok, err = pcall(function()
            -- each worker's stats() once its timer is done
            local flats = {}
            assert(h.wait_until(function()
                for id = 0, 1 do
                    local text = srv:get("/spec/kept?worker=" .. id)
                    if text ~= "" then flats[id + 1] = flat_stats(text) end
                end
                return flats[1] ~= nil and flats[2] ~= nil
            end, 15000), "the workers' timers did not finish")
            local expect = 2 * (2 * calls + 1)
            for _, flat in ipairs(flats) do
                assert.equal(2 * calls + 1, flat["ops.get.calls"])
            end

            -- the other worker's counts arrive with its next push: poll, never above
            local last, m
            local deadline = h.now() + 15
            repeat
                m = scrape(srv)
                if last then assert_not_lower(last, m) end
                last = m
                local got = sample(m, N .. "calls_total", 'op="get"')
                assert(got <= expect, "get calls above the workers' total: " .. got)
                if got == expect and sample(m, HISTOGRAM .. "_count", 'op="get"') == expect then break end
                h.sleep(50)
            until h.now() > deadline
            assert.equal(expect, sample(m, N .. "calls_total", 'op="get"'))
            assert.equal(2, sample(m, N .. "errors_total", 'op="get"'))
            assert.equal(2, sample(m, N .. "errors_by_class_total", 'class="connect"'))
            local count, sum = assert_histogram(m, "get")
            assert.equal(expect, count)
            assert.is_true(sum > 0)
            -- every other number came with the same pushes (polled briefly all the same)
            assert(h.wait_until(function()
                m = scrape(srv)
                assert_not_lower(last, m)
                last = m
                return pcall(assert_matches_stats, m, flats)
            end, 5000))
            assert_matches_stats(m, flats)
            -- the concurrent gets went out in auto-pipelined writes: the gauge is not zero
            assert.is_true(sample(m, N .. "pipeline_max_calls") >= 1)
        end)
        local errors = shutdown(srv)
        assert(ok, err)
        assert.same({}, errors)
    end)
end)
