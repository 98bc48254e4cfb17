-- TLS to the sentinels (native transport): by default the data nodes' TLS
-- settings apply to the sentinels too, as upstream passes its connection options
-- to both; sentinel_ssl, sentinel_ssl_verify and sentinel_server_name override
-- them for mixed deployments. The groups of spec/support/with-sentinels.sh: a
-- TLS-only one (sentinels and servers on `tls-port`, `port 0`) and the plain
-- group's sentinels on a TLS port too (TLS sentinels, plain data nodes). Over
-- cosockets: spec/nginx/sentinel_tls_spec.lua.
local group = require "sentinel_group"

if not group.available or not group.tls.available then
    describe("sentinel over TLS", function()
        pending(group.available and group.tls.why_absent or group.why_absent)
    end)
    return
end

local sentinel = require "resty.session.hiredis.sentinel"
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

local tls = group.tls

-- Every method, as lua-resty-session uses them, on one storage.
local function every_method(s, name)
    local now = os.time()
    local meta = h.meta({ "aud" }, { "sub" })
    return {
        set = { s:set(name, "k", "v", 60, now, nil, nil, meta) },
        get = { s:get(name, "k") },
        listed = { s:read_metadata(name, "aud", "sub", now) },
        deleted = { s:delete(name, "k", now, meta) },
        gone = { s:get(name, "k") },
    }
end

local assert_every_method = require("sentinel_cases").assert_every_method

describe("sentinel over TLS", function()
    it("serves every method through a TLS-only group with ssl = true, verified with a CA", function()
        local s = hiredis.new(tls.config())
        assert_every_method(every_method(s, h.unique("tls")))
        -- the value is on the TLS master
        local out = every_method(s, h.unique("tls"))
        assert_every_method(out)
    end)

    it("names the certificate failure when the CA is wrong", function()
        local s = sentinel.new(tls.config({ ssl_trusted_certificate = tls.certs .. "/self.crt" }))
        local ok, err = s:get("session", "k")
        assert.is_nil(ok)
        assert.matches("certificate verify failed", err)
        assert.matches("^no hosts available: ssl handshake failed", err)
    end)

    it("verifies the sentinels' name: sentinel_server_name another name fails, the right one works", function()
        local s = sentinel.new(tls.config({ sentinel_server_name = "other.invalid" }))
        local ok, err = s:get("session", "k")
        assert.is_nil(ok)
        assert.matches("ssl handshake failed", err)
        s = sentinel.new(tls.config({ sentinel_server_name = "localhost" }))
        assert.same({ [1] = nil }, { s:get("session", h.unique("k")) })
    end)

    it("reaches TLS-only sentinels only with TLS: sentinel_ssl = false fails there", function()
        local s = sentinel.new(tls.config({ sentinel_ssl = false, read_timeout = 300 }))
        local ok, err = s:get("session", "k")
        assert.is_nil(ok)
        assert.matches("^no hosts available: ", err)
    end)

    it("mixed: TLS to the sentinels (sentinel_ssl), plain data nodes", function()
        local s = hiredis.new(group.config({
            sentinels = tls.mixed_sentinels,
            sentinel_ssl = true,
            sentinel_ssl_verify = true,
            ssl_trusted_certificate = tls.ca,
        }))
        local name = h.unique("mixed")
        assert_every_method(every_method(s, name))
        -- the data went to the plain master (no TLS there)
        local master = group.wait_stable(30)
        assert.is_true(s:set(name, "k2", "v2", 60, os.time()))
        local r = group.raw_server(master)
        assert.equal("v2", r:call("GET", name .. ":k2"))
        r:close()
    end)

    it("never shares a pooled sentinel connection between TLS and plain settings (pool names)", function()
        local core = require "resty.session.hiredis.core"
        local name = core.sentinel_pool_name
        local plain = name("127.0.0.1", 26379, nil, "pw", nil)
        local with_tls = name("127.0.0.1", 26379, nil, "pw", nil, { ssl = true })
        local verified = name("127.0.0.1", 26379, nil, "pw", nil, { ssl = true, ssl_verify = true })
        local sni = name("127.0.0.1", 26379, nil, "pw", nil, { ssl = true, ssl_verify = true, server_name = "a" })
        local ca = name("127.0.0.1", 26379, nil, "pw", nil, { ssl = true, ssl_trusted_certificate = "/ca.pem" })
        local seen = {}
        for _, n in ipairs({ plain, with_tls, verified, sni, ca }) do
            assert.is_nil(seen[n], n)
            seen[n] = true
        end
        assert.equal(plain, name("127.0.0.1", 26379, nil, "pw", nil, { ssl = false }))
        assert.equal(plain, name("127.0.0.1", 26379, nil, "pw", nil))
    end)

    it("rejects bad sentinel TLS fields at new(), naming the field", function()
        for field, value in pairs({ sentinel_ssl = "yes", sentinel_ssl_verify = 1, sentinel_server_name = true }) do
            local ok, err = pcall(sentinel.new, group.config({ [field] = value }))
            assert.is_false(ok)
            assert.matches("^invalid " .. field .. ": must be a", err)
        end
    end)
end)
