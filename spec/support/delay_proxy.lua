-- A TCP proxy that delays every chunk the upstream sends back by a fixed time,
-- without serialising connections: N clients waiting on it wait in parallel.
-- Runs as its own LuaJIT process (LuaSocket, one select loop):
--
--   luajit spec/support/delay_proxy.lua UPSTREAM_HOST UPSTREAM_PORT DELAY_MS PORT_FILE [DROP_AFTER]
--
-- With DROP_AFTER = n, a connection is closed (without forwarding) when its client
-- sends chunk n + 1: a pooled connection "closed by the server" just as it is reused.
-- Listens on 127.0.0.1 on a free port and writes "port N" to PORT_FILE once ready.
-- Client -> upstream bytes pass at once; upstream -> client chunks are held
-- DELAY_MS each (in order).
local socket = require "socket"

local upstream_host = assert(arg[1], "upstream host")
local upstream_port = assert(tonumber(arg[2]), "upstream port")
local delay = assert(tonumber(arg[3]), "delay in ms") / 1000
local port_file = assert(arg[4], "port file")
local drop_after = tonumber(arg[5])

local server = assert(socket.bind("127.0.0.1", 0))
server:settimeout(0)
do
    local _, port = server:getsockname()
    local tmp = port_file .. ".tmp"
    local f = assert(io.open(tmp, "w"))
    f:write("port ", port, "\n")
    f:close()
    assert(os.rename(tmp, port_file))
end

local links = {}   -- socket -> link
local all = {}     -- array of links

-- Writes all of data, waiting (briefly) when the peer's buffer is full.
local function send_all(sock, data)
    local i = 1
    while i <= #data do
        local last, err, partial = sock:send(data, i)
        if last then
            return true
        end
        if err ~= "timeout" then
            return nil, err
        end
        i = partial + 1
        socket.select(nil, { sock }, 1)
    end
    return true
end

local function close_link(link)
    if link.dead then return end
    link.dead = true
    links[link.client] = nil
    links[link.upstream] = nil
    link.client:close()
    link.upstream:close()
end

local function accept()
    local client = server:accept()
    if not client then return end
    local upstream = socket.tcp()
    upstream:settimeout(5)
    local ok = upstream:connect(upstream_host, upstream_port)
    if not ok then
        client:close()
        upstream:close()
        return
    end
    client:settimeout(0)
    upstream:settimeout(0)
    local link = { client = client, upstream = upstream, queue = {}, upstream_closed = false }
    links[client] = link
    links[upstream] = link
    all[#all + 1] = link
end

local function read_chunk(sock)
    local data, err, partial = sock:receive(65536)
    local chunk = data or partial
    return (chunk ~= "" and chunk or nil), err == "closed"
end

while true do
    local now = socket.gettime()
    local timeout = 1
    local readers = { server }
    local alive = {}
    for _, link in ipairs(all) do
        if not link.dead then
            alive[#alive + 1] = link
            readers[#readers + 1] = link.client
            if not link.upstream_closed then
                readers[#readers + 1] = link.upstream
            end
            local head = link.queue[1]
            if head then
                timeout = math.min(timeout, math.max(0, head.at - now))
            end
        end
    end
    all = alive

    local ready = socket.select(readers, nil, timeout)
    for _, sock in ipairs(ready) do
        if sock == server then
            accept()
        else
            local link = links[sock]
            if link and not link.dead then
                local chunk, closed = read_chunk(sock)
                if sock == link.client then
                    if chunk then
                        link.chunks = (link.chunks or 0) + 1
                    end
                    if chunk and drop_after and link.chunks > drop_after then
                        close_link(link)
                    elseif chunk and not send_all(link.upstream, chunk) then
                        close_link(link)
                    elseif closed then
                        close_link(link)
                    end
                else
                    if chunk then
                        link.queue[#link.queue + 1] = { at = socket.gettime() + delay, data = chunk }
                    end
                    if closed then
                        link.upstream_closed = true
                    end
                end
            end
        end
    end

    now = socket.gettime()
    for _, link in ipairs(all) do
        while not link.dead and link.queue[1] and link.queue[1].at <= now do
            local item = table.remove(link.queue, 1)
            if not send_all(link.client, item.data) then
                close_link(link)
            end
        end
        if not link.dead and link.upstream_closed and not link.queue[1] then
            close_link(link)
        end
    end
end
