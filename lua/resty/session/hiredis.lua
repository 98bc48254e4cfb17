---
-- Redis storage for lua-resty-session, backed by a C++ core (hiredis codec).
-- Drop-in for resty.session.redis: same configuration, methods, results and keys.
--
-- @module resty.session.hiredis

local core = require "resty.session.hiredis.core"

local setmetatable = setmetatable
local rawget = rawget
local pcall = pcall
local error = error

local CORE = {}  -- private key: the core instance inside each storage table

local _M = {
  _VERSION = core._VERSION,
}

local methods = {}

local function set_field(core_instance, k, v)
  core_instance[k] = v
end

function methods:set(...)
  return self[CORE]:set(...)
end

function methods:get(...)
  return self[CORE]:get(...)
end

function methods:delete(...)
  return self[CORE]:delete(...)
end

function methods:read_metadata(...)
  return self[CORE]:read_metadata(...)
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
