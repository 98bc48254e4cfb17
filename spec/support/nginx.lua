-- Starts and stops a real nginx (Debian nginx + libnginx-mod-http-lua + lua-resty-core)
-- for the end-to-end specs, and talks HTTP to it.
--
--   local nginx = require "nginx"
--   local srv = nginx.start({
--     vars = { port = 6379 },          -- available as the global table T inside nginx
--     init = "...",                    -- Lua for init_by_lua_block (after T is set)
--     init_worker = "...",             -- Lua for init_worker_by_lua_block
--     http = "...",                    -- extra http{} directives
--     server = "location /x { ... }",  -- the server{} body
--     workers = 1,
--     lua_path = "/abs/?.lua",         -- extra lua_package_path entries (e.g. upstream.lua_path)
--   })
--   local body, status = srv:get("/x")
--   srv:error_log()                   -- the error log's text
--   srv:stop()
--
-- nginx runs daemonised with its own prefix in a temp directory; lua_package_path
-- points to this repository's lua/ and lua_package_cpath to build/lib/ (absolute
-- paths computed at run time). Only 127.0.0.1 is used.
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"

local _M = {}

local files = require "files"
local shell_quote, run, read_file, write_file = files.shell_quote, files.run, files.read_file, files.write_file
local make_temp_dir = files.temp_dir

local function sleep(ms)
    socket.sleep(ms / 1000)
end

-- The repository root, as an absolute path (this file is spec/support/nginx.lua).
local function repo_root()
    local source = debug.getinfo(1, "S").source:gsub("^@", "")
    local dir = source:match("^(.*)/spec/support/[^/]+$") or "."
    if dir:sub(1, 1) ~= "/" then
        local pwd = os.getenv("PWD")
        if not pwd or pwd == "" then
            pwd = run("pwd"):gsub("%s+$", "")
        end
        dir = dir == "." and pwd or (pwd .. "/" .. dir)
    end
    local real = run("cd " .. shell_quote(dir) .. " && pwd -P"):gsub("%s+$", "")
    return real
end
_M.root = repo_root()

-- The nginx binary: $NGINX, else `nginx` on PATH, else Debian's location.
local function find_nginx()
    local env = os.getenv("NGINX")
    if env and env ~= "" then return env end
    local path = run("command -v nginx"):gsub("%s+$", "")
    if path ~= "" then return path end
    return "/usr/sbin/nginx"
end
_M.binary = find_nginx()

-- Dynamic modules directory from `nginx -V` output (--modules-path), else the prefix's modules/.
local function modules_path(info)
    local path = info:match("%-%-modules%-path=(%S+)")
    if path then return path end
    local prefix = info:match("%-%-prefix=(%S+)") or "/usr/share/nginx"
    return prefix .. "/modules"
end

-- The load_module lines for the Lua module (and NDK, which it needs), unless the
-- binary has them built in (OpenResty).
local function load_modules()
    local info = run(shell_quote(_M.binary) .. " -V")
    if info:find("lua-nginx-module", 1, true) or info:find("ngx_lua", 1, true) then
        return ""
    end
    local dir = modules_path(info)
    local lines = {}
    for _, name in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
        local path = dir .. "/" .. name
        assert(io.open(path), "nginx module not found: " .. path
                      .. " (apt-get install libnginx-mod-http-lua)"):close()
        lines[#lines + 1] = "load_module " .. path .. ";"
    end
    return table.concat(lines, "\n")
end

function _M.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

-- Serialises a flat table of strings, numbers and booleans as a Lua constructor.
local function lua_literal(value)
    local t = type(value)
    if t == "string" then
        return string.format("%q", value)
    elseif t == "number" or t == "boolean" or t == "nil" then
        return tostring(value)
    elseif t == "table" then
        local parts = {}
        for k, v in pairs(value) do
            parts[#parts + 1] = "[" .. lua_literal(k) .. "] = " .. lua_literal(v)
        end
        table.sort(parts)
        return "{ " .. table.concat(parts, ", ") .. " }"
    end
    error("cannot serialise a " .. t)
end
_M.lua_literal = lua_literal

local function is_root()
    return run("id -u"):match("^0") ~= nil
end

local function render(opts, prefix, port)
    local root = _M.root
    local lines = {
        is_root() and "user root;" or "",
        "daemon on;",
        "master_process on;",
        "worker_processes " .. (opts.workers or 1) .. ";",
        "pid " .. prefix .. "/logs/nginx.pid;",
        "error_log " .. prefix .. "/logs/error.log " .. (opts.log_level or "info") .. ";",
        load_modules(),
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        "  default_type text/plain;",
        "  client_body_temp_path " .. prefix .. "/tmp/body;",
        "  proxy_temp_path " .. prefix .. "/tmp/proxy;",
        "  fastcgi_temp_path " .. prefix .. "/tmp/fastcgi;",
        "  uwsgi_temp_path " .. prefix .. "/tmp/uwsgi;",
        "  scgi_temp_path " .. prefix .. "/tmp/scgi;",
        string.format('  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;%s;";', root, root,
                      opts.lua_path and (opts.lua_path .. ";") or ""),
        string.format('  lua_package_cpath "%s/build/lib/?.so;;";', root),
        "  lua_shared_dict results 1m;",
        "  init_by_lua_block {",
        "    T = " .. lua_literal(opts.vars or {}),
        opts.init or "",
        "  }",
    }
    if opts.init_worker then
        lines[#lines + 1] = "  init_worker_by_lua_block {\n" .. opts.init_worker .. "\n  }"
    end
    lines[#lines + 1] = opts.http or ""
    lines[#lines + 1] = "  server {"
    lines[#lines + 1] = "    listen 127.0.0.1:" .. port .. ";"
    lines[#lines + 1] = opts.server or ""
    lines[#lines + 1] = "  }"
    lines[#lines + 1] = "}"
    return table.concat(lines, "\n") .. "\n"
end

-- A complete nginx.conf written for a real deployment (the README's, examples/'s),
-- made to run here: this nginx's load_module lines, pid and logs in the prefix,
-- daemonised, this repository's lua/ and build/lib/ (plus opts.lua_path) on the Lua
-- paths, and `listen 127.0.0.1:<free port>`. Anything deployment-specific (the Redis
-- port...) is the caller's to replace before.
local function adapt(text, opts, prefix, port)
    local root = _M.root
    local conf = text:gsub("\n[ \t]*load_module[^\n]*", "\n"):gsub("^[ \t]*load_module[^\n]*", "")
    local listens
    conf, listens = conf:gsub("(\n%s*listen%s+)127%.0%.0%.1:%d+;", "%1127.0.0.1:" .. port .. ";")
    assert(listens > 0, "no `listen 127.0.0.1:<port>;` in the configuration")
    local lua_path = string.format('lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;%s;";', root, root,
                                   opts.lua_path and (opts.lua_path .. ";") or "")
    local lua_cpath = string.format('lua_package_cpath "%s/build/lib/?.so;;";', root)
    local n
    conf, n = conf:gsub('lua_package_path%s+"[^"]*";', lua_path)
    if n == 0 then conf = conf:gsub("\nhttp%s*{", "%0\n  " .. lua_path, 1) end
    conf, n = conf:gsub('lua_package_cpath%s+"[^"]*";', lua_cpath)
    if n == 0 then conf = conf:gsub("\nhttp%s*{", "%0\n  " .. lua_cpath, 1) end
    local http_directives = table.concat({
        "access_log off;",
        "client_body_temp_path " .. prefix .. "/tmp/body;",
        "proxy_temp_path " .. prefix .. "/tmp/proxy;",
        "fastcgi_temp_path " .. prefix .. "/tmp/fastcgi;",
        "uwsgi_temp_path " .. prefix .. "/tmp/uwsgi;",
        "scgi_temp_path " .. prefix .. "/tmp/scgi;",
    }, "\n  ")
    conf, n = conf:gsub("\nhttp%s*{", "%0\n  " .. http_directives, 1)
    assert(n == 1, "no http {} block in the configuration")
    local head = {
        is_root() and "user root;" or "",
        "daemon on;",
        "pid " .. prefix .. "/logs/nginx.pid;",
        load_modules(),
    }
    if not conf:find("\n%s*error_log") and not conf:find("^%s*error_log") then
        head[#head + 1] = "error_log " .. prefix .. "/logs/error.log info;"
    end
    return table.concat(head, "\n") .. "\n" .. conf
end

---
-- Starts nginx with a complete configuration `text` (see adapt above); opts.lua_path
-- as for start().
function _M.start_config(text, opts)
    local copy = {}
    for k, v in pairs(opts or {}) do copy[k] = v end
    copy.render = function(o, prefix, port) return adapt(text, o, prefix, port) end
    return _M.start(copy)
end

local server = {}
server.__index = server

local function port_open(port)
    local s = socket.tcp()
    s:settimeout(0.2)
    local ok = s:connect("127.0.0.1", port)
    s:close()
    return ok ~= nil
end

local function pid_alive(pid)
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == 0
            or os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

---
-- Starts nginx with a generated configuration; raises with the error log on failure.
function _M.start(opts)
    opts = opts or {}
    local prefix = make_temp_dir("rsh-nginx")
    assert(select(2, run("mkdir -p " .. shell_quote(prefix .. "/logs") .. " " .. shell_quote(prefix .. "/conf")
                          .. " " .. shell_quote(prefix .. "/tmp"))))

    local last_err
    for _ = 1, 5 do
        local port = _M.free_port()
        local conf = prefix .. "/conf/nginx.conf"
        write_file(conf, (opts.render or render)(opts, prefix, port))
        local out, ok = run(shell_quote(_M.binary) .. " -p " .. shell_quote(prefix .. "/")
                                                .. " -c " .. shell_quote(conf))
        if ok then
            local self = setmetatable({ prefix = prefix, port = port, conf = conf }, server)
            local deadline = socket.gettime() + 10
            repeat
                self.pid = tonumber((read_file(prefix .. "/logs/nginx.pid") or ""):match("%d+"))
                if self.pid and port_open(port) then
                    return self
                end
                sleep(20)
            until socket.gettime() > deadline
            self:stop()
            error("nginx did not come up:\n" .. (read_file(prefix .. "/logs/error.log") or ""))
        end
        last_err = out .. (read_file(prefix .. "/logs/error.log") or "")
        if not last_err:find("Address already in use", 1, true) then
            break
        end
    end
    run("rm -rf " .. shell_quote(prefix))
    error("nginx failed to start:\n" .. tostring(last_err))
end

function server:url(path)
    return "http://127.0.0.1:" .. self.port .. path
end

---
-- GET (or another method with a body); returns body, status, headers.
function server:request(path, method, body, headers)
    local chunks = {}
    headers = headers or {}
    if body then
        headers["content-length"] = tostring(#body)
    end
    local _, status, response_headers = http.request({
        url = self:url(path),
        method = method or "GET",
        headers = headers,
        source = body and ltn12.source.string(body) or nil,
        sink = ltn12.sink.table(chunks),
        create = function()
            local s = socket.tcp()
            s:settimeout(30)
            return s
        end,
    })
    return table.concat(chunks), status, response_headers
end

function server:get(path, headers)
    return self:request(path, "GET", nil, headers)
end

function server:error_log()
    return read_file(self.prefix .. "/logs/error.log") or ""
end

-- Error log lines at [error] level or worse (alert, crit, emerg), e.g. Lua errors.
function server:errors()
    local out = {}
    for line in self:error_log():gmatch("[^\n]+") do
        if line:find("%[error%]") or line:find("%[alert%]") or line:find("%[crit%]")
                or line:find("%[emerg%]") then
            out[#out + 1] = line
        end
    end
    return out
end

---
-- Stops nginx and returns the [error]-or-worse lines it logged (for teardowns:
-- `assert.same({}, srv:shutdown())`).
function server:shutdown()
    local errors = self:errors()
    self:stop()
    return errors
end

---
-- Stops nginx (TERM, then KILL after 5 s) and removes its prefix.
function server:stop(keep)
    if self.pid then
        os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
        local deadline = socket.gettime() + 5
        while pid_alive(self.pid) and socket.gettime() < deadline do
            sleep(20)
        end
        if pid_alive(self.pid) then
            os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
        end
        self.pid = nil
    end
    if not keep and self.prefix then
        run("rm -rf " .. shell_quote(self.prefix))
        self.prefix = nil
    end
end

---
-- Fetches several URLs at the same time (one curl process each).
-- Returns an array of { status = n, body = s, time = seconds } and the wall time.
function _M.concurrent(urls)
    local dir = make_temp_dir("rsh-curl")
    local parts = {}
    for i, url in ipairs(urls) do
        parts[#parts + 1] = string.format(
            "curl -s -m 30 -o %s -w '%%{http_code} %%{time_total}' %s > %s &",
            shell_quote(dir .. "/body" .. i), shell_quote(url), shell_quote(dir .. "/meta" .. i))
    end
    parts[#parts + 1] = "wait"
    local started = socket.gettime()
    run("sh -c " .. shell_quote(table.concat(parts, "\n")))
    local elapsed = socket.gettime() - started
    local results = {}
    for i = 1, #urls do
        local meta = read_file(dir .. "/meta" .. i) or ""
        local status, time = meta:match("^(%d+) ([%d%.]+)")
        results[i] = {
            status = tonumber(status),
            time = tonumber(time),
            body = read_file(dir .. "/body" .. i),
        }
    end
    run("rm -rf " .. shell_quote(dir))
    return results, elapsed
end

---
-- Starts spec/support/delay_proxy.lua in front of host:port, delaying every reply
-- chunk by delay_ms. Returns the proxy's port and a stop function.
-- With drop_after = n, each connection is closed when its client sends chunk n + 1.
function _M.delay_proxy(host, port, delay_ms, drop_after)
    local dir = make_temp_dir("rsh-proxy")
    local port_file = dir .. "/port"
    local luajit = os.getenv("LUAJIT") or "luajit"
    local cmd = string.format("%s %s %s %d %d %s %s > %s 2>&1 & echo $!",
        luajit, shell_quote(_M.root .. "/spec/support/delay_proxy.lua"), shell_quote(host), port,
        delay_ms, shell_quote(port_file), drop_after and tostring(drop_after) or "",
        shell_quote(dir .. "/log"))
    local pid = tonumber((run(cmd):match("%d+")))
    assert(pid, "could not start the delay proxy")
    local proxy_port
    local deadline = socket.gettime() + 5
    repeat
        proxy_port = tonumber(((read_file(port_file) or ""):match("^port (%d+)")))
        if proxy_port then break end
        sleep(20)
    until socket.gettime() > deadline
    local function stop()
        os.execute("kill " .. pid .. " 2>/dev/null")
        run("rm -rf " .. shell_quote(dir))
    end
    if not proxy_port then
        local log = read_file(dir .. "/log") or ""
        stop()
        error("delay proxy did not start: " .. log)
    end
    return proxy_port, stop
end

-- The test kit: globals (H) and locations that run a Lua chunk sent by the spec in
-- a given phase and report its results, serialised as a Lua literal.
--
--   local srv = nginx.start_kit({ vars = {...}, http = "...", init_worker = "..." })
--   local res = srv:run("content", "return H.storage(ARGS.cfg):get('n', 'k')", { cfg = {...} })
--   --> { ok = true, n = 2, [1] = ..., [2] = ..., tcp = <ngx.socket.tcp() calls>,
--         cosocket = <tcp + operations queued on auto-pipelines: > 0 when cosockets served>, phase = "content" }
--
-- Phases: content, access, rewrite (answer in the response); set (code in a header);
-- header_filter, body_filter, log, timer (answer stored in a shared dict, polled).
local KIT_INIT = [==[
    H = {}
    H.hiredis = require "resty.session.hiredis"
    H.cosocket = require "resty.session.hiredis.cosocket"
    -- counts ngx.socket.tcp() calls, and operations queued on an auto-pipeline
    -- (whose runner may hold its socket already), to tell which transport served a call
    H.tcp_calls = 0
    local tcp = ngx.socket.tcp
    ngx.socket.tcp = function(...)
        H.tcp_calls = H.tcp_calls + 1
        return tcp(...)
    end
    H.pipelined = 0
    local pipeline = require "resty.session.hiredis.pipeline"
    local submit = pipeline.submit
    pipeline.submit = function(...)
        H.pipelined = H.pipelined + 1
        return submit(...)
    end

    local function literal(v, depth)
        local t = type(v)
        if t == "string" then
            return string.format("%q", v)
        elseif t == "number" then
            if v ~= v then return "0/0" end
            if v == math.huge then return "math.huge" end
            if v == -math.huge then return "-math.huge" end
            return string.format("%.17g", v)
        elseif t == "boolean" or t == "nil" then
            return tostring(v)
        elseif t == "table" and (depth or 0) < 10 then
            local parts = {}
            for k, x in pairs(v) do
                parts[#parts + 1] = "[" .. literal(k, 1) .. "] = " .. literal(x, (depth or 0) + 1)
            end
            return "{ " .. table.concat(parts, ", ") .. " }"
        end
        return string.format("%q", "<" .. t .. ">")
    end
    H.literal = literal

    -- storages by name, kept across requests (the way applications hold them)
    H.storages = {}
    function H.storage(cfg, name)
        if name then
            local s = H.storages[name]
            if not s then
                s = H.hiredis.new(cfg)
                H.storages[name] = s
            end
            return s
        end
        return H.hiredis.new(cfg)
    end

    -- Waits (up to 2 s) until no auto-pipelining lane's runner runs: one stays
    -- 0.1 s after its last batch, and would carry the next spec's direct calls.
    function H.wait_pipelines_idle()
        local pipeline = require "resty.session.hiredis.pipeline"
        local deadline = ngx.now() + 2
        while not pipeline.idle() and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        assert(pipeline.idle(), "a lane's runner still runs after 2 s")
    end

    local function pack(...)
        return { n = select("#", ...), ... }
    end

    function H.run(src, args)
        local before, pipelined_before = H.tcp_calls, H.pipelined
        local phase = ngx.get_phase()
        local f, err = loadstring("local ARGS = ...\n" .. src, "=spec")
        local out
        if not f then
            out = { ok = false, n = 1, err }
        else
            local res = pack(pcall(f, args))
            out = { ok = res[1], n = res.n - 1 }
            for i = 2, res.n do out[i - 1] = res[i] end
        end
        out.tcp = H.tcp_calls - before
        out.cosocket = out.tcp + H.pipelined - pipelined_before
        out.phase = phase
        return literal(out)
    end

    function H.decode_args(s)
        if not s or s == "" then return {} end
        return assert(loadstring("return " .. ngx.decode_base64(s)))()
    end
]==]

local KIT_SERVER = [==[
        large_client_header_buffers 4 1m;
        client_body_buffer_size 4m;
        client_max_body_size 4m;
        location = /content {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.print(H.run(ngx.req.get_body_data(), H.decode_args(ngx.var.http_x_args_literal)))
            }
        }
        location = /access {
            access_by_lua_block {
                ngx.req.read_body()
                ngx.ctx.out = H.run(ngx.req.get_body_data(), H.decode_args(ngx.var.http_x_args_literal))
            }
            content_by_lua_block { ngx.print(ngx.ctx.out) }
        }
        location = /rewrite {
            rewrite_by_lua_block {
                ngx.req.read_body()
                ngx.ctx.out = H.run(ngx.req.get_body_data(), H.decode_args(ngx.var.http_x_args_literal))
            }
            content_by_lua_block { ngx.print(ngx.ctx.out) }
        }
        location = /set {
            set_by_lua_block $out {
                return H.run(ngx.decode_base64(ngx.var.http_x_code),
                                          H.decode_args(ngx.var.http_x_args_literal))
            }
            content_by_lua_block { ngx.print(ngx.var.out) }
        }
        location = /header_filter {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.ctx.src = ngx.req.get_body_data()
                ngx.say("queued")
            }
            header_filter_by_lua_block {
                ngx.shared.results:set(ngx.var.http_x_key,
                    H.run(ngx.ctx.src, H.decode_args(ngx.var.http_x_args_literal)))
            }
        }
        location = /body_filter {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.ctx.src = ngx.req.get_body_data()
                ngx.say("queued")
            }
            body_filter_by_lua_block {
                if ngx.arg[2] and not ngx.ctx.done then
                    ngx.ctx.done = true
                    ngx.shared.results:set(ngx.var.http_x_key,
                        H.run(ngx.ctx.src, H.decode_args(ngx.var.http_x_args_literal)))
                end
            }
        }
        location = /log {
            content_by_lua_block {
                ngx.req.read_body()
                ngx.ctx.src = ngx.req.get_body_data()
                ngx.say("queued")
            }
            log_by_lua_block {
                ngx.shared.results:set(ngx.var.http_x_key,
                    H.run(ngx.ctx.src, H.decode_args(ngx.var.http_x_args_literal)))
            }
        }
        location = /timer {
            content_by_lua_block {
                ngx.req.read_body()
                local src, key = ngx.req.get_body_data(), ngx.var.http_x_key
                local args = H.decode_args(ngx.var.http_x_args_literal)
                assert(ngx.timer.at(0, function()
                    ngx.shared.results:set(key, H.run(src, args))
                end))
                ngx.say("queued")
            }
        }
        location = /result {
            content_by_lua_block {
                local v = ngx.shared.results:get(ngx.var.arg_key)
                if v then ngx.print(v) else ngx.status = 404 end
            }
        }
]==]

_M.KIT_INIT = KIT_INIT

function _M.start_kit(opts)
    opts = opts or {}
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.init = KIT_INIT .. "\n" .. (opts.init or "")
    copy.server = KIT_SERVER .. "\n" .. (opts.server or "")
    -- expected failures (refused, timeouts) are results here, not log noise
    copy.http = "  lua_socket_log_errors off;\n" .. (opts.http or "")
    return _M.start(copy)
end

local function decode(text)
    local f = loadstring("return " .. text)
    assert(f, "undecodable answer: " .. tostring(text))
    return f()
end
_M.decode = decode

local ASYNC = { header_filter = true, body_filter = true, log = true, timer = true }
local key_counter = 0

local function base64(s)
    local mime = require "mime"
    return (mime.b64(s))
end

---
-- Runs `code` (a Lua chunk; `ARGS` holds args) in nginx in the given phase and
-- returns its decoded result table (see above). In the content, access and rewrite
-- phases, `request_headers` go with the request (e.g. a Cookie) and the response's
-- headers are the second result.
function server:run(phase, code, args, request_headers)
    local headers = { ["x-args-literal"] = base64(lua_literal(args or {})) }
    for k, v in pairs(request_headers or {}) do headers[k] = v end
    if phase == "set" then
        headers["x-code"] = base64(code)
        local body, status = self:request("/set", "GET", nil, headers)
        assert(status == 200, "HTTP " .. tostring(status) .. ": " .. tostring(body))
        return decode(body)
    end
    if not ASYNC[phase] then
        local body, status, response_headers = self:request("/" .. phase, "POST", code, headers)
        assert(status == 200, "HTTP " .. tostring(status) .. ": " .. tostring(body))
        return decode(body), response_headers
    end
    key_counter = key_counter + 1
    local key = string.format("r%d-%d", key_counter, math.random(1e9))
    headers["x-key"] = key
    local body, status = self:request("/" .. phase, "POST", code, headers)
    assert(status == 200, "HTTP " .. tostring(status) .. ": " .. tostring(body))
    return self:wait_result(key)
end

-- Polls /result?key= until the answer of an asynchronous phase is there.
function server:wait_result(key, timeout)
    local deadline = socket.gettime() + (timeout or 10)
    repeat
        local body, status = self:get("/result?key=" .. key)
        if status == 200 then
            return decode(body)
        end
        sleep(10)
    until socket.gettime() > deadline
    error("no result for " .. key .. "; error log:\n" .. self:error_log())
end

return _M
