-- The rest of the event loop's turn (resty.session.hiredis.turn), as the sentinel
-- lookup runner waits for it: what is due now runs first, on every nginx, and nothing
-- is written to the error log (stock nginx's ngx.sleep(0) logs a warning per call).
local nginx = require "nginx"

-- In a timer (the runner's context), three times: a Redis round trip (the timer is
-- resumed by its socket's read event, as the runner by a sentinel's reply), then a
-- timer due now, which has run when turn.next returns. And whether the turns were
-- waited with a timer of their own rather than ngx.sleep(0).
local TURNS = [[
    local turn = require "resty.session.hiredis.turn"
    local sock = ngx.socket.tcp()
    assert(sock:connect("127.0.0.1", ARGS.port))
    local turns = turn.start()
    local seen = {}
    for i = 1, 3 do
        assert(sock:send("PING\r\n"))
        assert(sock:receive() == "+PONG")
        local due = { ran = false }
        assert(ngx.timer.at(0, function() due.ran = true end))
        seen[i] = { before = due.ran }
        turn.next(turns)
        seen[i].after = due.ran
    end
    sock:close()
    local timed = turns.back ~= nil
    local ffi = require "ffi"
    pcall(ffi.cdef, "extern int ngx_posted_delayed_events;")
    local patched = pcall(function() return ffi.C.ngx_posted_delayed_events end)
    return { seen = seen, timed = timed, patched = patched }
]]

local function check(srv, timed_on_stock_nginx)
    local res = srv:run("timer", TURNS, { port = tonumber(os.getenv("HIREDIS_TEST_PORT")) })
    assert.is_true(res.ok, tostring(res[1]))
    local out = res[1]
    for i = 1, 3 do
        assert.is_false(out.seen[i].before, "turn " .. i)
        assert.is_true(out.seen[i].after, "turn " .. i)
    end
    -- ngx.sleep(0) where it logs nothing: OpenResty's patched nginx, or a log that drops warnings
    assert.equal(not out.patched and timed_on_stock_nginx, out.timed)
    assert.is_nil(srv:error_log():find("ngx.sleep(0)", 1, true), srv:error_log())
end

describe("the rest of an event-loop turn", function()
    for _, case in ipairs({
        { "lets what is due run first and logs nothing, where warnings are logged", "info", true },
        { "uses ngx.sleep(0) where its warning is not logged", "error", false },
    }) do
        it(case[1], function()
            local srv = nginx.start_kit({ workers = 1, log_level = case[2] })
            local ok, err = pcall(check, srv, case[3])
            assert.same({}, srv:shutdown())
            assert(ok, err)
        end)
    end
end)
