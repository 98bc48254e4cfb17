-- resty.session.hiredis.cluster over the native transport (plain LuaJIT) against
-- a live 3 + 3 Redis Cluster: slots as Redis computes them, the Redis layout,
-- phases, the hash-tagged atomic option, configuration errors, auth, per-node pools.
local kit = require "cluster_kit"

if not kit.available then
    describe("cluster (native)", function() pending(kit.skip_reason) end)
    return
end

local core = require "resty.session.hiredis.core"
local hiredis = require "resty.session.hiredis"
local cluster = require "resty.session.hiredis.cluster"

local counter = 0
local function unique(what)
    counter = counter + 1
    return string.format("%s-%d-%d-%d", what, os.time(), math.random(1e6), counter)
end

local function meta(a, s) return { audiences = a, subjects = s } end

describe("cluster (native)", function()
    it("sends a node that timed out a lone PING before the next call's commands", function()
        local key = unique("stall")
        local s = cluster.new(kit.config({ prefix = "stall", read_timeout = 200 }))
        kit.stalled_node_probe(function(value)
            return { { s:set("session", key, value, 600, os.time()) }, { s:get("session", key) } }
        end, "stall", key)
    end)

    it("computes every slot as CLUSTER KEYSLOT does, hash tags included", function()
        local r = kit.raw(kit.ports[1])
        local keys = { "", "{", "}", "{}", "a{}b", "a{b}c{d}", "...:a}b{c", "x{{y}}", "{sessions}:session:x",
                       "\0\1\2{\255}", "sessions:session:abc" }
        for i = 1, 300 do
            local parts = {}
            for j = 1, math.random(0, 12) do
                parts[j] = string.char(({ 123, 125, 58, 97, 98, 0, 255 })[math.random(7)])
            end
            keys[#keys + 1] = table.concat(parts) .. i
        end
        for _, key in ipairs(keys) do
            assert.equal(r:call("CLUSTER", "KEYSLOT", key), core.key_slot(key), key)
        end
        r:close()
    end)

    it("is what resty.session.hiredis.new routes a configuration with nodes to", function()
        local s = hiredis.new(kit.config({ prefix = "route" }))
        local key = unique("k")
        assert.is_true(s:set("session", key, "v", 60))
        assert.equal("v", kit.key_call("route:session:" .. key, "GET", "route:session:" .. key))
        assert.equal("route", s.prefix)
    end)

    it("writes upstream's layout across slots: session key, metadata zset, old key", function()
        local s = cluster.new(kit.config({ prefix = "sessions" }))
        local now = os.time()
        local old, new = unique("old"), unique("new")
        local subject = unique("alice")
        local m = meta({ "web" }, { subject })
        assert.is_true(s:set("session", old, "old-value", 600, now, nil, nil, m))
        assert.is_true(s:set("session", new, "new-value", 300, now, old, 10, m))
        local key = "sessions:session:" .. new
        local meta_key = "sessions:session:web:" .. subject
        assert.equal("new-value", kit.key_call(key, "GET", key))
        local ttl = kit.key_call(key, "TTL", key)
        assert.is_true(ttl > 290 and ttl <= 300)
        local old_ttl = kit.key_call("sessions:session:" .. old, "TTL", "sessions:session:" .. old)
        assert.is_true(old_ttl > 0 and old_ttl <= 10)
        assert.equal(tostring(now + 300), kit.key_call(meta_key, "ZSCORE", meta_key, new))
        assert.is_nil(kit.key_call(meta_key, "ZSCORE", meta_key, old))
        local meta_ttl = kit.key_call(meta_key, "TTL", meta_key)
        assert.is_true(meta_ttl > 590)  -- never shortened by the shorter session
        assert.same({ [new] = tostring(now + 300) }, s:read_metadata("session", "web", subject, now))
        assert.equal("new-value", s:get("session", new))
        assert.is_nil(s:get("session", unique("missing")))

        assert.is_true(s:delete("session", new, now, m))
        assert.equal(0, kit.key_call(key, "EXISTS", key))
        assert.is_nil(kit.key_call(meta_key, "ZSCORE", meta_key, new))
        assert.same({}, s:read_metadata("session", "web", subject, now))
    end)

    it("keeps the new session listed when phase 1 fails: no removal of the old one", function()
        local s = cluster.new(kit.config({ prefix = "sessions" }))
        local now = os.time()
        local old, new, subject = unique("old"), unique("new"), unique("bob")
        assert.is_true(s:set("session", old, "x", 600, now, nil, nil, meta({ "web" }, { subject })))
        -- a second audience whose metadata key holds a string: phase 1 fails there
        local broken = "sessions:session:api:" .. subject
        assert.equal("OK", kit.key_call(broken, "SET", broken, "not a zset"))
        local ok, err = s:set("session", new, "y", 300, now, old, 10, meta({ "web", "api" }, { subject, subject }))
        assert.is_nil(ok)
        assert.matches("^WRONGTYPE", err)
        -- phase 2 never ran: the old session keeps its TTL and its metadata member
        local old_key = "sessions:session:" .. old
        assert.is_true(kit.key_call(old_key, "TTL", old_key) > 500)
        local web = "sessions:session:web:" .. subject
        assert.equal(tostring(now + 600), kit.key_call(web, "ZSCORE", web, old))
    end)

    it("with a hash-tagged prefix runs each call as one MULTI/EXEC on one node", function()
        local s = cluster.new(kit.config({ prefix = "{sessions}" }))
        local now = os.time()
        local old, new, subject = unique("old"), unique("new"), unique("carol")
        local m = meta({ "web" }, { subject })
        assert.is_true(s:set("session", old, "x", 600, now, nil, nil, m))
        local owner = kit.owner(core.key_slot("{sessions}"))
        local r = kit.raw(owner)
        local before = r:info("commandstats").cmdstat_exec
        local exec_before = tonumber(before and before:match("calls=(%d+)") or 0)
        assert.is_true(s:set("session", new, "y", 300, now, old, 10, m))
        local after = r:info("commandstats").cmdstat_exec
        assert.equal(exec_before + 1, tonumber(after:match("calls=(%d+)")))
        assert.equal("y", r:call("GET", "{sessions}:session:" .. new))
        assert.is_nil(r:call("ZSCORE", "{sessions}:session:web:" .. subject, old))
        r:close()
    end)

    it("rejects what cannot work at new(), naming the field", function()
        local function err_of(c)
            local ok, err = pcall(cluster.new, c)
            assert.is_false(ok)
            return err
        end
        assert.matches("invalid nodes: must be a non%-empty array", err_of({ nodes = {} }))
        assert.matches("invalid nodes: must be a non%-empty array", err_of({ nodes = "127.0.0.1" }))
        assert.matches("invalid nodes: nodes%[1%]%.port must be an integer from 1 to 65535",
                       err_of({ nodes = { { port = 0 } } }))
        assert.matches("invalid database: not supported by Redis Cluster", err_of(kit.config({ database = 1 })))
        assert.matches("invalid max_redirections", err_of(kit.config({ max_redirections = -1 })))
        assert.matches("invalid connect_timeout", err_of(kit.config({ connect_timeout = -5 })))
        local ok, err = pcall(hiredis.new, { nodes = {} })
        assert.is_false(ok)
        assert.matches("invalid nodes", err)
        -- accepted: host for ip, default port, numeric strings, the lock fields without a dict
        assert.is_table(cluster.new({ nodes = { { host = "127.0.0.1", port = "7000" }, {} },
                                      lock_zone = "no_such_dict", lock_prefix = "x", name = "c1" }))
    end)

    it("authenticates on every node: password, ACL user; refusals are errors", function()
        local key = unique("auth")
        assert.is_true(cluster.new(kit.config()):set("session", key, "v", 60))
        local acl = cluster.new(kit.config({ username = kit.acl_user, password = kit.acl_password }))
        assert.equal("v", acl:get("session", key))
        local ok, err = cluster.new(kit.config({ password = "wrong" })):get("session", key)
        assert.is_nil(ok)
        assert.matches("^WRONGPASS", err)
        local anonymous = kit.config()
        anonymous.password = nil
        ok, err = cluster.new(anonymous):get("session", key)
        assert.is_nil(ok)
        assert.matches("^NOAUTH", err)
        assert.is_false(tostring(err):find(kit.password, 1, true) ~= nil)
    end)

    it("keeps one pool per node under a custom pool name: no call ever lands on the wrong node", function()
        local s = cluster.new(kit.config({ prefix = "pooled", pool = "my-pool", pool_size = 2 }))
        local inst = cluster._core(s)
        assert.is_true(s:set("session", unique("warm"), "v", 60))  -- the map is loaded
        local keys, masters = {}, {}
        for i = 1, 150 do
            keys[i] = unique("p")
            masters[kit.owner(core.key_slot("pooled:session:" .. keys[i]))] = true
        end
        local count = 0
        for _ in pairs(masters) do count = count + 1 end
        assert.equal(3, count)  -- every master serves some of them
        -- a connection crossing nodes would bring MOVED, which patches the map
        local version = inst:topology_version()
        for _, key in ipairs(keys) do
            assert.is_true(s:set("session", key, key, 60))
        end
        for _, key in ipairs(keys) do
            assert.equal(key, s:get("session", key))
        end
        assert.equal(version, inst:topology_version())
    end)
end)
