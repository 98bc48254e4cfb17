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
            elseif answers[mode] then
                conn:send(answers[mode])
                if mode == "partial" then break end
            end
            local _ = err
        end
        conn:close()
    end
end
