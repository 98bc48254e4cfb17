-- Write-loss accounting through a failover, for the cluster and sentinel
-- failover specs. Writers run a loop of `set` calls, each of a unique key with a
-- unique value, through one failover:
--
--   native    this module's native transport, in a `luajit` child process
--             (spec/support/failover_writer.lua) that logs each call to a file
--   cosocket  this module inside nginx (light threads of one timer)
--   upstream  upstream's resty.session.redis.cluster / .sentinel inside nginx
--
-- Every acknowledged write is recorded; once the topology is stable again the
-- spec reads every acknowledged key back from the new master with a raw client:
-- a key missing or holding another value is LOST. The server's own failover time
-- (trigger -> the new master accepts a raw SET) is measured beside them.
--
--   local fk = require "failover_kit"
--   local out = fk.scenario({ title =, srv =, writers =, replica =, trigger =,
--                             recover =, wait_stable =, ... })   -- see below
--   fk.check(out, writers, { outage = true }, assert)
--
-- The parts (start, acks, wait_acks, finish, read_back, poll_accepts, line,
-- report) serve other loops too. Report lines go to stderr and are appended to
-- FAILOVER_REPORT (default build/failover-report.txt).
local socket = require "socket"
local nginx = require "nginx"
local files = require "files"
local raw = require "raw_redis"

local _M = {}

-- FAILOVER_DEBUG=1: every answer of the promotion probe on stderr.
-- FAILOVER_KEEP_LOGS=1: each scenario's server logs (with its report lines) are
-- copied to failover-logs/ beside the report file.
local DEBUG = os.getenv("FAILOVER_DEBUG") == "1"
local KEEP_LOGS = os.getenv("FAILOVER_KEEP_LOGS") == "1"

local function now() return socket.gettime() end
_M.now = now
local function sleep(s) socket.sleep(s) end

local shell_quote, read_file, write_file = files.shell_quote, files.read_file, files.write_file
local function temp_dir() return files.temp_dir("rsh-failover") end

_M.sh = files.sh

-- The fields of every table given, later ones winning.
function _M.merged(...)
    local out = {}
    for _, t in ipairs({ ... }) do
        for k, v in pairs(t) do out[k] = v end
    end
    return out
end

-- The writers of one scenario: native and cosocket on `base`, then opts.extra
-- (more writers), upstream's (opts.upstream: its module, its configuration
-- opts.upstream_cfg or base, a new instance per call when opts.upstream_fresh),
-- and, with opts.wait, native and cosocket with wait_replicas = 1 on the same
-- pools as the default writers (whose calls must not wait behind a WAIT). Each
-- writer's session name is opts.name(label).
function _M.writers(base, opts)
    local list = {
        { label = "native", transport = "native", cfg = base },
        { label = "cosocket", transport = "cosocket", cfg = base },
    }
    for _, w in ipairs(opts.extra or {}) do list[#list + 1] = w end
    if opts.upstream then
        list[#list + 1] = { label = "upstream", transport = "upstream", module = opts.upstream.module,
                            cfg = opts.upstream_cfg or base, fresh = opts.upstream_fresh }
    end
    if opts.wait then
        local durable = _M.merged(base, { wait_replicas = 1, wait_timeout = 1000, read_timeout = 1500 })
        list[#list + 1] = { label = "native+wait1", transport = "native", cfg = durable, durable = true }
        list[#list + 1] = { label = "cosocket+wait1", transport = "cosocket", cfg = durable, durable = true }
    end
    for _, w in ipairs(list) do w.name = opts.name(w.label) end
    return list
end

-- Polls fn() every `every` seconds until it returns a truthy value (returned) or
-- timeout_s passes (nil).
function _M.poll(fn, timeout_s, every)
    local deadline = now() + timeout_s
    repeat
        local v = fn()
        if v then return v end
        sleep(every or 0.05)
    until now() > deadline
    return nil
end

-- The key and value of a writer's i-th call (the session name is the writer's).
function _M.redis_key(writer, i)
    return (writer.cfg.prefix and (writer.cfg.prefix .. ":") or "") .. writer.name .. ":k" .. i
end

local function value_of(run_id, label, i)
    return run_id .. ":" .. label .. ":" .. i
end

-- Whether this module implements wait_replicas / wait_timeout for cfg's topology:
-- new() takes them, and refuses an invalid wait_replicas (a module without the
-- field ignores unknown fields); nil, why when it does not.
function _M.wait_supported(cfg)
    local hiredis = require "resty.session.hiredis"
    local function with(fields)
        local out = {}
        for k, v in pairs(cfg) do out[k] = v end
        for k, v in pairs(fields) do out[k] = v end
        return out
    end
    local ok, err = pcall(hiredis.new, with({ wait_replicas = 1, wait_timeout = 1000 }))
    if not ok then
        return nil, "resty.session.hiredis refuses wait_replicas = 1, wait_timeout = 1000: " .. tostring(err)
    end
    local bad_ok, bad_err = pcall(hiredis.new, with({ wait_replicas = -1, wait_timeout = 1000 }))
    if bad_ok or not tostring(bad_err):find("wait_replicas", 1, true) then
        return nil, "resty.session.hiredis does not implement wait_replicas yet (wait_replicas = -1 is not refused)"
    end
    return true
end

-- Every writer's loop inside nginx (one timer, a light thread per writer).
-- Progress (acknowledged writes) goes to the `results` shared dict as it goes.
local NGINX_WRITERS = [==[
    local shared = ngx.shared.results
    local function copy(t)
        local out = {}
        for k, v in pairs(t) do out[k] = type(v) == "table" and copy(v) or v end
        return out
    end
    local function loop(w)
        local module = w.module and require(w.module) or H.hiredis
        local s = not w.fresh and module.new(w.cfg) or nil
        local out = { calls = 0, acked = {}, acked_t = {}, acked_end = {}, fails = {}, errors = {} }
        ngx.update_time()
        local deadline = ngx.now() + ARGS.max_s
        local progress = ARGS.run_id .. ":acks:" .. w.label
        local i = 0
        while ngx.now() < deadline and not shared:get(ARGS.stop_key) do
            i = i + 1
            -- Kong's cluster client grows the pool names of a reused options table
            local storage = s or module.new(copy(w.cfg))
            local t0 = ngx.now()
            local ok, err = storage:set(w.name, "k" .. i, ARGS.run_id .. ":" .. w.label .. ":" .. i,
                                        600, ngx.time())
            ngx.update_time()
            out.calls = i
            -- upstream's set answers "OK" (lua-resty-redis), this module's true
            if ok and (ok == true or not w.strict) and err == nil then
                out.acked[#out.acked + 1] = i
                out.acked_t[#out.acked_t + 1] = t0
                out.acked_end[#out.acked_end + 1] = ngx.now()
                shared:incr(progress, 1, 0)
            else
                out.fails[#out.fails + 1] = { t0, ngx.now() }
                local e = tostring(err or ok)
                out.errors[e] = (out.errors[e] or 0) + 1
            end
            ngx.sleep(ARGS.every_ms / 1000)
            ngx.update_time()
        end
        return out
    end
    local threads, results = {}, {}
    for n, w in ipairs(ARGS.writers) do
        threads[n] = ngx.thread.spawn(function()
            local ok, res = pcall(loop, w)
            return ok and res or { crashed = tostring(res) }
        end)
    end
    for n, w in ipairs(ARGS.writers) do
        local ok, res = ngx.thread.wait(threads[n])
        results[w.label] = ok and res or { crashed = tostring(res) }
    end
    return results
]==]

local run_mt = {}
run_mt.__index = run_mt

local counter = 0

-- Starts the writers. opts: writers = { { label =, transport = "native" |
-- "cosocket" | "upstream", name =, cfg =, module = (upstream), fresh = bool,
-- durable = bool } }, srv (the nginx kit server, for cosocket/upstream),
-- every_ms (30), max_s (60: a bound; finish() stops them earlier).
function _M.start(opts)
    counter = counter + 1
    local self = setmetatable({
        writers = opts.writers, srv = opts.srv, every_ms = opts.every_ms or 30,
        max_s = opts.max_s or 60, dir = temp_dir(), natives = {},
        run_id = string.format("r%d-%d-%d", os.time(), counter, math.random(1e6)),
    }, run_mt)
    self.stop_file = self.dir .. "/stop"
    self.stop_key = self.run_id .. ":stop"
    local in_nginx = {}
    local luajit = os.getenv("LUAJIT") or "luajit"
    for _, w in ipairs(self.writers) do
        if w.transport == "native" then
            local base = self.dir .. "/" .. w.label
            write_file(base .. ".args", "return " .. nginx.lua_literal({
                path = package.path, cpath = package.cpath, cfg = w.cfg, name = w.name,
                label = w.label, run_id = self.run_id, every_ms = self.every_ms, max_s = self.max_s,
                out = base .. ".log", stop_file = self.stop_file,
            }))
            local p = assert(io.popen(string.format("%s %s %s >%s 2>&1 & echo $!", luajit,
                shell_quote(nginx.root .. "/spec/support/failover_writer.lua"), shell_quote(base .. ".args"),
                shell_quote(base .. ".out"))))
            local pid = tonumber(p:read("*l"))
            p:close()
            self.natives[w.label] = { pid = pid, log = base .. ".log", out = base .. ".out" }
        else
            local cfg = {}
            for k, v in pairs(w.cfg) do cfg[k] = v end
            if w.transport == "cosocket" then cfg.transport = "cosocket" end
            in_nginx[#in_nginx + 1] = { label = w.label, name = w.name, cfg = cfg, module = w.module,
                                        fresh = w.fresh, strict = w.transport ~= "upstream" }
        end
    end
    if #in_nginx > 0 then
        assert(self.srv, "cosocket and upstream writers need the nginx kit server")
        local mime = require "mime"
        self.nginx_key = self.run_id .. ":result"
        local args = { writers = in_nginx, run_id = self.run_id, stop_key = self.stop_key,
                       every_ms = self.every_ms, max_s = self.max_s }
        local body, status = self.srv:request("/timer", "POST", NGINX_WRITERS, {
            ["x-args-literal"] = (mime.b64(nginx.lua_literal(args))), ["x-key"] = self.nginx_key,
        })
        assert(status == 200, "nginx writers not started: HTTP " .. tostring(status) .. " " .. tostring(body))
    end
    return self
end

local function native_acks(log)
    local n = 0
    for line in (read_file(log) or ""):gmatch("[^\n]+") do
        if line:sub(1, 4) == "ack " then n = n + 1 end
    end
    return n
end

-- Acknowledged writes so far, by writer label.
function run_mt:acks()
    local out = {}
    for label, native in pairs(self.natives) do out[label] = native_acks(native.log) end
    if self.nginx_key then
        local labels = {}
        for _, w in ipairs(self.writers) do
            if w.transport ~= "native" then labels[#labels + 1] = w.label end
        end
        local res = self.srv:run("content", [[
            local out = {}
            for _, l in ipairs(ARGS.labels) do out[l] = ngx.shared.results:get(ARGS.prefix .. l) or 0 end
            return out
        ]], { labels = labels, prefix = self.run_id .. ":acks:" })
        assert(res.ok, tostring(res[1]))
        for l, n in pairs(res[1]) do out[l] = n end
    end
    return out
end

-- Waits until every writer has `n` acknowledged writes more than in `base`
-- (a table from acks(), default none); raises after timeout_s with the counts.
function run_mt:wait_acks(n, timeout_s, base)
    local last
    local ok = _M.poll(function()
        last = self:acks()
        for _, w in ipairs(self.writers) do
            if (last[w.label] or 0) < ((base and base[w.label]) or 0) + n then return false end
        end
        return true
    end, timeout_s or 15, 0.05)
    if not ok then
        local parts = {}
        for _, w in ipairs(self.writers) do
            parts[#parts + 1] = w.label .. "=" .. tostring(last[w.label])
        end
        error("writers did not acknowledge " .. n .. " more writes within " .. (timeout_s or 15)
              .. " s: " .. table.concat(parts, ", ") .. self:native_output())
    end
end

function run_mt:native_output()
    local out = {}
    for label, native in pairs(self.natives) do
        local text = read_file(native.out) or ""
        if text ~= "" then out[#out + 1] = "\n" .. label .. ": " .. text end
    end
    return table.concat(out)
end

-- One native writer's log as the nginx writers report: calls, acked (call
-- numbers), acked_t / acked_end (their start and end), fails = { { t0, t1 } },
-- errors = { [err] = n }.
local function parse_native(text)
    local out = { calls = 0, acked = {}, acked_t = {}, acked_end = {}, fails = {}, errors = {} }
    for line in text:gmatch("[^\n]+") do
        local kind, i, t0, t1, err = line:match("^(%a+) (%d+) ([%d.]+) ([%d.]+) ?(.*)$")
        if kind == "ack" then
            out.acked[#out.acked + 1] = tonumber(i)
            out.acked_t[#out.acked_t + 1] = tonumber(t0)
            out.acked_end[#out.acked_end + 1] = tonumber(t1)
        elseif kind == "fail" then
            out.fails[#out.fails + 1] = { tonumber(t0), tonumber(t1) }
            out.errors[err] = (out.errors[err] or 0) + 1
        end
        local done = line:match("^done (%d+)$")
        if done then out.calls, out.done = tonumber(done), true end
        local crashed = line:match("^crash (.*)$")
        if crashed then out.crashed = crashed end
    end
    return out
end

-- Stops every writer and returns { [label] = result } (see parse_native),
-- each with its writer spec as .writer.
function run_mt:finish(timeout_s)
    write_file(self.stop_file, "stop\n")
    if self.nginx_key then
        local res = self.srv:run("content", "ngx.shared.results:set(ARGS.k, true) return true",
                                 { k = self.stop_key })
        assert(res.ok, tostring(res[1]))
    end
    local results = {}
    for label, native in pairs(self.natives) do
        local parsed = _M.poll(function()
            local p = parse_native(read_file(native.log) or "")
            return (p.done or p.crashed) and p
        end, timeout_s or 30, 0.05)
        if not parsed then
            os.execute("kill " .. native.pid .. " 2>/dev/null")
            parsed = { crashed = "no end line within the time bound" }
        end
        if parsed.crashed then parsed.crashed = parsed.crashed .. self:native_output() end
        results[label] = parsed
    end
    if self.nginx_key then
        local res = self.srv:wait_result(self.nginx_key, timeout_s or 30)
        assert(res.ok, tostring(res[1]))
        for label, r in pairs(res[1]) do results[label] = r end
    end
    for _, w in ipairs(self.writers) do
        results[w.label] = results[w.label] or { crashed = "no result" }
        results[w.label].writer = w
    end
    os.execute("rm -rf " .. shell_quote(self.dir))
    self.results = results
    return results
end

-- Reads every acknowledged key back with get(redis_key) (a raw client on the
-- new master); sets .checked and .lost (and .lost_keys, the first few).
function _M.read_back(results, get, run_id)
    for _, r in pairs(results) do
        if not r.crashed then
            r.checked, r.lost, r.lost_keys = 0, 0, {}
            for n, i in ipairs(r.acked) do
                local key = _M.redis_key(r.writer, i)
                local got = get(key)
                r.checked = r.checked + 1
                if got ~= value_of(run_id, r.writer.label, i) then
                    r.lost = r.lost + 1
                    r.lost_first = r.lost_first or r.acked_t[n]
                    r.lost_last = r.acked_t[n]
                    if #r.lost_keys < 5 then r.lost_keys[#r.lost_keys + 1] = key .. "=" .. tostring(got) end
                end
            end
        end
    end
end

function run_mt:read_back(get)
    _M.read_back(self.results, get, self.run_id)
end

-- get(key) for read_back: a raw GET on port (one connection); and its close().
function _M.raw_getter(port, password)
    local cache = {}
    local conn = assert(raw.connect(port, { password = password, timeout = 5 }))
    return function(key)
        if cache[key] == nil then
            local v, err = conn:call("GET", key)
            assert(v ~= nil or err == nil, "GET " .. key .. ": " .. tostring(err))
            cache[key] = v == nil and false or v
        end
        return cache[key] or nil
    end, function() conn:close() end
end

-- Polls the raw SET of key on port (a fresh connection each time, 200 ms
-- timeouts) from t0 until it answers OK: the seconds from t0, or nil after
-- limit_s. on_tick(elapsed) runs between attempts (e.g. asks again).
function _M.poll_accepts(port, password, key, t0, limit_s, on_tick)
    repeat
        local conn, cerr = raw.connect(port, { password = password, timeout = 0.2 })
        local v, err
        if conn then
            v, err = conn:call("SET", key, "probe")
            conn:close()
            if v == "OK" then return now() - t0 end
        end
        if DEBUG then
            io.stderr:write(string.format("[failover probe] %.3f s: %s\n", now() - t0, tostring(cerr or err or v)))
        end
        if on_tick then on_tick(now() - t0) end
        sleep(0.02)
    until now() - t0 > limit_s
    return nil
end

local function error_summary(errors)
    local list = {}
    for e, n in pairs(errors or {}) do list[#list + 1] = { e, n } end
    table.sort(list, function(a, b) return a[2] > b[2] end)
    local parts = {}
    for i = 1, math.min(3, #list) do
        parts[#parts + 1] = string.format("%dx %s", list[i][2], list[i][1]:sub(1, 60))
    end
    return table.concat(parts, "; ")
end

-- The report line of one writer (t0: the trigger's time).
function _M.line(scenario, r, t0, server_seconds)
    local w = r.writer
    if r.crashed then
        return string.format("[failover] %s | %-14s | CRASHED: %s", scenario, w.label, r.crashed)
    end
    local window = "none"
    if #r.fails > 0 then
        local first, last = r.fails[1][1], r.fails[#r.fails][2]
        window = string.format("%.2f s (%.2f..%.2f after the trigger)", last - first, first - t0, last - t0)
        -- the end of the first success after the last failure (a call can span the gap)
        for n, started in ipairs(r.acked_t) do
            if started > r.fails[#r.fails][1] then
                window = window .. string.format(", writes again at %.2f s", r.acked_end[n] - t0)
                break
            end
        end
    end
    local lost = tostring(r.lost)
    if r.lost_first then
        lost = string.format("%d (calls started %.2f..%.2f s after the trigger)", r.lost,
                             r.lost_first - t0, r.lost_last - t0)
    end
    return string.format(
        "[failover] %s | %-14s | calls %d failed %d acknowledged %d LOST %s | error window %s | "
        .. "server failover %s | %s",
        scenario, w.label, r.calls, #r.fails, #r.acked, lost, window,
        server_seconds and string.format("%.2f s", server_seconds) or "n/a", error_summary(r.errors))
end

_M.report_file = os.getenv("FAILOVER_REPORT") or (nginx.root .. "/build/failover-report.txt")
_M.report_dir = _M.report_file:match("^(.*)/[^/]*$") or "."

-- Prints the lines to stderr and appends them to report_file.
function _M.report(lines)
    io.stderr:write("\n" .. table.concat(lines, "\n") .. "\n")
    local f = io.open(_M.report_file, "a")
    if f then
        local stamp = os.date("%Y-%m-%d %H:%M:%S")
        for _, l in ipairs(lines) do f:write(stamp, " ", l, "\n") end
        f:close()
    end
end

-- One failover under the writers. s: title, srv, writers (see start), replica
-- (the port to be promoted), password, probe_key (a key the promoted replica
-- will own), trigger() (the failover; returns nothing), recover() (runs once
-- the replica accepts writes, or on any error: restart / SIGCONT the old
-- master), on_tick(elapsed) (optional, while waiting for the promotion),
-- wait_stable() (polls until the topology is stable again with the old master
-- as a synced replica; returns the new master's port), limit_s (30: the
-- promotion's time bound), log_dir (the servers' logs, for FAILOVER_KEEP_LOGS),
-- acks_before / acks_after (25: acknowledged writes
-- of every writer before the trigger, and again once the topology is stable).
-- Returns { results = { [label] = r }, lines, t0, seconds (server failover),
-- new_master } with every acknowledged key read back from new_master.
function _M.scenario(s)
    local run = _M.start({ srv = s.srv, writers = s.writers, every_ms = s.every_ms or 30 })
    local recovered = false
    local function recover()
        if not recovered then
            recovered = true
            s.recover()
        end
    end
    local out = {}
    local ok, err = pcall(function()
        run:wait_acks(s.acks_before or 25, 15)
        out.t0 = now()
        s.trigger()
        out.seconds = _M.poll_accepts(s.replica, s.password, s.probe_key, out.t0, s.limit_s or 30, s.on_tick)
        recover()
        assert(out.seconds, string.format("%s: the replica did not accept writes within %d s", s.title,
                                          s.limit_s or 30))
        out.new_master = s.wait_stable()
        -- writes acknowledged again once stable (wait_replicas writers: once the
        -- old master is a synced replica)
        run:wait_acks(s.acks_after or 25, 20, run:acks())
    end)
    if not ok then
        pcall(recover)
        pcall(run.finish, run, 10)
        error(err, 0)
    end
    out.results = run:finish()
    local get, close = _M.raw_getter(out.new_master, s.password)
    run:read_back(get)
    close()
    out.lines = {}
    for _, w in ipairs(s.writers) do
        out.lines[#out.lines + 1] = _M.line(s.title, out.results[w.label], out.t0, out.seconds)
    end
    _M.report(out.lines)
    if KEEP_LOGS and s.log_dir then
        local dest = string.format("%s/failover-logs/%s-%s", _M.report_dir, os.date("%H%M%S"),
                                   s.title:gsub("%W+", "-"))
        os.execute(string.format("mkdir -p %s && cp %s/*.log %s/ 2>/dev/null", shell_quote(dest),
                                 shell_quote(s.log_dir), shell_quote(dest)))
        write_file(dest .. "/report.txt", table.concat(out.lines, "\n") .. "\n")
    end
    return out
end

-- The accounting of every writer, with busted's assert: no crash, acknowledged +
-- failed == calls, every acknowledged key checked, writes acknowledged after the
-- promotion; outage: every writer saw failed calls; durable writers (wait_replicas)
-- lost nothing. Losses of the others are reported, not asserted.
function _M.check(out, writers, opts, assert)
    local lines = table.concat(out.lines, "\n")
    for _, w in ipairs(writers) do
        local r = out.results[w.label]
        assert.is_nil(r.crashed, w.label .. " crashed: " .. tostring(r.crashed))
        assert.equal(r.calls, #r.acked + #r.fails, w.label .. ": acknowledged + failed ~= calls")
        assert.equal(#r.acked, r.checked, w.label .. ": not every acknowledged key was read back")
        local after = 0
        for _, t in ipairs(r.acked_t) do
            if t > out.t0 + out.seconds then after = after + 1 end
        end
        assert.is_true(after > 0, w.label .. ": no write acknowledged after the promotion\n" .. lines)
        if opts.outage then
            assert.is_true(#r.fails > 0, w.label .. ": no call failed while the master was unreachable\n" .. lines)
        end
        if w.durable then
            assert.equal(0, r.lost, w.label .. " (wait_replicas) lost acknowledged writes: "
                         .. table.concat(r.lost_keys, ", ") .. "\n" .. lines)
        end
    end
end

-- The [error]-or-worse lines of srv's log but the expected ones: upstream's
-- clients (Kong's rediscluster.lua, lua-resty-redis-connector) log their failed
-- connections at error level, and nginx logs a connection a killed server reset.
local EXPECTED = { "[lua] rediscluster.lua:", "[lua] connector.lua:", "(104: Connection reset by peer)" }

function _M.own_errors(srv)
    local out = {}
    for _, line in ipairs(srv:errors()) do
        local expected = false
        for _, what in ipairs(EXPECTED) do
            if line:find(what, 1, true) then expected = true end
        end
        if not expected then out[#out + 1] = line end
    end
    return out
end

-- Upstream's storages for the topology ("cluster" or "sentinel"): the Lua path
-- nginx needs and the module name, or nil, why.
function _M.upstream(topology)
    local upstream = require "upstream"
    if upstream.redis_missing then return nil, upstream.redis_missing end
    local dirs = topology == "cluster" and { "kong-redis-cluster", "lua-resty-lock", "lua-resty-string" }
        or { "lua-resty-redis-connector" }
    local extra = {}
    if upstream.origin == "../shared/third_party" then
        for _, dir in ipairs(dirs) do
            extra[#extra + 1] = nginx.root .. "/../shared/third_party/" .. dir .. "/lib/?.lua"
        end
    end
    local path = upstream.lua_path .. (#extra > 0 and (";" .. table.concat(extra, ";")) or "")
    local module = "resty.session.redis." .. topology
    local needs = topology == "cluster" and { "resty.rediscluster", "resty.lock", "resty.string", module }
        or { "resty.redis.connector", module }
    for _, m in ipairs(needs) do
        if not package.searchpath(m, path) then
            return nil, m .. " not found in " .. upstream.origin .. " (see ../shared/third_party/README)"
        end
    end
    return { lua_path = path, module = module }
end

return _M
