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
--   echo_close    a Redis 7 (HELLO answers version 7.0.0); GET answers the key
--                 name as the value; a connection is closed after its 5th GET
--                 (mid-pipeline) or after 300 ms without a command, so that the
--                 next one is served
--   sentinel:PORT[:EPOCH]
--                 a sentinel naming 127.0.0.1:PORT as the master, at config-epoch
--                 EPOCH (default 0): SENTINEL MASTER answers as Redis 7.0 does,
--                 SENTINEL REPLICAS with none, get-master-addr-by-name with the
--                 address (a stale or lying sentinel). Serves its connections
--                 concurrently; `SENTINEL SET-ANSWER PORT EPOCH [PROMOTED]` (the
--                 specs' own command) changes what it names from then on; with
--                 PROMOTED, it leads a failover in progress (flags
--                 failover_in_progress) promoting the replica 127.0.0.1:PROMOTED;
--                 `SENTINEL SET-DELAY MS` sends every later reply but theirs MS
--                 milliseconds after the command came, as read then (a lookup that
--                 began before a SET-ANSWER still names the old address)
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

local HELLO7 = "*6\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"
    .. "$5\r\nproto\r\n:2\r\n"
local ECHO_GETS = 5

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

-- SENTINEL MASTER's answer: the fields clients read, as Redis 7.0 names them.
local function bulk(s)
    s = tostring(s)
    return "$" .. #s .. "\r\n" .. s .. "\r\n"
end

local function flat(fields)
    local out = { "*" .. #fields .. "\r\n" }
    for _, f in ipairs(fields) do out[#out + 1] = bulk(f) end
    return table.concat(out)
end

local named, epoch, promoted
local delay = 0  -- seconds

local function sentinel_master()
    return flat({ "name", "mymaster", "ip", "127.0.0.1", "port", named,
                  "flags", promoted and "master,failover_in_progress" or "master",
                  "config-epoch", epoch, "num-slaves", promoted and 1 or 0, "quorum", 2 })
end

local function sentinel_replicas()
    if not promoted then
        return "*0\r\n"
    end
    return "*1\r\n" .. flat({ "name", "127.0.0.1:" .. promoted, "ip", "127.0.0.1", "port", promoted,
                               "flags", "slave,promoted", "master-link-status", "err" })
end

-- The reply to the client's next command, or false once it is gone.
local function answer_sentinel(sock)
    local cmd, _, io_err = raw.read_reply(function(p) return sock:receive(p) end)
    if io_err or type(cmd) ~= "table" then
        return false
    end
    local name = tostring(cmd[1]):upper()
    local sub = tostring(cmd[2] or ""):upper()
    if name == "AUTH" then
        return "+OK\r\n"
    elseif name == "SENTINEL" and sub == "SET-ANSWER" then
        named, epoch = tostring(cmd[3]), tostring(cmd[4])
        promoted = cmd[5] and tostring(cmd[5]) or nil
        return "+OK\r\n", true
    elseif name == "SENTINEL" and sub == "SET-DELAY" then
        delay = tonumber(cmd[3]) / 1000
        return "+OK\r\n", true
    elseif name == "SENTINEL" and sub == "MASTER" then
        return sentinel_master()
    elseif name == "SENTINEL" and (sub == "REPLICAS" or sub == "SLAVES") then
        return sentinel_replicas()
    elseif name == "SENTINEL" then
        return "*2\r\n" .. bulk("127.0.0.1") .. bulk(named)
    end
    return "-ERR unknown command\r\n"
end

local function serve_sentinel()
    local clients = {}
    local later = {}  -- { sock, reply, at } in the order they are due (SET-DELAY)
    server:settimeout(0)
    while true do
        local wait = 1
        if later[1] then
            wait = math.max(0, later[1].at - socket.gettime())
        end
        local readable = socket.select({ server, unpack(clients) }, nil, wait)
        while later[1] and later[1].at <= socket.gettime() do
            local due = table.remove(later, 1)
            due.sock:send(due.reply)
        end
        for _, sock in ipairs(readable or {}) do
            if sock == server then
                local conn = server:accept()
                if conn then
                    conn:settimeout(1)
                    clients[#clients + 1] = conn
                end
            else
                -- every command already buffered (AUTH comes in the same write)
                repeat
                    local reply, own = answer_sentinel(sock)
                    if reply and delay > 0 and not own then
                        later[#later + 1] = { sock = sock, reply = reply, at = socket.gettime() + delay }
                    elseif not reply or not sock:send(reply) then
                        sock:close()
                        for i, c in ipairs(clients) do
                            if c == sock then table.remove(clients, i) break end
                        end
                        break
                    end
                until not sock:dirty()
            end
        end
    end
end

if mode:match("^sentinel:") then
    named, epoch = mode:match("^sentinel:(%d+):?(%d*)")
    if epoch == "" then epoch = "0" end
    serve_sentinel()
end

while true do
    local conn = server:accept()
    if conn then
        conn:settimeout(mode == "echo_close" and 0.3 or 30)
        local gets = 0
        while true do
            local cmd, err, io_err = raw.read_reply(function(p) return conn:receive(p) end)
            if io_err or type(cmd) ~= "table" then break end
            local name = tostring(cmd[1]):upper()
            if mode == "echo_close" and name == "HELLO" then
                conn:send(HELLO7)
            elseif mode == "echo_close" and name == "GET" then
                local key = tostring(cmd[2])
                conn:send("$" .. #key .. "\r\n" .. key .. "\r\n")
                gets = gets + 1
                if gets == ECHO_GETS then
                    -- read what else was sent, so that closing sends a clean FIN
                    -- (not a reset for unread data): the client reads "closed"
                    conn:settimeout(0.1)
                    repeat
                        local _, rerr, partial = conn:receive(65536)
                    until rerr and (partial == nil or partial == "")
                    break
                end
            elseif name == "HELLO" then
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
