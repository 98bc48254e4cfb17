-- resty.session.hiredis.cluster over TLS inside a real nginx, against the TLS-only
-- 3 + 3 cluster (`cluster_tls`: no plain port, so every call that succeeds went
-- over TLS): cosockets (sslhandshake, trust from lua_ssl_trusted_certificate, the
-- name checked against server_name) on every master, the native transport in the
-- log phase, and a CA that did not sign the nodes' certificates as `nil, err`.
local kit = require "cluster_tls_kit"

if not kit.available then
    describe("cluster over TLS in nginx", function() pending(kit.skip_reason) end)
    return
end

local nginx = require "nginx"

local NOW = os.time()

local function start(trusted)
    return nginx.start_kit({
        workers = 1,
        http = "  lua_ssl_trusted_certificate " .. kit.certs .. "/" .. trusted .. ";\n"
            .. "  lua_ssl_verify_depth 2;\n",
    })
end

-- Writes sessions across many slots, reads them and their metadata back, deletes
-- them; returns what it saw.
local ROUND_TRIP = [[
    local s = H.hiredis.new(ARGS.cfg)
    local m = { audiences = { "web" }, subjects = { ARGS.subject } }
    local r = { set = {}, get = {} }
    for i = 1, ARGS.count do
        local ok, err = s:set("session", "id-" .. i, "value-" .. i, 300, ARGS.now, nil, nil, m)
        r.set[i] = ok or err
    end
    for i = 1, ARGS.count do r.get[i] = s:get("session", "id-" .. i) end
    r.listed = s:read_metadata("session", "web", ARGS.subject, ARGS.now)
    return r
]]

local DELETE = [[
    local s = H.hiredis.new(ARGS.cfg)
    local m = { audiences = { "web" }, subjects = { ARGS.subject } }
    local r = {}
    for i = 1, ARGS.count do r[i] = s:delete("session", "id-" .. i, ARGS.now, m) end
    r.listed = s:read_metadata("session", "web", ARGS.subject, ARGS.now)
    return r
]]

describe("cluster over TLS in nginx", function()
    local srv

    lazy_setup(function()
        srv = start("ca.crt")
    end)

    lazy_teardown(function()
        if srv then srv:shutdown() end
    end)

    local function run(phase, code, args)
        local res = srv:run(phase, code, args)
        assert.is_true(res.ok, tostring(res[1]))
        return res[1], res
    end

    for _, case in ipairs({ { "content", "cosockets" }, { "log", "native" } }) do
        local phase, transport = case[1], case[2]
        it(string.format("round trips across slots on every master, verified (%s, %s)", phase, transport), function()
            local prefix = string.format("ntls-%s-%d", phase, math.random(1e9))
            local args = { cfg = kit.config({ prefix = prefix }), subject = "s" .. math.random(1e9),
                           count = 24, now = NOW }
            local connections = {}
            for port in pairs(kit.masters()) do
                connections[port] = kit.info_number(port, "stats", "total_connections_received")
            end

            local out, res = run(phase, ROUND_TRIP, args)
            if transport == "cosockets" then
                assert.is_true(res.cosocket > 0)
            else
                assert.equal(0, res.cosocket)
            end
            local expected = {}
            for i = 1, args.count do
                assert.equal(true, out.set[i])
                assert.equal("value-" .. i, out.get[i])
                expected["id-" .. i] = tostring(NOW + 300)
            end
            assert.same(expected, out.listed)

            -- server side: keys on all three masters, each reached over a new connection
            -- (TLS: the nodes have no other port)
            local total = 0
            for port, before in pairs(connections) do
                local here = #kit.local_keys(port, prefix .. ":session:id-*")
                assert.is_true(here > 0, "no session key on master " .. port)
                total = total + here
                assert.is_true(kit.info_number(port, "stats", "total_connections_received") > before,
                               "no connection to master " .. port)
            end
            assert.equal(args.count, total)

            local deleted = run(phase, DELETE, args)
            for i = 1, args.count do assert.is_true(deleted[i]) end
            assert.same({}, deleted.listed)
            for port in pairs(connections) do
                assert.same({}, kit.local_keys(port, prefix .. ":*"))
            end
        end)
    end

    it("rejects the nodes' certificates when lua_ssl_trusted_certificate holds another CA", function()
        local other = start("self.crt")
        finally(function() other:shutdown() end)
        local res = other:run("content", [[
            local s = H.hiredis.new(ARGS.cfg)
            local ok, err = s:set("session", "k", "v", 60, ARGS.now)
            local v, gerr = s:get("session", "k")
            return { ok = ok, err = err, v = v, gerr = gerr }
        ]], { cfg = kit.config({ prefix = "ntls-wrong-ca" }), now = NOW })
        assert.is_true(res.ok, tostring(res[1]))
        assert.is_true(res.cosocket > 0)
        assert.is_nil(res[1].ok)
        assert.is_nil(res[1].v)
        -- lua-nginx-module 0.10.23 (Debian 12) sometimes loses the handshake error
        -- and reports the closed connection instead (see spec/nginx/tls_spec.lua)
        for _, err in ipairs({ res[1].err, res[1].gerr }) do
            assert.is_true(err:find("certificate verify failed", 1, true) ~= nil
                           or err:find("self-signed certificate", 1, true) ~= nil
                           or err:find("closed", 1, true) ~= nil, "unexpected error: " .. err)
            assert.is_nil(err:find(kit.password, 1, true))
        end
        assert.same({}, kit.local_keys(kit.owner(kit.slot("ntls-wrong-ca:session:k")), "ntls-wrong-ca:*"))
    end)

    it("rejects the nodes' certificates for another server_name (cosockets)", function()
        local out = run("content", [[
            local v, err = H.hiredis.new(ARGS.cfg):get("session", "k")
            return { v = v, err = err }
        ]], { cfg = kit.config({ prefix = "ntls-name", server_name = "other.invalid" }) })
        assert.is_nil(out.v)
        assert.is_true(out.err:find("certificate host mismatch", 1, true) ~= nil
                       or out.err:find("closed", 1, true) ~= nil, "unexpected error: " .. out.err)
    end)
end)
