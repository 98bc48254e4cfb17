-- A Redis Cluster being upgraded: Redis 7 nodes answer CLUSTER SHARDS, so calls
-- are built in the Redis 7.0 command forms (EXPIRE NX/GT/LT), and a Redis 6.0
-- master among them refuses those. The call is then built again in the script
-- forms, from its own arguments: a large value must go out whole the second
-- time too (the cosocket driver once trimmed a call's arguments after its first
-- round, and wrote an empty value). Its own 3 masters on free loopback ports: two
-- of the system's Redis >= 7.0 and one Redis 6.0 (make servers fetches it into
-- build-servers/bin/redis6; or HIREDIS_REDIS6_SERVER).
local epochs = require "cluster_epochs"
local files = require "files"
local raw = require "raw_redis"
local socket = require "socket"

local function version_of(bin)
    if not bin then return nil end
    local out, ok = files.run(files.shell_quote(bin) .. " --version")
    local major, minor = out:match("v=(%d+)%.(%d+)")
    if not ok or not major then return nil end
    return tonumber(major) * 100 + tonumber(minor)
end

local function first_with(candidates, accept)
    for _, bin in ipairs(candidates) do
        local v = version_of(bin)
        if v and accept(v) then return bin end
    end
end

local root = (require "nginx").root
local servers_dir = os.getenv("SERVERS_DIR")
if not servers_dir or servers_dir == "" then servers_dir = root .. "/build-servers" end
local old_candidates = { servers_dir .. "/bin/redis6/redis-server" }
if (os.getenv("HIREDIS_REDIS6_SERVER") or "") ~= "" then
    table.insert(old_candidates, 1, os.getenv("HIREDIS_REDIS6_SERVER"))
end
local OLD = first_with(old_candidates, function(v) return v >= 600 and v < 700 end)
local NEW = first_with({ "/usr/bin/redis-server", "redis-server" }, function(v) return v >= 700 end)

if not (OLD and NEW) then
    describe("cluster being upgraded", function()
        pending("needs a Redis 6.0 server (make servers SERVERS=redis6 fetches one into "
                .. "build-servers/bin/redis6; or HIREDIS_REDIS6_SERVER) and a Redis >= 7.0 one")
    end)
    return
end

local nginx = require "nginx"
local core = require "resty.session.hiredis.core"

local RANGES = { { 0, 5460 }, { 5461, 10922 }, { 10923, 16383 } }
local NAME = "session"

-- A subject whose web metadata key lands in the first range (the Redis 6.0 master's).
local function subject_on_old()
    for i = 1, 10000 do
        local subject = "u" .. i
        if core.key_slot(NAME .. ":web:" .. subject) <= RANGES[1][2] then return subject end
    end
end

-- A free port in 12000-19999 (below the kernel's ephemeral range, 32768+, and
-- spec/support/with-servers.sh's 20000-31999) whose cluster bus port (+10000) is free too.
local function cluster_port(taken)
    math.randomseed(math.floor(socket.gettime() * 1000) % 2147483647)
    local function free(port)
        local s = socket.bind("127.0.0.1", port)
        if not s then return false end
        s:close()
        return true
    end
    for _ = 1, 1000 do
        local port = math.random(12000, 19999)
        if not taken[port] and free(port) and free(port + 10000) then
            taken[port] = true
            return port
        end
    end
    error("no free port pair for a cluster node")
end

-- Polls check (nil: done, else why not) as the cluster kits do; fails with what and why.
local function poll(what, timeout_ms, check)
    local done, why = epochs.poll(check, timeout_ms)
    assert(done, what .. ": " .. tostring(why))
end

describe("cluster being upgraded (a Redis 6.0 master among Redis 7 nodes)", function()
    local dir, ports, srv = nil, {}, nil

    local function call(port, ...)
        local r, err = raw.connect(port, { timeout = 5 })
        if not r then return nil, err end
        local v, cerr = r:call(...)
        r:close()
        return v, cerr
    end

    lazy_setup(function()
        dir = files.temp_dir("rsh-upgrade")
        local bins = { OLD, NEW, NEW }  -- the Redis 6.0 master owns the first range
        local taken = {}
        for i = 1, 3 do
            local port = cluster_port(taken)
            ports[i] = port
            files.write_file(dir .. "/" .. port .. ".conf", table.concat({
                "port " .. port, "bind 127.0.0.1", "dir " .. dir, "daemonize yes",
                "pidfile " .. dir .. "/" .. port .. ".pid", "logfile " .. dir .. "/" .. port .. ".log",
                "cluster-enabled yes", "cluster-config-file nodes-" .. port .. ".conf",
                "save \"\"", "appendonly no",
            }, "\n") .. "\n")
            assert(files.sh(files.shell_quote(bins[i]) .. " " .. files.shell_quote(dir .. "/" .. port .. ".conf")))
        end
        for _, port in ipairs(ports) do
            poll("node " .. port .. " answers", 10000, function()
                local pong, err = call(port, "PING")
                return pong ~= "PONG" and (err or tostring(pong)) or nil
            end)
        end
        for i, port in ipairs(ports) do
            local slots = {}
            for slot = RANGES[i][1], RANGES[i][2] do slots[#slots + 1] = slot end
            assert(call(port, "CLUSTER", "ADDSLOTS", unpack(slots)))
        end
        for i = 2, 3 do assert(call(ports[1], "CLUSTER", "MEET", "127.0.0.1", ports[i])) end
        poll("cluster_state:ok on every node", 20000, function()
            for _, port in ipairs(ports) do
                local info = call(port, "CLUSTER", "INFO") or ""
                if not info:find("cluster_state:ok", 1, true) then return port .. " not ok yet" end
                local slots = call(port, "CLUSTER", "SLOTS")
                if type(slots) ~= "table" or #slots ~= 3 then return port .. " does not know all masters yet" end
            end
        end)
        srv = nginx.start_kit({ workers = 1, init = "H.cluster = require 'resty.session.hiredis.cluster'" })
    end)

    lazy_teardown(function()
        if srv then srv:shutdown() end
        for _, port in ipairs(ports) do
            local pid = dir and files.read_file(dir .. "/" .. port .. ".pid")
            if pid then files.sh("kill " .. tonumber(pid) .. " 2>/dev/null") end
        end
        if dir then files.sh("rm -rf " .. files.shell_quote(dir)) end
    end)

    it("builds a refused call again in the script forms with its whole value, over cosockets", function()
        local subject = subject_on_old()
        assert.is_truthy(subject)
        local res = srv:run("content", [[
            local s = H.cluster.new({ nodes = ARGS.nodes, connect_timeout = 2000, read_timeout = 2000 })
            local value = string.rep("0123456789abcdef", 8192)  -- 128 KiB, above what a call keeps
            local m = { audiences = { "web", "api" }, subjects = { ARGS.subject, ARGS.subject } }
            local before = H.hiredis.stats().cluster.retries
            local ok, err = s:set(ARGS.name, "k", value, 300, ARGS.now, "o", 10, m)
            local retries = H.hiredis.stats().cluster.retries - before
            local got = s:get(ARGS.name, "k")
            local listed = s:read_metadata(ARGS.name, "web", ARGS.subject, ARGS.now)
            return { ok = ok, err = err, retries = retries, same = got == value,
                     got_bytes = got and #got or -1, listed = listed and listed.k ~= nil }
        ]], {
            -- the Redis 7 nodes first: the slot map comes from CLUSTER SHARDS
            nodes = { { ip = "127.0.0.1", port = ports[2] }, { ip = "127.0.0.1", port = ports[3] },
                      { ip = "127.0.0.1", port = ports[1] } },
            name = NAME, subject = subject, now = os.time(),
        })
        assert.is_true(res.ok, tostring(res[1]))
        local r = res[1]
        assert.is_nil(r.err)
        assert.is_true(r.ok)
        assert.is_true(r.retries >= 1, "the call was not built again: " .. r.retries .. " retries")
        assert.are.equal(131072, r.got_bytes)
        assert.is_true(r.same)
        assert.is_true(r.listed)
    end)
end)
