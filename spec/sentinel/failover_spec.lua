-- Write loss through Sentinel failovers (the group of spec/support/with-sentinels.sh:
-- 1 master, 1 replica, 3 sentinels, down-after-milliseconds 2000): SENTINEL
-- FAILOVER, a master killed with SIGKILL (started again once the replica is
-- promoted; the sentinels make it a replica), and a master stalled with SIGSTOP
-- past down-after-milliseconds until the replica is promoted (then SIGCONT).
-- Through each failover, writers (this module natively in a luajit process,
-- over cosockets in nginx, upstream's resty.session.redis.sentinel in nginx; with
-- wait_replicas = 1 too when the module has it) set unique keys; once the group
-- is stable again, with the old master a synced replica the sentinels list as
-- healthy, every acknowledged key is read back from the new master
-- (spec/support/failover_kit.lua). One report line per writer goes to stderr and
-- to the failover report file. A writer with sentinel_cache_ttl shows what the
-- cached address costs; an instance that cached it before the failover reaches
-- the new master once the old one refuses writes.
local group = require "sentinel_group"

if not group.available then
    describe("sentinel failover", function() pending(group.why_absent) end)
    return
end

local nginx = require "nginx"
local fk = require "failover_kit"
local sentinel = require "resty.session.hiredis.sentinel"
local hiredis = require "resty.session.hiredis"

local up, up_missing = fk.upstream("sentinel")
local TIMEOUTS = { connect_timeout = 300, read_timeout = 500, send_timeout = 500 }
local wait_ok, wait_missing = fk.wait_supported(group.config(TIMEOUTS))

local sh, merged = fk.sh, fk.merged

local function writers(run)
    local base = group.config(merged(TIMEOUTS, { prefix = "fo" }))
    return fk.writers(base, {
        -- sentinel_cache_ttl's trade-off: the cached address is kept until the old
        -- master refuses a write (its losses are reported like the others')
        -- and the cosocket writer with a lookup per call (the default one reuses a
        -- lookup's answer while the sentinels publish no event: sentinel_watch)
        extra = {
            { label = "native+cache", transport = "native", cfg = merged(base, { sentinel_cache_ttl = 3600 }) },
            { label = "cosocket+lookup", transport = "cosocket", cfg = merged(base, { sentinel_watch = false }) },
        },
        upstream = up, wait = wait_ok,
        name = function(label) return run .. "-" .. label end,
    })
end

describe("sentinel failover: write loss", function()
    local srv

    local function worker_stats()
        local res = srv:run("content", "return H.hiredis.stats()")
        assert.is_true(res.ok, tostring(res[1]))
        return res[1]
    end

    lazy_setup(function()
        srv = nginx.start_kit({ workers = 1, lua_path = up and up.lua_path or nil })
    end)

    lazy_teardown(function()
        if srv then
            local errors = fk.own_errors(srv)
            srv:stop()
            assert.same({}, errors)
        end
    end)

    if not up then
        pending("upstream's resty.session.redis.sentinel writer skipped: " .. up_missing)
    end
    if not wait_ok then
        pending("wait_replicas writers skipped: " .. wait_missing)
    end

    -- Runs one scenario: trigger(master), recover(master) once the replica
    -- accepts writes; opts.outage: every writer must see failed calls;
    -- opts.before(master) / opts.after(new_master) around it.
    local function scenario(title, trigger, recover, opts)
        local master = group.wait_stable(60, true)
        local replica = group.replica_port()
        local ws = writers("fo" .. math.random(1e9))
        local state = opts.before and opts.before(master)
        local out = fk.scenario({
            title = title, srv = srv, writers = ws, replica = replica, password = group.password,
            log_dir = group.dir,
            probe_key = "fo-probe",
            trigger = function() trigger(master) end,
            recover = function() recover(master) end,
            wait_stable = function()
                local new = group.wait_stable(60, "linked")
                assert.equal(replica, new)
                return new
            end,
        })
        fk.check(out, ws, opts, assert)
        if opts.after then opts.after(out.new_master, state) end
    end

    it("SENTINEL FAILOVER: every write acknowledged is on the new master (wait_replicas), losses reported", function()
        scenario("sentinel SENTINEL FAILOVER",
            function()
                local s = group.raw_sentinel(2)
                assert.equal("OK", s:call("SENTINEL", "FAILOVER", "mymaster"))
                s:close()
            end,
            function() end,
            {
                -- an instance that caches the master's address (and pools a connection to it)
                before = function()
                    local cached = sentinel.new(group.config({ sentinel_cache_ttl = 3600 }))
                    local name = "fo-cached-" .. math.random(1e9)
                    assert.is_true(cached:set(name, "c", "v0", 60, os.time()))
                    return { cached = cached, name = name, native_stats = hiredis.stats(),
                             worker_stats = worker_stats() }
                end,
                -- the cached address stays in use while the old master takes writes
                -- (sentinel_cache_ttl's trade-off); once it refuses them (demoted:
                -- READONLY, ROLE) the address is dropped and the sentinels asked again
                after = function(new, st)
                    local r = group.raw_server(new)
                    local round, failed, t0 = 0, 0, fk.now()
                    local reached = fk.poll(function()
                        round = round + 1
                        local value = "w" .. round
                        if st.cached:set(st.name, "c", value, 60, os.time()) ~= true then
                            failed = failed + 1
                            return false
                        end
                        return r:call("GET", st.name .. ":c") == value
                    end, 30, 0.05)
                    r:close()
                    assert.is_true(reached == true, string.format(
                        "the cached instance never reached the new master (%d calls, %d failed in %.1f s)",
                        round, failed, fk.now() - t0))
                    -- the failover is in stats(): natively (this process) and in the
                    -- cosocket writers' worker
                    assert.is_true(hiredis.stats().sentinel.master_changes > st.native_stats.sentinel.master_changes)
                    assert.is_true(worker_stats().sentinel.master_changes > st.worker_stats.sentinel.master_changes)
                end,
            })
    end)

    it("a killed master (SIGKILL): writes resume on the promoted replica, losses counted", function()
        scenario("sentinel killed master",
            function(master) assert.is_true(sh("kill -KILL " .. group.pid_of(master))) end,
            function(master)
                -- started again (empty, as a master) once every sentinel names the new
                -- one: the sentinels then make it a replica
                fk.poll(function() return group.agreed_master() ~= nil and group.agreed_master() ~= master end, 30)
                group.restart(master)
            end,
            { outage = true })
    end)

    it("a stalled master (SIGSTOP past down-after-milliseconds, then SIGCONT): losses counted", function()
        local pid
        scenario("sentinel stalled master",
            function(master)
                pid = group.pid_of(master)
                assert.is_true(sh("kill -STOP " .. pid))
            end,
            function() if pid then sh("kill -CONT " .. pid) end end,
            { outage = true })
    end)
end)
