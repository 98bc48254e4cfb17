-- Where the real lua-resty-session (and what it needs) comes from, for the specs
-- that run it inside nginx. Never copied into this repository:
--
--   UPSTREAM_LUA_PATH   a Lua path ("dir/?.lua;dir/?/init.lua") or directories
--                       (";"-separated; "dir" means "dir/?.lua;dir/?/init.lua"),
--                       e.g. a LuaRocks tree's share/lua/5.1 after
--                       `luarocks install lua-resty-session`
--   otherwise           ../shared/third_party/<library>/lib next to the repository
--                       (see that directory's README)
--
--   local upstream = require "upstream"
--   upstream.lua_path      -- absolute Lua path, or nil
--   upstream.missing       -- why the session specs skip (nil when they run)
--   upstream.redis_missing -- why the specs needing upstream's resty.session.redis skip
--   upstream.it(...)       -- `it`, or a visible `pending` with the reason
local nginx = require "nginx"

local _M = {}

-- The third-party libraries the specs load, by directory under ../shared/third_party.
local THIRD_PARTY = {
    "lua-resty-session", "lua-resty-openssl", "lua-ffi-zlib", "lua-resty-redis",
    "lua-resty-string",
}

local function absolute(path)
    if path:sub(1, 1) == "/" then return path end
    return nginx.root .. "/" .. path
end

local function to_lua_path(spec)
    local parts = {}
    for entry in spec:gmatch("[^;]+") do
        if entry:find("?", 1, true) then
            parts[#parts + 1] = absolute(entry)
        else
            local dir = absolute(entry):gsub("/+$", "")
            parts[#parts + 1] = dir .. "/?.lua"
            parts[#parts + 1] = dir .. "/?/init.lua"
        end
    end
    return table.concat(parts, ";")
end

local function default_lua_path()
    local parts = {}
    for _, dir in ipairs(THIRD_PARTY) do
        parts[#parts + 1] = "../shared/third_party/" .. dir .. "/lib"
    end
    return to_lua_path(table.concat(parts, ";"))
end

local read_file = require("files").read_file

-- The file `module` loads from on `path`, or nil.
local function find(module, path)
    local name = module:gsub("%.", "/")
    for template in path:gmatch("[^;]+") do
        local file = template:gsub("%?", name)
        local f = io.open(file, "rb")
        if f then
            f:close()
            return file
        end
    end
end

local source = os.getenv("UPSTREAM_LUA_PATH")
if source and source ~= "" then
    _M.origin = "UPSTREAM_LUA_PATH"
    _M.lua_path = to_lua_path(source)
else
    _M.origin = "../shared/third_party"
    _M.lua_path = default_lua_path()
end

local HOW = "set UPSTREAM_LUA_PATH to where `luarocks install lua-resty-session` put it, "
    .. "or provide ../shared/third_party (see README)"

for _, module in ipairs({ "resty.session", "resty.openssl", "ffi-zlib" }) do
    if not find(module, _M.lua_path) then
        _M.missing = string.format("%s not found in %s (%s)", module, _M.origin, HOW)
        break
    end
end

-- lua-resty-session encodes with cjson.safe (built into OpenResty; Debian: lua-cjson).
if not _M.missing and not pcall(require, "cjson.safe") then
    _M.missing = "cjson.safe not found (apt-get install lua-cjson; OpenResty has it built in)"
end

-- Upstream's redis storage needs a lua-resty-redis with set_timeouts (>= 0.28):
-- Debian's lua-nginx-redis (0.27, module nginx.redis) is too old.
if _M.missing then
    _M.redis_missing = _M.missing
else
    local redis = find("resty.redis", _M.lua_path)
    if not redis then
        _M.redis_missing = "resty.redis (lua-resty-redis) not found in " .. _M.origin
    elseif not (read_file(redis) or ""):find("set_timeouts", 1, true) then
        _M.redis_missing = "resty.redis in " .. redis .. " has no set_timeouts (lua-resty-redis < 0.28)"
    end
end

if _M.missing then
    io.stderr:write("upstream: lua-resty-session specs skipped: ", _M.missing, "\n")
elseif _M.redis_missing then
    io.stderr:write("upstream: resty.session.redis specs skipped: ", _M.redis_missing, "\n")
end

-- Another library of ../shared/third_party (its directory there, e.g. "nginx-lua-prometheus"):
-- from UPSTREAM_LUA_PATH when that is set, else from ../shared/third_party/<dir>/lib, else
-- from the Lua path busted runs with (where `luarocks install <rock>` puts it). Returns an
-- absolute Lua path entry that loads all of `modules`, or nil and why not (`rock`: what to
-- install).
function _M.library(dir, modules, rock)
    rock = rock or dir
    local candidates = {}
    if _M.origin == "UPSTREAM_LUA_PATH" then
        candidates[1] = { _M.lua_path, "UPSTREAM_LUA_PATH" }
    else
        candidates[1] = { to_lua_path("../shared/third_party/" .. dir .. "/lib"), "../shared/third_party/" .. dir }
        candidates[2] = { package.path, "the Lua path" }
    end
    for _, c in ipairs(candidates) do
        -- one template of the path that loads every module: nginx gets just that one
        -- (";;" and relative entries would mean something else to it)
        for template in c[1]:gmatch("[^;]+") do
            local all = template:find("?", 1, true) ~= nil
            for _, module in ipairs(modules) do
                if all and not find(module, template) then all = false end
            end
            if all then return absolute(template) end
        end
    end
    local where = {}
    for _, c in ipairs(candidates) do where[#where + 1] = c[2] end
    return nil, string.format("%s not found in %s (`luarocks install %s`, or set UPSTREAM_LUA_PATH to "
                              .. "the share/lua/5.1 of the LuaRocks tree that has it)",
                              modules[1], table.concat(where, " nor "), rock)
end

-- `it` when the upstream libraries are there (needs_redis: upstream's redis storage
-- too), else a pending test that says why.
-- (busted's `it` and `pending` live in the calling spec's environment.)
function _M.it(name, fn, needs_redis)
    local spec_env = getfenv(2)
    local why = _M.missing or (needs_redis and _M.redis_missing)
    if why then
        return spec_env.it(name, function() spec_env.pending("skipped: " .. why) end)
    end
    return spec_env.it(name, fn)
end

return _M
