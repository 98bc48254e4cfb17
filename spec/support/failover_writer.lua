-- A native writer of spec/support/failover_kit.lua, as its own process (the
-- native transport blocks: the spec must poll the servers meanwhile):
--
--   luajit spec/support/failover_writer.lua ARGS_FILE
--
-- ARGS_FILE returns { path =, cpath =, cfg =, name =, label =, run_id =, every_ms =,
-- max_s =, out =, stop_file = }. Until stop_file exists (or max_s passes), every
-- every_ms: set(name, "k" .. i, run_id .. ":" .. label .. ":" .. i); each call is
-- a line of `out`: "ack I T0 T1" or "fail I T0 T1 ERR" (T0, T1: the call's start
-- and end, epoch seconds), then "done CALLS" (or "crash ERR").
local args = dofile(arg[1])
package.path = args.path
package.cpath = args.cpath
local socket = require "socket"

local out = assert(io.open(args.out, "w"))
out:setvbuf("line")

local function stopped()
    local f = io.open(args.stop_file)
    if f then f:close() return true end
    return false
end

local ok, err = pcall(function()
    local s = require("resty.session.hiredis").new(args.cfg)
    local deadline = socket.gettime() + args.max_s
    local i = 0
    while socket.gettime() < deadline and not stopped() do
        i = i + 1
        local t0 = socket.gettime()
        local done, serr = s:set(args.name, "k" .. i, args.run_id .. ":" .. args.label .. ":" .. i, 600, os.time())
        local t1 = socket.gettime()
        if done == true and serr == nil then
            out:write(string.format("ack %d %.4f %.4f\n", i, t0, t1))
        else
            out:write(string.format("fail %d %.4f %.4f %s\n", i, t0, t1,
                                    (tostring(serr or done):gsub("[\r\n]", " "))))
        end
        socket.sleep(args.every_ms / 1000)
    end
    out:write(string.format("done %d\n", i))
end)
if not ok then
    out:write("crash ", (tostring(err):gsub("[\r\n]", " ")), "\n")
end
out:close()
