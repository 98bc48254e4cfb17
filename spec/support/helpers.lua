-- Shared helpers for the busted specs: the servers that spec/support/with-servers.sh
-- started (HIREDIS_TEST_* variables), raw clients, unique names, connection ids.
local socket = require "socket"
local raw = require "raw_redis"

local _M = {}

local function env(name)
    local v = os.getenv(name)
    if v == "" then return nil end
    return v
end
_M.env = env

_M.host = env("HIREDIS_TEST_HOST") or "127.0.0.1"
_M.port = tonumber(env("HIREDIS_TEST_PORT"))
_M.socket = env("HIREDIS_TEST_SOCKET")
_M.pass_port = tonumber(env("HIREDIS_TEST_PASS_PORT"))
_M.password = env("HIREDIS_TEST_PASSWORD")
_M.acl_port = tonumber(env("HIREDIS_TEST_ACL_PORT"))
_M.acl_user = env("HIREDIS_TEST_ACL_USER")
_M.acl_password = env("HIREDIS_TEST_ACL_PASSWORD")
_M.acl_default_password = env("HIREDIS_TEST_ACL_DEFAULT_PASSWORD")
_M.ipv6 = env("HIREDIS_TEST_IPV6") == "1"
_M.tmp = env("HIREDIS_TEST_TMP")

if not _M.port then
    error("HIREDIS_TEST_PORT is not set: run the specs through spec/support/with-servers.sh "
          .. "(make test)", 0)
end

function _M.now()
    return socket.gettime()
end

function _M.sleep(ms)
    socket.sleep(ms / 1000)
end

-- Unique names, so that specs never see each other's keys or pools.
local counter = 0
function _M.unique(what)
    counter = counter + 1
    return string.format("%s-%d-%d", what or "u", os.time(), counter)
end

-- The metadata argument of set/delete: parallel arrays of audiences and subjects.
function _M.meta(audiences, subjects)
    return { audiences = audiences, subjects = subjects }
end

-- A raw client on the plain server (or the given port/socket and options).
function _M.raw(target, opts)
    return assert(raw.connect(target or _M.port, opts))
end

function _M.raw_pass()
    return _M.raw(_M.pass_port, { password = _M.password })
end

function _M.raw_acl()
    return _M.raw(_M.acl_port, { username = _M.acl_user, password = _M.acl_password })
end

-- The ACL rules that grant a user everything (keys, Pub/Sub channels, commands) on the
-- server of raw client r: "&*" is Redis 6.2's, which 6.0 refuses (make servers runs 6.0;
-- every channel is open to every user there). For ACL SETUSER, as its last arguments.
function _M.acl_everything(r)
    local info = assert(r:call("INFO", "server"))
    local major, minor = info:match("redis_version:(%d+)%.(%d+)")
    if tonumber(major) * 100 + tonumber(minor) < 602 then
        return "~*", "+@all"
    end
    return "~*", "&*", "+@all"
end

-- The version of the test servers (make servers runs the specs against several
-- releases), as major * 10000 + minor * 100 + patch, from the plain server's HELLO (as
-- the module reads it; Valkey's INFO says redis_version:7.2.4 whatever its release).
local server_version
function _M.server_version()
    if not server_version then
        local r = _M.raw()
        local hello = r:call("HELLO", "2")
        r:close()
        server_version = 0
        if type(hello) == "table" then
            for i = 1, #hello - 1, 2 do
                if hello[i] == "version" then
                    local major, minor, patch = tostring(hello[i + 1]):match("^(%d+)%.(%d+)%.?(%d*)")
                    server_version = tonumber(major) * 10000 + tonumber(minor) * 100 + (tonumber(patch) or 0)
                end
            end
        end
    end
    return server_version
end

-- it(name, fn) on servers of `version` (e.g. 70000) or later; on older ones the test
-- is pending with the reason (what it checks does not hold there: see README's
-- table of servers and versions).
function _M.it_since(version, why, name, fn)
    local spec_env = getfenv(2)  -- busted's it and pending live in the spec file's environment
    local have = _M.server_version()
    if have >= version then
        return spec_env.it(name, fn)
    end
    local function parts(v)
        return math.floor(v / 10000), math.floor(v / 100) % 100, v % 100
    end
    local major, minor = parts(version)
    local reason = string.format("needs Redis %d.%d (%s; the server is %d.%d.%d)", major, minor, why, parts(have))
    return spec_env.it(name, function() spec_env.pending("skipped: " .. reason) end)
end

-- Ids (as a sorted array of strings) of the normal connections other than the
-- raw client's own, optionally filtered (e.g. { db = "1", user = "app" }).
function _M.other_ids(r, filter)
    local me = tostring(assert(r:call("CLIENT", "ID")))
    local ids = {}
    for _, c in ipairs(assert(r:client_list("TYPE", "normal"))) do
        local keep = c.id ~= me
        for k, v in pairs(filter or {}) do
            if c[k] ~= v then keep = false end
        end
        if keep then ids[#ids + 1] = c.id end
    end
    table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
    return ids
end

-- Closes every normal connection but the raw client's own: pooled connections
-- of earlier specs go away, so other_ids() then sees only what the test opens.
function _M.kill_others(r)
    assert(r:call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    -- the server closes them right away; give the kernel a moment
    _M.wait_until(function() return #_M.other_ids(r) == 0 end, 2000)
end

-- Polls fn() every 20 ms until it returns true or timeout_ms passes.
function _M.wait_until(fn, timeout_ms)
    local deadline = _M.now() + (timeout_ms or 2000) / 1000
    repeat
        if fn() then return true end
        _M.sleep(20)
    until _M.now() > deadline
    return fn()
end

-- INFO commandstats: calls of one command (0 when never called).
function _M.command_calls(r, command)
    local info = assert(r:info("commandstats"))
    local stat = info["cmdstat_" .. command:lower()]
    if not stat then return 0 end
    return tonumber(stat:match("calls=(%d+)"))
end

-- Commands processed and connections accepted so far (INFO stats). The INFO
-- call itself counts once in the next reading.
function _M.server_counters(r)
    local info = assert(r:info("stats"))
    return tonumber(info.total_commands_processed), tonumber(info.total_connections_received)
end

-- A port on 127.0.0.1 with nothing listening (the nginx harness picks its ports so too).
_M.unused_port = require("nginx").free_port

-- A listener that accepts TCP connections (kernel backlog) and never answers.
function _M.silent_listener()
    local s = assert(socket.bind("127.0.0.1", 0, 32))
    local _, port = s:getsockname()
    return s, tonumber(port)
end

-- Starts spec/support/fake_server.lua in the background (a separate process,
-- so it can answer while a blocking call waits). Returns port, stop(), and
-- output() (what the server printed so far, e.g. "sent N" lines).
function _M.fake_server(mode)
    local out = os.tmpname()
    local cmd = string.format("luajit spec/support/fake_server.lua %s > %s 2>&1 & echo $!", mode, out)
    local p = assert(io.popen(cmd))
    local pid = p:read("*l")
    p:close()
    local port
    _M.wait_until(function()
        local f = io.open(out)
        if f then
            port = tonumber((f:read("*l") or ""):match("^port (%d+)"))
            f:close()
        end
        return port ~= nil
    end, 5000)
    assert(port, "fake server did not start")
    local function stop()
        os.execute("kill " .. tonumber(pid) .. " 2>/dev/null")
        os.remove(out)
    end
    local function output()
        local f = io.open(out)
        if not f then return "" end
        local text = f:read("*a")
        f:close()
        return text
    end
    return port, stop, output
end

-- Bytes a streaming fake server sent after its reply header on the connection it
-- finished last (it prints "sent N" once the client closed the connection).
function _M.fake_server_sent(output, timeout_ms)
    local sent
    _M.wait_until(function()
        sent = tonumber(output():match("sent (%d+)"))
        return sent ~= nil
    end, timeout_ms or 5000)
    return sent
end

-- A binary string of every byte value.
function _M.all_bytes()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    return table.concat(t)
end

return _M
