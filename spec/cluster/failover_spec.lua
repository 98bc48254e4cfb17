-- Write loss through Redis Cluster failovers: CLUSTER FAILOVER on a replica, a
-- master killed with SIGKILL (started again once its replica is promoted), and a
-- master stalled with SIGSTOP past cluster-node-timeout until its replica is
-- promoted (then SIGCONT). Through each failover, writers (this module natively
-- in a luajit process, over cosockets in nginx, upstream's
-- resty.session.redis.cluster in nginx; with wait_replicas = 1 too when the
-- module has it) set unique keys of the failed master's slot; once the cluster is
-- stable again, with the old master a synced replica, every acknowledged key is
-- read back from the new master (spec/support/failover_kit.lua). One report line
-- per writer goes to stderr and to the failover report file.
local kit = require "cluster_kit"

if not kit.available then
    describe("cluster failover", function() pending(kit.skip_reason) end)
    return
end

local core = require "resty.session.hiredis.core"
local nginx = require "nginx"
local fk = require "failover_kit"

local up, up_missing = fk.upstream("cluster")
local TIMEOUTS = { connect_timeout = 200, read_timeout = 500, send_timeout = 500, max_connection_timeout = 1000 }
local wait_ok, wait_missing = fk.wait_supported(kit.config(TIMEOUTS))

local sh, merged = fk.sh, fk.merged

-- The writers of one scenario, their session names hash-tagged onto tag's slot.
local function writers(tag)
    return fk.writers(kit.config(merged(TIMEOUTS, { prefix = "fo" })), {
        upstream = up, upstream_fresh = true, wait = wait_ok,
        upstream_cfg = up and merged(TIMEOUTS, { name = "fo-upstream", prefix = "fo", nodes = kit.nodes(),
                                                 password = kit.password,
                                                 lock_zone = "redis_cluster_slot_locks" }),
        name = function(label) return "{" .. tag .. "}" .. label end,
    })
end

describe("cluster failover: write loss", function()
    local srv

    lazy_setup(function()
        srv = nginx.start_kit({
            workers = 1,
            lua_path = up and up.lua_path or nil,
            http = "  lua_shared_dict redis_cluster_slot_locks 1m;\n",
        })
    end)

    lazy_teardown(function()
        if srv then
            local errors = fk.own_errors(srv)
            srv:stop()
            assert.same({}, errors)
        end
    end)

    if not up then
        pending("upstream's resty.session.redis.cluster writer skipped: " .. up_missing)
    end
    if not wait_ok then
        pending("wait_replicas writers skipped: " .. wait_missing)
    end

    -- Runs one scenario: trigger(master, replica), recover(master) once the
    -- replica accepts writes; opts.outage: every writer must see failed calls.
    local function scenario(title, trigger, recover, opts)
        local stable, why = kit.wait_stable(60000, nil, true)
        assert(stable, "cluster not stable with linked replicas: " .. tostring(why))
        local tag = "fo" .. math.random(1e9)
        local slot = core.key_slot("{" .. tag .. "}")
        local master = kit.owner(slot)
        local replica = assert(kit.replica_of(master), "no synced replica of " .. master)
        local ws = writers(tag)
        local out = fk.scenario({
            title = title, srv = srv, writers = ws, replica = replica, password = kit.password,
            log_dir = kit.dir,
            probe_key = "{" .. tag .. "}probe",
            trigger = function() trigger(master, replica) end,
            recover = function() recover(master) end,
            on_tick = opts.on_tick and function(elapsed) opts.on_tick(elapsed, replica) end,
            wait_stable = function()
                local settled, reason = kit.wait_stable(60000, nil, true)
                assert(settled, title .. ": cluster not stable within 60 s: " .. tostring(reason))
                assert.equal(replica, kit.owner(slot))
                assert.equal("slave", (kit.call(master, "ROLE") or {})[1])
                return replica
            end,
        })
        fk.check(out, ws, opts, assert)
    end

    it("CLUSTER FAILOVER: every write acknowledged is on the new master (wait_replicas), losses reported", function()
        local asked = 1
        scenario("cluster CLUSTER FAILOVER",
            function(_, replica) assert.equal("OK", kit.call(replica, "CLUSTER", "FAILOVER")) end,
            function() end,
            { on_tick = function(elapsed, replica)
                -- a manual failover gives up after 5 s when the master is slow to answer: asked again
                if elapsed > asked * 6 and asked < 3 then
                    asked = asked + 1
                    kit.call(replica, "CLUSTER", "FAILOVER")
                end
            end })
    end)

    it("a killed master (SIGKILL): writes resume on the promoted replica, losses counted", function()
        local pid
        scenario("cluster killed master",
            function(master)
                pid = kit.pid_of(master)
                assert.is_true(sh("kill -KILL " .. pid))
            end,
            function(master)
                -- started again once the other nodes agree on the promoted replica:
                -- it rejoins as its replica
                local others = {}
                for _, port in ipairs(kit.ports) do
                    if port ~= master then others[#others + 1] = port end
                end
                kit.wait_stable(30000, others)
                os.remove(string.format("%s/%d.pid", kit.dir, master))
                kit.restart(master)
            end,
            { outage = true })
    end)

    it("a stalled master (SIGSTOP past cluster-node-timeout, then SIGCONT): losses counted", function()
        local pid
        scenario("cluster stalled master",
            function(master)
                pid = kit.pid_of(master)
                assert.is_true(sh("kill -STOP " .. pid))
            end,
            function() if pid then sh("kill -CONT " .. pid) end end,
            { outage = true })
    end)
end)
