-- Live slot migrations under resty.session.hiredis.cluster (native transport):
-- MOVED after a reshard, ASK while a slot migrates (never updating the map), and
-- the migration finishing without BUSYKEY after our writes during it.
local kit = require "cluster_kit"

if not kit.available then
    describe("cluster resharding", function() pending(kit.skip_reason) end)
    return
end

local core = require "resty.session.hiredis.core"
local cluster = require "resty.session.hiredis.cluster"
local hiredis = require "resty.session.hiredis"
local sd = require "stats_delta"

local counter = 0
local function unique(what)
    counter = counter + 1
    return string.format("%s-%d-%d-%d", what, os.time(), math.random(1e6), counter)
end

-- n session keys (the `key` argument) whose Redis keys share one slot.
local function keys_in_one_slot(prefix, n)
    local first = unique("k")
    local slot = core.key_slot(prefix .. ":session:" .. first)
    local out = { first }
    while #out < n do
        local k = unique("k")
        if core.key_slot(prefix .. ":session:" .. k) == slot then out[#out + 1] = k end
    end
    return slot, out
end

describe("cluster resharding", function()
    after_each(function()
        assert(kit.wait_stable(10000))
    end)

    it("follows MOVED after a live reshard and patches the slot map (counted in stats)", function()
        local s = cluster.new(kit.config({ prefix = "moved" }))
        local inst = cluster._core(s)
        local key = unique("k")
        local slot = core.key_slot("moved:session:" .. key)
        assert.is_true(s:set("session", key, "before", 600))
        local from = kit.owner(slot)
        local to = kit.other_master(from)
        assert.equal("127.0.0.1:" .. from, inst:slot_owner(slot))
        kit.move_slot(slot, from, to)
        local before = hiredis.stats()
        assert.equal("before", s:get("session", key))  -- MOVED, followed
        local d = sd.delta(before, hiredis.stats())
        assert.equal(1, d["cluster.moved"])
        assert.equal(1, d["cluster.refreshes"], "a MOVED asks for the slot map once")
        assert.equal(1, d["cluster.retries"])
        assert.equal(0, d["cluster.ask"])
        assert.equal(1, d["get.calls"], "a call is counted once whatever its retries")
        assert.equal(0, d["get.errors"])
        assert.equal("127.0.0.1:" .. to, inst:slot_owner(slot))
        assert.is_true(s:set("session", key, "after", 600))
        assert.equal("after", kit.call(to, "GET", "moved:session:" .. key))
    end)

    it("follows ASK while a slot migrates, leaves the map alone, and the migration ends without BUSYKEY", function()
        local s = cluster.new(kit.config({ prefix = "ask" }))
        local inst = cluster._core(s)
        local slot, keys = keys_in_one_slot("ask", 3)
        local old, moved_early, fresh = keys[1], keys[2], keys[3]
        assert.is_true(s:set("session", old, "old", 600))
        assert.is_true(s:set("session", moved_early, "early", 600))
        local from = kit.owner(slot)
        local to = kit.other_master(from)
        kit.migrate_begin(slot, from, to)
        -- one key already on the target, the others still on the source
        assert(kit.call(from, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "AUTH", kit.password,
                        "KEYS", "ask:session:" .. moved_early))
        local before = hiredis.stats()
        assert.equal("early", s:get("session", moved_early))            -- ASK to the target
        local d = sd.delta(before, hiredis.stats())
        assert.equal(1, d["cluster.ask"])
        assert.equal(0, d["cluster.moved"])
        assert.equal(1, d["get.calls"])
        assert.equal("old", s:get("session", old))                      -- the source still serves it
        assert.is_true(s:set("session", fresh, "fresh", 600))           -- a new key: ASK, created on the target
        local r = kit.raw(to)
        local asked = r:pipeline({ { "ASKING" }, { "GET", "ask:session:" .. fresh } })
        r:close()
        assert.equal("fresh", asked[2][1])
        assert.equal("fresh", s:get("session", fresh))
        assert.is_true(s:set("session", old, "old2", 600))              -- an existing key: written on the source
        assert.equal("127.0.0.1:" .. from, inst:slot_owner(slot))       -- ASK never updates the map
        -- of ours only the old key is left on the source (keys of earlier specs may
        -- share the slot); each key moves without REPLACE, so no BUSYKEY
        local left = {}
        for _, k in ipairs(assert(kit.call(from, "CLUSTER", "GETKEYSINSLOT", slot, 1000))) do left[k] = true end
        assert.is_true(left["ask:session:" .. old])
        assert.is_nil(left["ask:session:" .. moved_early])
        assert.is_nil(left["ask:session:" .. fresh])
        local n = 0
        for _ in pairs(left) do n = n + 1 end
        assert.equal(n, kit.migrate_keys(slot, from, to))
        kit.migrate_end(slot, from, to)
        assert.equal("old2", s:get("session", old))
        assert.equal("early", s:get("session", moved_early))
        assert.equal("fresh", s:get("session", fresh))
    end)

    it("splits a hash-tagged transaction per key during a migration, without BUSYKEY", function()
        local s = cluster.new(kit.config({ prefix = "{askt}" }))
        local slot = core.key_slot("{askt}")
        local now = os.time()
        local subject = unique("dave")
        local m = { audiences = { "web" }, subjects = { subject } }
        local old = unique("old")
        assert.is_true(s:set("session", old, "old", 600, now, nil, nil, m))  -- the zset exists on the source
        local from = kit.owner(slot)
        local to = kit.other_master(from)
        kit.migrate_begin(slot, from, to)
        local new = unique("new")
        -- the new session key is missing on the source (ASK), its metadata key is not
        assert.is_true(s:set("session", new, "new", 300, now, old, 10, m))
        assert.same({ [new] = tostring(now + 300) }, s:read_metadata("session", "web", subject, now))
        local r = kit.raw(to)
        local asked = r:pipeline({ { "ASKING" }, { "EXISTS", "{askt}:session:web:" .. subject } })
        r:close()
        assert.equal(0, asked[2][1])  -- the zset was not created on the target
        assert.is_true(kit.migrate_keys(slot, from, to) >= 2)                    -- no BUSYKEY
        kit.migrate_end(slot, from, to)
        assert.equal("new", s:get("session", new))
        assert.same({ [new] = tostring(now + 300) }, s:read_metadata("session", "web", subject, now))
    end)
end)
