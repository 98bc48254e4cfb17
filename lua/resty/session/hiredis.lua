---
-- Redis storage for lua-resty-session, backed by a C++ core (hiredis codec).
-- Drop-in for resty.session.redis: same configuration, methods, results and keys.
--
-- @module resty.session.hiredis

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"

local setmetatable = setmetatable
local rawget = rawget
local rawset = rawset
local pcall = pcall
local error = error

-- Private keys of each storage table.
local CORE = {}    -- the core instance: validation, the native transport, operations
local FIELDS = {}  -- plain-table mirror of the configuration (what reads return)
local VIEW = {}    -- what the cosocket driver reads per call

local serves = cosocket.serves
local cosocket_call = cosocket.call
local SET, GET, DELETE, READ_METADATA = cosocket.SET, cosocket.GET, cosocket.DELETE, cosocket.READ_METADATA

local _M = {
  _VERSION = core._VERSION,
}

-- set, get, delete, read_metadata: the same signatures and results whichever
-- transport serves the call. Cosockets wherever nginx allows them (rewrite,
-- access, content, timer, ssl_cert...), so the event loop never blocks, and the
-- core's native sockets everywhere else (init, init_worker, set, header/body
-- filters, log, plain LuaJIT); `transport = "native" | "cosocket"` forces one.
local methods = {}

function methods.set(self, ...)
  local view = rawget(self, VIEW)
  if serves(view) then
    return cosocket_call(rawget(self, CORE), view, SET, ...)
  end
  return rawget(self, CORE):set(...)
end

function methods.get(self, ...)
  local view = rawget(self, VIEW)
  if serves(view) then
    return cosocket_call(rawget(self, CORE), view, GET, ...)
  end
  return rawget(self, CORE):get(...)
end

function methods.delete(self, ...)
  local view = rawget(self, VIEW)
  if serves(view) then
    return cosocket_call(rawget(self, CORE), view, DELETE, ...)
  end
  return rawget(self, CORE):delete(...)
end

function methods.read_metadata(self, ...)
  local view = rawget(self, VIEW)
  if serves(view) then
    return cosocket_call(rawget(self, CORE), view, READ_METADATA, ...)
  end
  return rawget(self, CORE):read_metadata(...)
end

-- The mirror and the driver's view, from the core's validated configuration.
local function refresh(self, inst)
  local fields = inst:fields()
  rawset(self, FIELDS, fields)
  rawset(self, VIEW, cosocket.view(inst, fields))
end

local function set_field(inst, k, v)
  inst[k] = v
end

-- Instances are plain tables (lua-resty-session asserts `type(storage) == "table"`);
-- configuration fields are read from a plain mirror and written through the
-- core, which validates them; the mirror follows every accepted write.
local mt = {
  __index = function(self, k)
    local m = methods[k]
    if m then
      return m
    end
    return rawget(self, FIELDS)[k]
  end,
  __newindex = function(self, k, v)
    local inst = rawget(self, CORE)
    local ok, err = pcall(set_field, inst, k, v)
    if not ok then
      error(err, 2)
    end
    refresh(self, inst)
  end,
}

---
-- Creates a storage instance.
-- @tparam[opt] table configuration see README; invalid fields raise an error naming the field
function _M.new(configuration)
  local ok, inst = pcall(core.new, configuration)
  if not ok then
    error(inst, 2)
  end
  local self = setmetatable({}, mt)
  rawset(self, CORE, inst)
  refresh(self, inst)
  return self
end

return _M
