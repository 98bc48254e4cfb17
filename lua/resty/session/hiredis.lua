---
-- Redis storage for lua-resty-session, backed by a C++ core (hiredis codec).
-- Drop-in for resty.session.redis: same configuration, methods, results and keys.
--
-- @module resty.session.hiredis

local core = require "resty.session.hiredis.core"
local cosocket = require "resty.session.hiredis.cosocket"

local setmetatable = setmetatable
local rawget = rawget
local pcall = pcall
local error = error
local ipairs = ipairs

local CORE = {}  -- private key: the core instance inside each storage table

local _M = {
  _VERSION = core._VERSION,
}

local methods = {}

local function set_field(core_instance, k, v)
  core_instance[k] = v
end

local cosocket_available = cosocket.available
local cosocket_call = cosocket.call

-- Which transport serves a call: `transport = "native" | "cosocket"` forces one;
-- otherwise cosockets wherever nginx allows them (rewrite, access, content, timer,
-- ssl_cert...), so the event loop never blocks, and the core's native sockets
-- everywhere else (init, init_worker, set, header/body filters, log, plain LuaJIT).
local function use_cosocket(inst)
  local transport = inst.transport
  if transport == "cosocket" then
    return true
  elseif transport == "native" then
    return false
  end
  return cosocket_available()
end

-- set, get, delete, read_metadata: the same signatures and results whichever
-- transport serves the call.
for _, method in ipairs({ "set", "get", "delete", "read_metadata" }) do
  methods[method] = function(self, ...)
    local inst = self[CORE]
    if use_cosocket(inst) then
      return cosocket_call(inst, method, ...)
    end
    return inst[method](inst, ...)
  end
end

-- Instances are plain tables (lua-resty-session asserts `type(storage) == "table"`);
-- configuration fields read and write through to the core, which validates them.
local mt = {
  __index = function(self, k)
    local m = methods[k]
    if m then
      return m
    end
    return rawget(self, CORE)[k]
  end,
  __newindex = function(self, k, v)
    local ok, err = pcall(set_field, rawget(self, CORE), k, v)
    if not ok then
      error(err, 2)
    end
  end,
}

---
-- Creates a storage instance.
-- @tparam[opt] table configuration see README; invalid fields raise an error naming the field
function _M.new(configuration)
  local ok, instance = pcall(core.new, configuration)
  if not ok then
    error(instance, 2)
  end
  return setmetatable({ [CORE] = instance }, mt)
end

return _M
