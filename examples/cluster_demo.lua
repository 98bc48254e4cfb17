-- A round trip through resty.session.hiredis on a Redis Cluster (routed by
-- `nodes`), printing what each call returns and on which master each Redis key
-- landed (the session key and its metadata key usually live on different nodes).
--
--   make demo   (starts a throwaway 3 + 3 cluster, runs this, stops it)
local hiredis = require "resty.session.hiredis"
local core = require "resty.session.hiredis.core"

local password = os.getenv("HIREDIS_TEST_CLUSTER_PASSWORD")
local nodes = {}
for port in (os.getenv("HIREDIS_TEST_CLUSTER_PORTS") or ""):gmatch("%d+") do
    nodes[#nodes + 1] = { ip = "127.0.0.1", port = tonumber(port) }
end
assert(#nodes > 0, "HIREDIS_TEST_CLUSTER_PORTS is not set: run through make demo")

local function step(title, a, b)
    local shown = type(a) == "table" and (function()
        local parts = {}
        for k, v in pairs(a) do parts[#parts + 1] = string.format("[%q] = %q", k, v) end
        return "{ " .. table.concat(parts, ", ") .. " }"
    end)() or (type(a) == "string" and string.format("%q", a) or tostring(a))
    print(string.format("%-58s -> %s%s", title, shown, b and (", " .. tostring(b)) or ""))
end

-- The master serving a key, asked with redis-cli (not through the module under demo).
local function master_of(key)
    local cmd = string.format("redis-cli --no-auth-warning -a %q -p %d cluster shards", password, nodes[1].port)
    local slot = core.key_slot(key)
    local p = io.popen(cmd)
    local text = p:read("*a")
    p:close()
    -- CLUSTER SHARDS in redis-cli's plain output: "slots", first, last, ..., "nodes", ...
    local lines = {}
    for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
    local i = 1
    while i <= #lines do
        if lines[i] == "slots" then
            local ranges, j = {}, i + 1
            while tonumber(lines[j]) do ranges[#ranges + 1] = tonumber(lines[j]); j = j + 1 end
            local port, role
            for k = j, math.min(j + 40, #lines) do
                if lines[k] == "slots" then break end
                if lines[k] == "port" then port = lines[k + 1] end
                if lines[k] == "role" then role = lines[k + 1] end
                if role == "master" and port then break end
                if lines[k] == "role" then port = nil; role = nil end
            end
            for r = 1, #ranges, 2 do
                if slot >= ranges[r] and slot <= ranges[r + 1] then
                    return string.format("slot %5d on 127.0.0.1:%s", slot, tostring(port))
                end
            end
            i = j
        else
            i = i + 1
        end
    end
    return "slot " .. slot
end

print("== Redis Cluster: 3 masters + 3 replicas, seeds " .. #nodes .. " nodes (native transport)")
local storage = hiredis.new({ nodes = nodes, password = password, prefix = "demo" })
local now = os.time()
local meta = { audiences = { "web" }, subjects = { "alice" } }
step("set(session, first, ..., metadata web/alice)",
     storage:set("session", "first", "data-1", 3600, now, nil, nil, meta))
step("set(session, second, ..., old_key = first)",
     storage:set("session", "second", "data-2", 3600, now, "first", 10, meta))
step("get(session, second)", storage:get("session", "second"))
step("read_metadata(session, web, alice)", storage:read_metadata("session", "web", "alice", now))
print("   demo:session:second       " .. master_of("demo:session:second"))
print("   demo:session:web:alice    " .. master_of("demo:session:web:alice"))
print("   demo:session:first        " .. master_of("demo:session:first") .. " (TTL lowered to 10 s)")
step("delete(session, second, now, metadata)", storage:delete("session", "second", now, meta))
step("get(session, second)", storage:get("session", "second"))

local tagged = hiredis.new({ nodes = nodes, password = password, prefix = "{demo}" })
step("hash-tagged prefix {demo}: set with metadata (one MULTI/EXEC)",
     tagged:set("session", "third", "data-3", 3600, now, nil, nil, meta))
print("   {demo}:session:third      " .. master_of("{demo}:session:third"))
print("   {demo}:session:web:alice  " .. master_of("{demo}:session:web:alice"))
