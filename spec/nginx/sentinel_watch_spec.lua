-- sentinel_watch inside a real nginx, against the real sentinel group
-- (spec/support/with-sentinels.sh): with every sentinel's events followed, cosocket
-- calls reuse a lookup's answer until a sentinel publishes an event or a
-- subscription is lost (closed by the sentinel, or a stalled sentinel's PING
-- unanswered), then look up again; sentinel_watch = false looks up on every call;
-- a sentinel that refuses the subscription leaves the lookups on, with a warning.
-- TLS sentinels: spec/nginx/sentinel_tls_spec.lua. Failovers under writers (the
-- watch on by default): spec/sentinel/failover_spec.lua.
local h = require "helpers"
local nginx = require "nginx"
local group = require "sentinel_group"
local files = require "files"

if not group.available then
    describe("sentinel watch in nginx", function()
        pending(group.why_absent)
    end)
    return
end

-- In a content handler: `n` sequential gets on the storage labelled ARGS.label,
-- and the sentinel counters' change over them.
local CALLS = [[
    local s = H.storage(ARGS.cfg, ARGS.label)
    local before = H.hiredis.stats().sentinel
    local values = {}
    for i = 1, ARGS.n do
        local v, err = s:get(ARGS.name, "k")
        values[i] = v or tostring(err)
    end
    local after = H.hiredis.stats().sentinel
    local d = {}
    for k, v in pairs(after) do d[k] = v - before[k] end
    -- (a gauge: the subscriptions confirmed before and after the calls)
    d.subscriptions_before, d.subscriptions_after = before.subscriptions, after.subscriptions
    return { values = values, delta = d }
]]

describe("sentinel watch in nginx", function()
    local srv, name

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1 })
        local master = group.wait_stable(30, true)
        name = h.unique("watch")
        local r = group.raw_server(master)
        assert.equal("OK", r:call("SET", name .. ":k", "v"))
        r:close()
    end)

    lazy_teardown(function()
        if srv then
            assert.same({}, srv:shutdown())
        end
    end)

    local function calls(cfg, label, n)
        local res = srv:run("content", CALLS, { cfg = cfg, label = label, name = name, n = n })
        assert.is_true(res.ok, tostring(res[1]))
        for i = 1, n do
            assert.equal("v", res[1].values[i])
        end
        return res[1].delta
    end

    -- The worker's sentinel counters now.
    local function sentinel_stats()
        return srv:run("content", "return H.hiredis.stats().sentinel")[1]
    end

    -- Polls until a call of the storage makes no lookup: every subscription
    -- confirmed, and an answer kept since.
    local function until_followed(cfg, label, timeout_ms)
        assert.is_true(h.wait_until(function()
            return calls(cfg, label, 1).lookups == 0
        end, timeout_ms or 10000), "calls never stopped looking up")
    end

    -- A storage on cfg (labelled tag) routed by a kept answer: its first call looks
    -- up, then its calls are polled until they stop looking up. Its label.
    local function followed(cfg, tag)
        local label = h.unique(tag)
        assert.equal(1, calls(cfg, label, 1).lookups)
        until_followed(cfg, label)
        return label
    end

    it("reuses a lookup's answer while no sentinel publishes an event", function()
        local cfg = group.config()
        local label = followed(cfg, "followed")
        local d = calls(cfg, label, 50)
        assert.equal(0, d.lookups)
        assert.equal(0, d.events)
        -- quiet for longer than a subscription may carry nothing (3 s): the PINGs keep
        -- every one, and nginx logs no cosocket read timeout for them
        local before = sentinel_stats()
        h.sleep(3500)
        local after = sentinel_stats()
        assert.equal(before.subscriptions, after.subscriptions)
        assert.equal(before.watch_failures, after.watch_failures)
        assert.equal(0, calls(cfg, label, 5).lookups)
        assert.is_nil(srv:error_log():find("timed out", 1, true))
    end)

    it("reuses a lookup's replicas with role = \"slave\" (a replica picked per call)", function()
        local cfg = group.config({ role = "slave" })
        -- (the session written on the master in setup, once on the replica)
        local r = group.raw_server(group.replica_port())
        assert.is_true(h.wait_until(function() return r:call("GET", name .. ":k") == "v" end, 5000))
        r:close()
        local label = followed(cfg, "replicas")
        assert.equal(0, calls(cfg, label, 20).lookups)
    end)

    it("looks up again after an event, once, then reuses the new answer", function()
        local cfg = group.config()
        local label = followed(cfg, "event")
        local before = sentinel_stats().events
        -- an event of sentinel 3: SENTINEL SET publishes +set
        local s = group.raw_sentinel(3)
        assert.equal("OK", s:call("SENTINEL", "SET", "mymaster", "down-after-milliseconds", "2000"))
        s:close()
        assert.is_true(h.wait_until(function() return sentinel_stats().events > before end, 5000),
                       "the event never reached the worker")
        -- the next call looks up; the ones after it reuse its answer
        assert.equal(1, calls(cfg, label, 1).lookups)
        assert.equal(0, calls(cfg, label, 20).lookups)
    end)

    it("looks up on every call while a subscription is lost, until it is made again", function()
        local cfg = group.config()
        local label = followed(cfg, "lost")
        local before = sentinel_stats()
        assert.is_true(before.subscriptions >= #group.sentinels())
        -- the sentinel drops its subscribers (this worker's subscription among them)
        local s = group.raw_sentinel(1)
        assert.is_true(s:call("CLIENT", "KILL", "TYPE", "pubsub") >= 1)
        s:close()
        assert.is_true(h.wait_until(function()
            return sentinel_stats().subscriptions < before.subscriptions
        end, 5000), "the subscription was never seen lost")
        -- while it stays lost (2 s before it is made again), every call looks up
        local d = calls(cfg, label, 3)
        if d.subscriptions_after == d.subscriptions_before then
            assert.is_true(d.subscriptions_after < before.subscriptions)
            assert.equal(3, d.lookups)
        end
        until_followed(cfg, label)
        local after = sentinel_stats()
        assert.equal(before.subscriptions, after.subscriptions)
        assert.equal(before.watch_failures + 1, after.watch_failures)
        assert.matches("events not followed %(closed%)", srv:error_log())
    end)

    it("looks up while a stalled sentinel leaves its PING unanswered, follows again once it answers", function()
        local cfg = group.config({ connect_timeout = 300, send_timeout = 300, read_timeout = 300 })
        local label = followed(cfg, "stalled")
        local before = sentinel_stats()
        local f = assert(io.open(group.dir .. "/sentinel2.pid"))
        local pid = assert(f:read("*n"))
        f:close()
        assert.is_true(files.sh("kill -STOP " .. pid))
        local ok, err = pcall(function()
            -- its connection stays open and quiet: a PING, unanswered by the next quiet second
            assert.is_true(h.wait_until(function()
                return sentinel_stats().subscriptions < before.subscriptions
            end, 5000), "the stalled sentinel's subscription was never seen lost")
            -- calls go on (the stalled sentinel costs a lookup its read timeout once), each
            -- looking up while the subscription stays lost
            local d = calls(cfg, label, 3)
            if d.subscriptions_after == d.subscriptions_before then
                assert.equal(3, d.lookups)
            end
        end)
        files.sh("kill -CONT " .. pid)
        assert(ok, err)
        -- made again at its next try (2 s after the loss, then 4 s)
        until_followed(cfg, label, 15000)
        assert.matches("events not followed %(no answer to PING", srv:error_log())
        group.wait_stable(30)
    end)

    it("looks up on every call with sentinel_watch = false", function()
        local cfg, label = group.config({ sentinel_watch = false }), h.unique("off")
        calls(cfg, label, 1)
        local d = calls(cfg, label, 10)
        assert.equal(10, d.lookups)
    end)

    it("looks up on every call when a sentinel refuses the subscription, with a warning", function()
        local master = group.wait_stable(30, true)
        -- a fake sentinel (answers PSUBSCRIBE `-ERR unknown command`) naming the master
        local fake_port, stop = h.fake_server("sentinel:" .. master .. ":1")
        local list = group.sentinels()
        list[#list + 1] = { host = "127.0.0.1", port = fake_port }
        local cfg, label = group.config({ sentinels = list }), h.unique("refused")
        calls(cfg, label, 1)
        assert.is_true(h.wait_until(function()
            return srv:error_log():find("events not followed (ERR unknown command)", 1, true) ~= nil
        end, 5000), "no warning")
        local d = calls(cfg, label, 10)
        stop()
        assert.equal(10, d.lookups)
        assert.is_true(d.watch_failures <= 1)
    end)
end)
