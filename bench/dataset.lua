-- The benchmark's data: sizes, names, and the Redis scripts that pre-populate the
-- sessions each operation reads, so that get, read_metadata and delete hit real data.
-- Used inside nginx (bench/handlers.lua: the constants) and by the driver
-- (bench/http_bench.lua: populate, through any `call(cmd, ...)` Redis client).
-- Keys follow the storage layout: <prefix>:<name>:<key> and <prefix>:<name>:<audience>:<subject>.
local _M = {
  PREFIX = "bench",
  VALUE_BYTES = 512,
  SESSIONS = 10000,   -- k*/m* sessions per implementation
  SUBJECTS = 1000,    -- metadata subjects (u* for set_meta/delete, r* for read_metadata)
  READ_SESSIONS = 4,  -- live sessions per r* subject
  TTL = 3600,
  STALE_TTL = 10,
}

function _M.value()
  return string.rep("v", _M.VALUE_BYTES)
end

-- Runs server side: one EVAL writes thousands of keys in milliseconds.
-- ARGV: kind, prefix:name, first, last, value, ttl, now, subjects, read_sessions
local POPULATE = [[
local kind, base, first, last = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local value, ttl, now = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local subjects, per_subject = tonumber(ARGV[8]), tonumber(ARGV[9])
local expiry = now + ttl
if kind == "read_metadata" then
  for j = first, last do
    local meta = base .. ":web:r" .. j
    for s = 1, per_subject do
      redis.call("ZADD", meta, expiry, "r" .. j .. "-" .. s)
    end
    redis.call("EXPIRE", meta, ttl)
  end
  return last - first + 1
end
local letter = kind == "set_meta" and "m" or (kind == "delete" and "d" or "k")
for i = first, last do
  local key = letter .. i
  redis.call("SET", base .. ":" .. key, value, "EX", ttl)
  if kind ~= "get" then
    local subject = "u" .. (i % subjects)
    redis.call("ZADD", base .. ":web:" .. subject, expiry, key)
    redis.call("ZADD", base .. ":api:" .. subject, expiry, key)
  end
end
return last - first + 1
]]

---
-- Writes what `op` reads for the session name `name` (an implementation's tag):
--   get, set, noop: k0..k(SESSIONS-1);  set_meta: m0..m(SESSIONS-1) in the u* metadata;
--   read_metadata: READ_SESSIONS live entries in each web:r* set;
--   delete: d<first>..d<last> (default 1..count) in the u* metadata.
-- `call(cmd, ...)` returns the reply or nil, err.
function _M.populate(call, op, name, now, first, last)
  local kind = op
  if op == "set" or op == "noop" then kind = "get" end
  if kind == "read_metadata" then
    first, last = first or 0, last or _M.SUBJECTS - 1
  elseif kind ~= "delete" then
    first, last = first or 0, last or _M.SESSIONS - 1
  end
  assert(first and last, "populate: delete needs a key range")
  local n, err = call("EVAL", POPULATE, 0, kind, _M.PREFIX .. ":" .. name, first, last,
                      _M.value(), _M.TTL, now, _M.SUBJECTS, _M.READ_SESSIONS)
  if not n then
    error("populate " .. op .. " for " .. name .. ": " .. tostring(err))
  end
  return n
end

return _M
