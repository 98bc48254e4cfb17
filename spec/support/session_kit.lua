-- nginx with the real lua-resty-session (see upstream.lua for where it comes from),
-- for the specs that drive session flows through this module's storage.
--
--   local kit = require "session_kit"
--   local srv = kit.start()                      -- the nginx kit, plus S and CLOCK inside nginx
--   local browser = kit.browser(srv, { backend = "hiredis", via = "name", prefix = "p",
--                                      session = { store_metadata = true, ... } })
--   local out = browser:run([[ local s = S.session.new(S.config(ARGS)) ... return x ]], { offset = 20 })
--
-- A browser keeps its cookies across runs. ARGS holds the browser's settings merged
-- with the run's; S.config(ARGS) is the lua-resty-session configuration they describe:
--   backend = "hiredis"  this module: via = "name" (storage = "resty.session.hiredis")
--                        or via = "instance" (storage = a resty.session.hiredis instance)
--             "redis"    upstream's resty.session.redis (lua-resty-redis)
--             "tee"      every storage call goes to upstream's resty.session.redis on
--                        prefix .. ":upstream" and to this module on prefix .. ":hiredis"
--                        with the same arguments; each call's two results are in S.calls
--   offset = seconds     added to ngx.time() for this request (see below)
local nginx = require "nginx"
local cookies = require "cookies"
local h = require "helpers"
local upstream = require "upstream"

local _M = {}

_M.SECRET = "lua-resty-session-hiredis spec secret"

local INIT = [==[
    -- lua-resty-session reads the clock with ngx.time(), which it caches when it
    -- loads: an offset set per request lets a spec reach idle and rolling timeouts
    -- without sleeping. Redis's TTLs run on the real clock.
    local real_time = ngx.time
    CLOCK = { offset = 0 }
    ngx.time = function() return real_time() + CLOCK.offset end

    S = { session = require "resty.session", instances = {}, calls = {} }

    local function storage_config(prefix)
        return { host = "127.0.0.1", port = T.port, prefix = prefix,
                 connect_timeout = 5000, send_timeout = 5000, read_timeout = 5000 }
    end

    local function pack(...)
        return { n = select("#", ...), ... }
    end

    -- One storage that hands each call to both backends (same arguments, upstream
    -- first) and records both results.
    local function tee(prefix)
        local a = require("resty.session.redis").new(storage_config(prefix .. ":upstream"))
        local b = require("resty.session.hiredis").new(storage_config(prefix .. ":hiredis"))
        local t = {}
        for _, method in ipairs({ "set", "get", "delete", "read_metadata" }) do
            t[method] = function(_, ...)
                local ra = pack(a[method](a, ...))
                local rb = pack(b[method](b, ...))
                S.calls[#S.calls + 1] = { method = method, args = pack(...), upstream = ra, hiredis = rb }
                return unpack(rb, 1, rb.n)
            end
        end
        return t
    end

    -- Storage instances are kept per prefix, as an application keeps its own.
    local function instance(kind, prefix)
        local id = kind .. "|" .. prefix
        local s = S.instances[id]
        if not s then
            if kind == "tee" then
                s = tee(prefix)
            else
                s = require("resty.session.hiredis").new(storage_config(prefix))
            end
            S.instances[id] = s
        end
        return s
    end

    -- The current_time lua-resty-session used for the session's latest open or save
    -- (ngx.time() can tick between that storage call and the chunk's return).
    function S.now(session)
        return session.meta and session.meta.timestamp or ngx.time()
    end

    function S.config(a)
        CLOCK.offset = a.offset or 0
        S.calls = {}
        local c = { secret = a.secret }
        for k, v in pairs(a.session or {}) do c[k] = v end
        if a.backend == "hiredis" and a.via == "instance" then
            c.storage = instance("hiredis", a.prefix)
        elseif a.backend == "hiredis" then
            c.storage = "resty.session.hiredis"
            c["resty.session.hiredis"] = storage_config(a.prefix)
        elseif a.backend == "redis" then
            c.storage = "redis"
            c.redis = storage_config(a.prefix)
        elseif a.backend == "tee" then
            c.storage = instance("tee", a.prefix)
        else
            error("unknown backend " .. tostring(a.backend))
        end
        return c
    end
]==]

function _M.start(opts)
    opts = opts or {}
    return nginx.start_kit({
        workers = 1,
        vars = { port = h.port },
        lua_path = upstream.lua_path,
        init = INIT .. (opts.init or ""),
    })
end

local browser = {}
browser.__index = browser

function _M.browser(srv, settings)
    local self = setmetatable({ srv = srv, jar = cookies.new(), settings = {} }, browser)
    self.settings.secret = _M.SECRET
    for k, v in pairs(settings or {}) do self.settings[k] = v end
    return self
end

-- Runs `code` in the content phase with this browser's cookies; keeps the cookies
-- the response sets. Returns the chunk's first result (raises when the chunk did)
-- and the whole answer.
function browser:run(code, args)
    local merged = {}
    for k, v in pairs(self.settings) do merged[k] = v end
    for k, v in pairs(args or {}) do merged[k] = v end
    local res, headers = self.srv:run("content", code, merged, self.jar:headers())
    assert(res.ok, tostring(res[1]))
    self.jar:update(headers)
    self.last_headers = headers
    return res[1], res
end

-- A second browser holding a copy of this one's cookies (e.g. an old cookie).
function browser:clone(settings)
    local b = _M.browser(self.srv, self.settings)
    for k, v in pairs(settings or {}) do b.settings[k] = v end
    b.jar = self.jar:copy()
    return b
end

-- Raw Redis contents under `prefix:` as { [key without prefix] = { type =, value =
-- (string) or members = { [member] = "score" } (zset), ttl = seconds } }.
function _M.snapshot(r, prefix)
    local out = {}
    local cursor = "0"
    repeat
        local reply = assert(r:call("SCAN", cursor, "MATCH", prefix .. ":*", "COUNT", 1000))
        cursor = reply[1]
        for _, key in ipairs(reply[2]) do
            local entry = { type = assert(r:call("TYPE", key)), ttl = assert(r:call("TTL", key)) }
            if entry.type == "string" then
                entry.value = assert(r:call("GET", key))
            elseif entry.type == "zset" then
                entry.members = assert(r:zscores(key))
            end
            out[key:sub(#prefix + 2)] = entry
        end
    until cursor == "0"
    return out
end

-- Keys of a snapshot, sorted.
function _M.keys(snapshot)
    local out = {}
    for k in pairs(snapshot) do out[#out + 1] = k end
    table.sort(out)
    return out
end

return _M
