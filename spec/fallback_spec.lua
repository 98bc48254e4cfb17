-- Redis < 7 command forms, exercised against a real server: one started with
-- HELLO renamed away answers it like Redis 5 ("unknown command"), so the server
-- version stays unknown, which selects the forms for Redis < 7: upstream's
-- sequence for old_key (TTL first, plain EXPIRE) instead of EXPIRE ... LT, and a
-- script instead of EXPIRE ... NX / GT for the metadata set's TTL.
local helpers = require "helpers"
local hiredis = require "resty.session.hiredis"

local function start_server_without_hello()
  local dir = assert(helpers.tmp, "HIREDIS_TEST_TMP is not set")
  local port = helpers.unused_port()
  local pidfile = dir .. "/nohello-" .. port .. ".pid"
  assert(os.execute(string.format(
    "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %q " ..
    "--daemonize yes --pidfile %q --rename-command HELLO '' >/dev/null", port, dir, pidfile)) == 0)
  assert(helpers.wait_until(function()
    local r = require("raw_redis").connect(port)
    if r then r:close() return true end
  end, 5000), "redis-server without HELLO did not start")
  return port, pidfile
end

describe("server version unknown (HELLO refused): Redis < 7 command forms", function()
  local port, pidfile, r, storage, name

  setup(function()
    port, pidfile = start_server_without_hello()
  end)

  teardown(function()
    os.execute(string.format("kill $(cat %q) 2>/dev/null", pidfile))
  end)

  before_each(function()
    r = helpers.raw(port)
    name = helpers.unique("fb")
    storage = hiredis.new({ port = port })
  end)

  after_each(function()
    r:close()
    collectgarbage()
  end)

  it("asks TTL first and lowers the old key's TTL with a plain EXPIRE", function()
    local now = os.time()
    assert.is_true(storage:set(name, "old", "v1", 3600, now))
    local ttl_calls = helpers.command_calls(r, "ttl")
    assert.is_true(storage:set(name, "new", "v2", 3600, now, "old", 10))
    assert.equal(ttl_calls + 1, helpers.command_calls(r, "ttl"))
    local old_ttl = r:call("TTL", name .. ":old")
    assert.is_true(old_ttl > 0 and old_ttl <= 10, "old key ttl " .. tostring(old_ttl))
    assert.equal("v2", storage:get(name, "new"))
  end)

  it("never gives stale_ttl to an old key without TTL (upstream's behaviour on Redis < 7)", function()
    assert(r:call("SET", name .. ":old", "v1"))
    assert.is_true(storage:set(name, "new", "v2", 3600, os.time(), "old", 10))
    assert.equal(-1, r:call("TTL", name .. ":old"))
  end)

  it("extends the metadata TTL by script, never shortens it (a shorter session keeps the longer TTL)", function()
    local now = os.time()
    local meta = { audiences = { "aud" }, subjects = { "sub" } }
    local evals = helpers.command_calls(r, "eval")
    assert.is_true(storage:set(name, "k1", "v", 100, now, nil, nil, meta))
    local ttl = r:call("TTL", name .. ":aud:sub")
    assert.is_true(ttl > 90 and ttl <= 100, "metadata ttl " .. tostring(ttl))
    assert.is_true(storage:set(name, "k2", "v", 3600, now, nil, nil, meta))
    ttl = r:call("TTL", name .. ":aud:sub")
    assert.is_true(ttl > 3500 and ttl <= 3600, "metadata ttl " .. tostring(ttl))
    assert.is_true(storage:set(name, "k3", "v", 100, now, nil, nil, meta))
    ttl = r:call("TTL", name .. ":aud:sub")
    assert.is_true(ttl > 3500 and ttl <= 3600, "metadata ttl " .. tostring(ttl))
    assert.equal(evals + 3, helpers.command_calls(r, "eval"))
    assert.is_true(storage:set(name, "k1", "v", 100, now, nil, nil, meta))
    local members = storage:read_metadata(name, "aud", "sub", now)
    assert.equal(tostring(now + 100), members.k1)
    assert.equal(tostring(now + 3600), members.k2)
    assert.equal(tostring(now + 100), members.k3)
  end)
end)

describe("server version known (Redis >= 7)", function()
  local r, storage, name

  before_each(function()
    r = helpers.raw()
    name = helpers.unique("v7")
    storage = hiredis.new({ port = helpers.port })
  end)

  after_each(function()
    r:close()
    collectgarbage()
  end)

  helpers.it_since(70000, "EXPIRE's NX, GT and LT", "sends set with old_key in one round trip, without TTL", function()
    local now = os.time()
    assert.is_true(storage:set(name, "old", "v1", 3600, now))
    local ttl_calls = helpers.command_calls(r, "ttl")
    assert.is_true(storage:set(name, "new", "v2", 3600, now, "old", 10))
    assert.equal(ttl_calls, helpers.command_calls(r, "ttl"))
    local old_ttl = r:call("TTL", name .. ":old")
    assert.is_true(old_ttl > 0 and old_ttl <= 10)
  end)

  helpers.it_since(70000, "EXPIRE's NX, GT and LT", "never shortens the metadata TTL (EXPIRE NX + GT)", function()
    local now = os.time()
    local meta = { audiences = { "aud" }, subjects = { "sub" } }
    assert.is_true(storage:set(name, "k1", "v", 3600, now, nil, nil, meta))
    assert.is_true(storage:set(name, "k2", "v", 100, now, nil, nil, meta))
    assert.is_true(r:call("TTL", name .. ":aud:sub") > 3000)
  end)
end)
