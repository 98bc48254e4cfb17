-- A browser's cookie jar, enough for lua-resty-session's cookies: takes the
-- Set-Cookie headers of a response (LuaSocket joins several with ", "), gives the
-- Cookie header of the next request. An empty value or a past Expires removes one.
local _M = {}

local jar = {}
jar.__index = jar

function _M.new()
    return setmetatable({ values = {} }, jar)
end

-- The cookies of a Set-Cookie header that LuaSocket joined with ", " (the comma in
-- an Expires date is not a separator).
local function each_set_cookie(header)
    local out = {}
    header = header:gsub("([Ee]xpires=%a%a%a), ", "%1 ")
    for part in header:gmatch("[^,]+") do
        out[#out + 1] = (part:gsub("^%s+", ""))
    end
    return out
end

function jar:update(headers)
    local header = headers and headers["set-cookie"]
    if not header then return self end
    for _, cookie in ipairs(each_set_cookie(header)) do
        local name, value = cookie:match("^([^=]+)=([^;]*)")
        local expired = cookie:find("Expires=Thu 01 Jan 1970", 1, true)
        if value == "" or expired then
            self.values[name] = nil
        else
            self.values[name] = value
        end
    end
    return self
end

function jar:get(name)
    return self.values[name]
end

function jar:set(name, value)
    self.values[name] = value
    return self
end

-- { cookie = "a=1; b=2" } for the next request (nil when the jar is empty).
function jar:headers()
    local parts = {}
    for name, value in pairs(self.values) do
        parts[#parts + 1] = name .. "=" .. value
    end
    if #parts == 0 then return {} end
    table.sort(parts)
    return { cookie = table.concat(parts, "; ") }
end

function jar:copy()
    local c = _M.new()
    for k, v in pairs(self.values) do c.values[k] = v end
    return c
end

return _M
