-- A round trip through resty.session.hiredis, printing what each call returns
-- and what Redis holds afterwards (raw keys, TTLs, metadata zsets).
--
--   make demo        (starts a throwaway redis-server, runs this, stops it)
--   luajit examples/demo.lua [port]   with package.path/cpath at lua/ and build/lib/
local hiredis = require "resty.session.hiredis"

local host = os.getenv("HIREDIS_TEST_HOST") or "127.0.0.1"
local port = tonumber(arg[1] or os.getenv("HIREDIS_TEST_PORT") or 6379)

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    if type(v) ~= "table" then return tostring(v) end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = string.format("[%q] = %s", k, show(v[k])) end
    return "{ " .. table.concat(parts, ", ") .. " }"
end

local function step(title, ...)
    local n = select("#", ...)
    local out = {}
    for i = 1, math.max(n, 1) do out[i] = show((select(i, ...))) end
    print(string.format("%-58s -> %s", title, table.concat(out, ", ")))
    return ...
end

-- What Redis sees, through redis-cli (not through the module under demo).
local function redis_cli(...)
    local args = { "redis-cli", "-h", host, "-p", tostring(port) }
    for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. tostring(a):gsub("'", "'\\''") .. "'" end
    local p = assert(io.popen(table.concat(args, " ") .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end

local function dump_redis(pattern)
    print("  redis keys matching " .. pattern .. ":")
    local keys = {}
    for key in redis_cli("--scan", "--pattern", pattern):gmatch("[^\n]+") do keys[#keys + 1] = key end
    table.sort(keys)
    if #keys == 0 then print("    (none)") end
    for _, key in ipairs(keys) do
        local kind = redis_cli("TYPE", key)
        local line = string.format("    %-44s %-6s TTL %s", key, kind, redis_cli("TTL", key))
        if kind == "zset" then
            line = line .. "  members: " .. redis_cli("ZRANGE", key, 0, -1, "WITHSCORES"):gsub("\n", " ")
        elseif kind == "string" then
            line = line .. "  value: " .. redis_cli("GET", key)
        end
        print(line)
    end
end

local function must(cond, what)
    if not cond then
        io.stderr:write("demo: unexpected result: ", what, "\n")
        os.exit(1)
    end
end

print(string.format("resty.session.hiredis %s against redis %s:%d\n", hiredis._VERSION or "?", host, port))

local store = hiredis.new({ host = host, port = port, prefix = "demo" })
local now = os.time()
local metadata = { audiences = { "default" }, subjects = { "alice@example.com" } }

must(step("set(session, key-1, payload-1, ttl 3600, metadata)",
    store:set("session", "key-1", "payload-1", 3600, now, nil, nil, metadata)) == true, "set key-1")
must(step("set(session, key-2, payload-2, ttl 600, metadata)",
    store:set("session", "key-2", "payload-2", 600, now, nil, nil, metadata)) == true, "set key-2")
dump_redis("demo:session:*")

must(step("get(session, key-1)", store:get("session", "key-1")) == "payload-1", "get key-1")

local sessions = step("read_metadata(session, default, alice@example.com)",
    store:read_metadata("session", "default", "alice@example.com", now))
must(sessions and sessions["key-1"] and sessions["key-2"], "two sessions listed")

must(step("delete(session, key-1, metadata)",
    store:delete("session", "key-1", now, metadata)) == true, "delete key-1")

sessions = step("read_metadata(session, default, alice@example.com)",
    store:read_metadata("session", "default", "alice@example.com", now))
must(sessions and sessions["key-1"] == nil and sessions["key-2"], "one session left")

must(step("get(session, key-1) after delete", store:get("session", "key-1")) == nil, "key-1 gone")
dump_redis("demo:session:*")

print("\ndemo: done")
