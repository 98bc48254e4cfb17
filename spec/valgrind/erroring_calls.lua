-- Many calls that fail, for valgrind under PUC Lua 5.1 (make leak-lua51). PUC Lua
-- raises errors with longjmp, which skips C++ destructors: a Lua API call that raises
-- while a C++ object is alive leaks it. After these calls valgrind must report
-- "definitely lost: 0 bytes". Needs no Redis: every call fails before anything is sent.
--
--   lua5.1 spec/valgrind/erroring_calls.lua [rounds]     (package paths at lua/ and build/lib/)
local hiredis = require "resty.session.hiredis"
local core = require "resty.session.hiredis.core"

local rounds = tonumber(arg and arg[1]) or 20
local long = string.rep("x", 200)  -- longer than any small-string buffer: a leak shows
local now = os.time()

-- metadata whose field reads raise: at once, or once audiences (a real field) was read
local function raise() error("metadata read raises " .. long) end
local raising = setmetatable({}, { __index = raise })
local raising_late = setmetatable({ audiences = { long, long } }, { __index = raise })

local calls = 0

local function must_raise(what, f, ...)
  calls = calls + 1
  local ok, err = pcall(f, ...)
  assert(not ok, what .. ": did not raise")
  assert(type(err) == "string", what .. ": error is not a string")
end

local function must_fail(what, ...)
  calls = calls + 1
  local result, err = ...
  assert(result == nil and type(err) == "string", what .. ": expected nil, err, got "
         .. tostring(result) .. ", " .. tostring(err))
end

for _ = 1, rounds do
  -- new() with bad configurations, through the module and the core
  for _, new in ipairs({ hiredis.new, core.new }) do
    must_raise("not a table", new, long)
    must_raise("port", new, { prefix = long, suffix = long, port = "not a port" })
    must_raise("host", new, { prefix = long, host = "" })
    must_raise("pool_size", new, { password = long, pool_size = 0 })
    must_raise("transport", new, { prefix = long, transport = long })
    must_raise("client cert pair", new, { prefix = long, ssl_client_cert = long })
    must_raise("timeout", new, { prefix = long, read_timeout = -1 })
  end

  -- bad field writes
  local storage = hiredis.new({ prefix = long, suffix = long, password = long })
  local inst = core.new({ prefix = long, suffix = long })
  for _, target in ipairs({ storage, inst }) do
    must_raise("port write", function() target.port = long end)
    must_raise("unknown field", function() target[long] = 1 end)
    must_raise("host write", function() target.host = "" end)
    must_raise("socket write", function() target.socket = 1 end)
  end

  -- bad method arguments: nil, err before anything is sent
  must_fail("set ttl", storage:set(long, long, long, -1))
  must_fail("set name", storage:set(1, long, long, 10))
  must_fail("set metadata", storage:set(long, long, long, 10, now, nil, nil, { audiences = { long }, subjects = {} }))
  must_fail("set metadata type",
            storage:set(long, long, long, 10, now, nil, nil, { audiences = { 1 }, subjects = { long } }))
  -- the caller's own error, raised as upstream's `metadata.audiences` would
  must_raise("set raising metadata", storage.set, storage, long, long, long, 10, now, nil, nil, raising)
  must_raise("set late raising metadata", storage.set, storage, long, long, long, 10, now, nil, nil, raising_late)
  must_fail("set old key", storage:set(long, long, long, 10, now, long, -1))
  must_fail("get key", storage:get(long, nil))
  must_fail("delete time", storage:delete(long, long, "now"))
  must_raise("delete raising metadata", storage.delete, storage, long, long, now, raising)
  must_raise("delete late raising metadata", storage.delete, storage, long, long, raising_late)
  must_fail("read_metadata", storage:read_metadata(long, long, nil, now))

  -- the cosocket driver's entry points (op:start(inst, method_id, server_version, ...))
  local op = core.operation()
  must_fail("start", op:start(inst, 1, 0, long, long, long, 0))
  must_fail("start method", op:start(inst, 99, 0, long, long))
  must_raise("start raising metadata", op.start, op, inst, 1, 0, long, long, long, 10, now, nil, nil, raising)
  must_raise("start late raising metadata", op.start, op, inst, 3, 0, long, long, now, raising_late)
  must_raise("wrong self", inst.set, long)
end

collectgarbage()
collectgarbage()
print(string.format("erroring_calls: %d erroring calls on %s", calls, _VERSION))
