-- Round trips per second through the native transport (plain LuaJIT), against
-- the redis-server that spec/support/with-servers.sh started.
--   luajit bench/native_bench.lua [iterations] [label pattern]
-- e.g. `luajit bench/native_bench.lua 20000 '^tcp [gs]et$'` runs only "tcp set" and
-- "tcp get" (make bench compares them with redis-benchmark -c 1).
package.path = "lua/?.lua;" .. package.path
package.cpath = (os.getenv("RSH_BUILD_DIR") or "build") .. "/lib/?.so;" .. package.cpath

local hiredis = require "resty.session.hiredis"
local socket = require "socket"

local port = assert(tonumber(os.getenv("HIREDIS_TEST_PORT")), "run under spec/support/with-servers.sh")
local iterations = tonumber(arg[1]) or 20000
local only = arg[2]
local value = string.rep("x", 512)
local meta = { audiences = { "aud" }, subjects = { "sub" } }

local function measure(label, storage, fn)
  if only and not label:find(only) then return end
  collectgarbage()
  local started = socket.gettime()
  for i = 1, iterations do
    local ok, err = fn(storage, i)
    if ok == nil and err then error(label .. ": " .. err) end
  end
  local elapsed = socket.gettime() - started
  print(string.format("%-34s %8d calls  %7.3f s  %9.0f calls/s  %6.1f us/call",
    label, iterations, elapsed, iterations / elapsed, elapsed / iterations * 1e6))
end

local now = os.time()
for _, target in ipairs({ { "tcp", { port = port } },
                          { "unix", { socket = os.getenv("HIREDIS_TEST_SOCKET") } } }) do
  local storage = hiredis.new(target[2])
  local name = "bench-" .. target[1]
  measure(target[1] .. " set", storage, function(s, i) return s:set(name, "k" .. i, value, 600) end)
  measure(target[1] .. " get", storage, function(s, i)
    local v, err = s:get(name, "k" .. i)
    if v == nil and not err then err = "missing k" .. i .. " (run set first)" end
    return v, err
  end)
  measure(target[1] .. " set old_key+metadata (MULTI)", storage, function(s, i)
    return s:set(name, "m" .. i, value, 600, now, "k" .. i, 10, meta)
  end)
  local ten = { audiences = { "aud" }, subjects = { "ten" } }
  local read_label = target[1] .. " read_metadata (10 sessions)"
  if not only or read_label:find(only) then
    for i = 1, 10 do assert(storage:set(name, "t" .. i, value, 600, now, nil, nil, ten)) end
  end
  measure(read_label, storage, function(s)
    return s:read_metadata(name, "aud", "ten", now)
  end)
  measure(target[1] .. " delete", storage, function(s, i) return s:delete(name, "k" .. i) end)
end
