-- A tiny raw Redis client for the specs (LuaSocket): exact keys, TTLs, zsets,
-- CLIENT LIST/KILL, DEBUG, FLUSHALL... independent of the module under test.
--
--   local raw = require "raw_redis"
--   local r = assert(raw.connect(port_or_socket_path, { host =, password =, username =, database = }))
--   r:call("TTL", key)   --> value | nil, "ERR ..." (error replies) | nil, "closed"/"timeout"...
--   r:close()
--
-- Replies: status and bulk strings -> Lua strings (binary safe), integers -> numbers,
-- nil bulk/array -> nil, arrays -> Lua arrays (nil elements become raw.null).
local socket = require "socket"

local _M = {}

-- Stands for a nil element inside an array reply.
_M.null = setmetatable({}, { __tostring = function() return "raw.null" end })

local function encode(args)
    local out = { "*" .. #args .. "\r\n" }
    for i = 1, #args do
        local arg = tostring(args[i])
        out[#out + 1] = "$" .. #arg .. "\r\n"
        out[#out + 1] = arg
        out[#out + 1] = "\r\n"
    end
    return table.concat(out)
end
_M.encode = encode

-- Reads one RESP2 value with `receive(pattern_or_count)`; returns value, or
-- nil, err for an error reply (and nil, err, true for I/O failures).
local function read_reply(receive)
    local line, err = receive("*l")
    if not line then return nil, err, true end
    local kind, rest = line:sub(1, 1), line:sub(2)
    if kind == "+" then
        return rest
    elseif kind == "-" then
        return nil, rest
    elseif kind == ":" then
        return tonumber(rest)
    elseif kind == "$" then
        local len = tonumber(rest)
        if len < 0 then return nil end
        local data, derr = receive(len + 2)
        if not data then return nil, derr, true end
        return data:sub(1, len)
    elseif kind == "*" then
        local n = tonumber(rest)
        if n < 0 then return nil end
        local arr = {}
        for i = 1, n do
            local v, e, io = read_reply(receive)
            if io then return nil, e, true end
            if v == nil then
                -- an error element stays visible as { err = "..." }
                v = e and { err = e } or _M.null
            end
            arr[i] = v
        end
        return arr
    end
    return nil, "protocol error: unexpected byte " .. string.format("%q", kind), true
end
_M.read_reply = read_reply

local client = {}
client.__index = client

function _M.connect(target, opts)
    opts = opts or {}
    local sock, err
    if type(target) == "string" and not tonumber(target) then
        local unix = require "socket.unix"
        sock = assert(unix())
        sock:settimeout(opts.timeout or 10)
        local ok, cerr = sock:connect((target:gsub("^unix:", "")))
        if not ok then return nil, cerr end
    else
        sock = assert(socket.tcp())
        sock:settimeout(opts.timeout or 10)
        local ok, cerr = sock:connect(opts.host or os.getenv("HIREDIS_TEST_HOST") or "127.0.0.1",
                                      tonumber(target))
        if not ok then return nil, cerr end
    end
    local self = setmetatable({ sock = sock }, client)
    if opts.password then
        local ok
        if opts.username then
            ok, err = self:call("AUTH", opts.username, opts.password)
        else
            ok, err = self:call("AUTH", opts.password)
        end
        if not ok then self:close(); return nil, err end
    end
    if opts.database then
        local ok
        ok, err = self:call("SELECT", opts.database)
        if not ok then self:close(); return nil, err end
    end
    return self
end

function client:send(...)
    return self.sock:send(encode({ ... }))
end

function client:read()
    local sock = self.sock
    return read_reply(function(p) return sock:receive(p) end)
end

function client:call(...)
    local ok, err = self:send(...)
    if not ok then return nil, err end
    local v, rerr = self:read()
    return v, rerr
end

-- Several commands in one write; returns the array of { value, err } pairs.
function client:pipeline(commands)
    local parts = {}
    for i, cmd in ipairs(commands) do parts[i] = encode(cmd) end
    assert(self.sock:send(table.concat(parts)))
    local out = {}
    for i = 1, #commands do
        local v, err = self:read()
        out[i] = { v, err }
    end
    return out
end

function client:settimeout(seconds)
    self.sock:settimeout(seconds)
end

function client:close()
    if self.sock then
        self.sock:close()
        self.sock = nil
    end
end

-- ZRANGE ... WITHSCORES as { [member] = "score" }.
function client:zscores(key)
    local arr, err = self:call("ZRANGE", key, 0, -1, "WITHSCORES")
    if not arr then return nil, err end
    local out = {}
    for i = 1, #arr, 2 do out[arr[i]] = arr[i + 1] end
    return out
end

-- CLIENT LIST parsed: an array of { id = "12", addr = ..., db = "0", user = ..., cmd = ... }.
function client:client_list(...)
    local text, err = self:call("CLIENT", "LIST", ...)
    if not text then return nil, err end
    local out = {}
    for line in text:gmatch("[^\n]+") do
        local entry = {}
        for k, v in line:gmatch("(%S+)=(%S*)") do entry[k] = v end
        out[#out + 1] = entry
    end
    return out
end

-- INFO section as a { field = "value" } table.
function client:info(section)
    local text, err = self:call("INFO", section)
    if not text then return nil, err end
    local out = {}
    for k, v in text:gmatch("([%w_]+):([^\r\n]*)") do out[k] = v end
    return out
end

_M.client = client
return _M
