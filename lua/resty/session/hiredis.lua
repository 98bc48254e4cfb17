---
-- Redis storage for lua-resty-session, backed by a C++ core (hiredis codec).
-- Drop-in for resty.session.redis: same configuration, methods, results and keys.
--
-- @module resty.session.hiredis

local core = require "resty.session.hiredis.core"

local setmetatable = setmetatable
local rawget = rawget

local CORE = {}  -- private key: the core instance inside each storage table

local _M = {
  _VERSION = core._VERSION,
}

local methods = {}

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
    rawget(self, CORE)[k] = v
  end,
}

---
-- Creates a storage instance.
-- @tparam[opt] table configuration see README; invalid fields raise an error naming the field
function _M.new(configuration)
  return setmetatable({ [CORE] = core.new(configuration) }, mt)
end

return _M
