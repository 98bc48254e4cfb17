-- A misbehaving "Redis" for timeout and protocol-error specs, run as a separate
-- process (helpers.fake_server) so it can answer while the module blocks.
--
--   luajit spec/support/fake_server.lua MODE
--
-- Prints "port N" on its first line, then serves connections one after another.
-- HELLO gets "-ERR unknown command" (the module then treats the version as
-- unknown), AUTH and SELECT get +OK; every other command gets, by MODE:
--   silent        nothing (the client times out)
--   garbage       a reply with an invalid type byte
--   extra         a valid bulk reply followed by a stray second reply
--   partial       half a bulk reply, then the connection is closed
--   huge_bulk     a bulk header announcing 999999999999 bytes, then streams data
--   huge_array    an array header announcing 999999999 elements, then streams ":1"
--   deep          arrays nested 8 levels deep, then streams more nesting
-- The streaming modes write until the client closes the connection (or 64 MiB were
-- sent), then print "sent N" (bytes after the header) on stdout.
package.path = "spec/support/?.lua;" .. package.path
local socket = require "socket"
local raw = require "raw_redis"

local mode = arg[1] or "silent"
local server = assert(socket.bind("127.0.0.1", 0, 32))
local _, port = server:getsockname()
io.stdout:write("port ", port, "\n")
io.stdout:flush()

local answers = {
    garbage = "?bogus\r\n",
    extra = "$5\r\nvalue\r\n+STRAY\r\n",
    partial = "$10\r\nabc",
}

-- header, filler chunk: the reply that never ends
local streams = {
    huge_bulk = { "$999999999999\r\n", string.rep("x", 65536) },
    huge_array = { "*999999999\r\n", string.rep(":1\r\n", 16384) },
    deep = { string.rep("*1\r\n", 8), string.rep("*1\r\n", 16384) },
}

local function stream(conn, header, chunk)
    conn:send(header)
    local sent = 0
    while sent < 64 * 1024 * 1024 do
        local n, err, partial = conn:send(chunk)
        sent = sent + (n or partial or 0)
        if not n then
            local _ = err
            break
        end
    end
    io.stdout:write("sent ", sent, "\n")
    io.stdout:flush()
end

while true do
    local conn = server:accept()
    if conn then
        conn:settimeout(30)
        while true do
            local cmd, err, io_err = raw.read_reply(function(p) return conn:receive(p) end)
            if io_err or type(cmd) ~= "table" then break end
            local name = tostring(cmd[1]):upper()
            if name == "HELLO" then
                conn:send("-ERR unknown command 'HELLO'\r\n")
            elseif name == "AUTH" or name == "SELECT" then
                conn:send("+OK\r\n")
            elseif streams[mode] then
                stream(conn, streams[mode][1], streams[mode][2])
                break
            elseif answers[mode] then
                conn:send(answers[mode])
                if mode == "partial" then break end
            end
            local _ = err
        end
        conn:close()
    end
end
