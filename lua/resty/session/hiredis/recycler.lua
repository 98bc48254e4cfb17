---
-- A bounded stack of reusable objects (internal): the cosocket driver's
-- operations and the pipeline's waiting records are reused between calls
-- rather than allocated per call.
--
-- @module resty.session.hiredis.recycler
-- @local

local _M = {}

---
-- @tparam function make creates an object when none is free
-- @tparam number max how many free objects are kept at most
-- @treturn function take() -> an object
-- @treturn function give(object) hands one back
function _M.new(make, max)
  local free, count = {}, 0

  local function take()
    if count == 0 then
      return make()
    end
    local object = free[count]
    free[count] = nil
    count = count - 1
    return object
  end

  local function give(object)
    if count < max then
      count = count + 1
      free[count] = object
    end
  end

  return take, give
end

return _M
