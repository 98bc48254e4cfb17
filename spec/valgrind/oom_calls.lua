-- Every allocation of a call made to fail in turn, for tests/lua51/oom_host under
-- valgrind (make leak-lua51). A failed allocation makes PUC Lua raise "not enough
-- memory" with longjmp, which runs no C++ destructors: any Lua call that allocates
-- while a C++ object of the module is alive shows up as "definitely lost".
-- With HIREDIS_TEST_PORT (spec/support/with-servers.sh) the native transport's
-- results are included.
--
--   oom_host spec/valgrind/oom_calls.lua     (package paths at lua/ and build/lib/)
-- luacheck: globals fail_after oom_fired
local hiredis = require "resty.session.hiredis"
local core = require "resty.session.hiredis.core"

local long = string.rep("y", 300)
local GET = 2

-- Runs f with its 1st, 2nd, ... allocation failing until a run needs fewer.
local sweeps, failures = 0, 0
local function sweep(name, f)
  for n = 1, 100000 do
    fail_after(n)
    local ok = pcall(f)
    local fired = oom_fired()
    fail_after(0)
    if not fired then
      assert(ok, name .. ": fails without an allocation failure")
      sweeps = sweeps + 1
      return
    end
    failures = failures + 1
  end
  error(name .. ": never completes")
end

local config = { prefix = long, suffix = long, password = long, socket = "/nonexistent/" .. long }
sweep("core.new", function() return core.new(config) end)
sweep("hiredis.new", function() return hiredis.new(config) end)
sweep("bad core.new", function() assert(not pcall(core.new, { prefix = long, port = long })) end)

local inst = core.new(config)
sweep("field write", function() inst.pool = long end)
sweep("bad field write", function() assert(not pcall(function() inst.port = long end)) end)
sweep("fields", function() return inst:fields() end)
sweep("cosocket_target", function() return inst:cosocket_target() end)

local op = core.operation()
sweep("op:start", function() assert(op:start(inst, GET, 0, long, long)) end)
sweep("inst:load_probe", function() assert(inst:load_probe(op)) end)
sweep("op:prefix_handshake", function()
  assert(op:start(inst, GET, 0, long, long))
  assert(op:prefix_handshake(inst, true))
end)
sweep("bad op:start", function() assert(not op:start(inst, GET, 0, long, 1)) end)
sweep("bad method call", function() assert(not inst:set(long, long, long, -1)) end)

local port = tonumber(os.getenv("HIREDIS_TEST_PORT"))
if port then
  local storage = hiredis.new({ port = port, prefix = "oom", pool_size = 1 })
  local value = string.rep("v", 5000)
  local metadata = { audiences = { long, long .. "2" }, subjects = { long, long } }
  assert(storage:set("s", long, value, 60, os.time(), nil, nil, metadata))
  sweep("native get", function() assert(storage:get("s", long) == value) end)
  local probed = core.new({ port = port, prefix = long, pool_size = 1 })
  sweep("native probe", function() assert(probed:probe()) end)
  sweep("native read_metadata", function() assert(storage:read_metadata("s", long, long, os.time())) end)
  sweep("native set", function() assert(storage:set("s", long, value, 60)) end)
  assert(storage:delete("s", long, os.time(), metadata))
else
  print("oom_calls: no HIREDIS_TEST_PORT, native transport calls skipped")
end

collectgarbage()
collectgarbage()
print(string.format("oom_calls: %d calls, %d allocation failures injected, on %s", sweeps, failures, _VERSION))
