-- TLS over the native transport: ssl, ssl_verify, server_name, the CA and
-- client-certificate extensions, timeouts against non-TLS peers, pooling, SNI.
-- Servers (spec/support/with-servers.sh): tls (CA-signed, SAN localhost,
-- 127.0.0.1, ::1), tls_client (client certificates required), tls_self
-- (self-signed), tls_other (CA-signed for other.invalid only).
local hiredis = require "resty.session.hiredis"
local core = require "resty.session.hiredis.core"
local h = require "helpers"
local socket = require "socket"

local certs = h.env("HIREDIS_TEST_CERTS")
local tls_port = tonumber(h.env("HIREDIS_TEST_TLS_PORT"))
local client_port = tonumber(h.env("HIREDIS_TEST_TLS_CLIENT_PORT"))
local self_port = tonumber(h.env("HIREDIS_TEST_TLS_SELF_PORT"))
local other_port = tonumber(h.env("HIREDIS_TEST_TLS_OTHER_PORT"))

local function cert(file)
    return certs .. "/" .. file
end

local shell_quote = require("files").shell_quote

-- Output of a shell command (stdout and stderr).
local function run(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
end

-- redis-cli over TLS to the tls server (the raw Lua client speaks plain TCP only).
local function tls_cli(...)
    local args = { "redis-cli", "--tls", "--cacert", cert("ca.crt"), "-h", "127.0.0.1",
                   "-p", tls_port }
    for _, a in ipairs({ ... }) do args[#args + 1] = a end
    for i, a in ipairs(args) do args[i] = shell_quote(a) end
    return run(table.concat(args, " "))
end

-- Ids of the normal connections to the tls server other than redis-cli's own.
local function tls_client_ids()
    local out = tls_cli("CLIENT", "LIST", "TYPE", "normal")
    local ids = {}
    for line in out:gmatch("[^\n]+") do
        local id, cmd = line:match("id=(%d+) .* cmd=(%S+)")
        if id and cmd ~= "client|list" and cmd ~= "client" then ids[#ids + 1] = id end
    end
    table.sort(ids)
    return ids
end

local function verified(extra)
    local c = { host = "127.0.0.1", port = tls_port, ssl = true, ssl_verify = true,
                ssl_trusted_certificate = cert("ca.crt") }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

local function starts_with(s, prefix)
    return type(s) == "string" and s:sub(1, #prefix) == prefix
end

-- Runs `code` in a fresh luajit with this process's module paths and extra
-- environment variables; returns its output.
local function luajit_with_env(env, code)
    local prelude = string.format("package.path = %q; package.cpath = %q; ",
                                  package.path, package.cpath)
    local vars = {}
    for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. shell_quote(v) end
    return run(string.format("env %s luajit -e %s", table.concat(vars, " "),
                             shell_quote(prelude .. code)))
end

describe("tls", function()
    local name

    setup(function()
        assert(certs and tls_port and client_port and self_port and other_port,
               "the TLS servers are not running: use spec/support/with-servers.sh")
    end)

    before_each(function()
        name = h.unique("tls")
    end)

    after_each(function()
        collectgarbage()
    end)

    describe("round trip", function()
        it("set, get, read_metadata and delete over a verified connection", function()
            local store = hiredis.new(verified())
            local now = os.time()
            local meta = { audiences = { "aud" }, subjects = { "sub" } }
            assert.equal(true, store:set(name, "k1", "v1", 60, now, nil, nil, meta))
            assert.equal(true, store:set(name, "k2", "v2", 60, now, "k1", 10, meta))
            assert.equal("v2", store:get(name, "k2"))
            assert.same({ k2 = tostring(now + 60) }, store:read_metadata(name, "aud", "sub", now))
            assert.equal(true, store:delete(name, "k2", now, meta))
            local value, err = store:get(name, "k2")
            assert.is_nil(value)
            assert.is_nil(err)
            assert.same({}, store:read_metadata(name, "aud", "sub", now))
            local ttl = tonumber(tls_cli("TTL", name .. ":k1"):match("%-?%d+"))
            assert.is_true(ttl > 0 and ttl <= 10, "stale ttl " .. tostring(ttl))
        end)

        it("carries binary values of every size", function()
            local store = hiredis.new(verified())
            local big = h.all_bytes():rep(8192)  -- 2 MiB: many TLS records both ways
            assert.equal(true, store:set(name, "bin", big, 60, os.time()))
            assert.equal(big, store:get(name, "bin"))
            assert.equal(true, store:set(name, "empty", "", 60, os.time()))
            assert.equal("", store:get(name, "empty"))
        end)

        it("works with an IPv6 literal host verified against its IP SAN", function()
            if not h.ipv6 then
                pending("no IPv6 loopback")
                return
            end
            local store = hiredis.new(verified({ host = "::1" }))
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("verifies the host name localhost against the DNS SAN", function()
            local store = hiredis.new(verified({ host = "localhost" }))
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
        end)
    end)

    describe("verification", function()
        it("succeeds with the CA from SSL_CERT_FILE (system trust store path)", function()
            local code = string.format([[
                local s = require("resty.session.hiredis").new({ port = %d, ssl = true,
                    ssl_verify = true })
                print(s:set("%s", "k", "v", 60, os.time()))]], tls_port, name)
            local out = luajit_with_env({ SSL_CERT_FILE = cert("ca.crt") }, code)
            assert.equal("true\n", out)
        end)

        it("fails against the default trust store, which lacks the test CA", function()
            local code = string.format([[
                local s = require("resty.session.hiredis").new({ port = %d, ssl = true,
                    ssl_verify = true })
                print(s:get("%s", "k"))]], tls_port, name)
            -- an empty CA directory: nothing in the environment trusts the test CA
            local out = luajit_with_env({ SSL_CERT_FILE = cert("self.crt"),
                                          SSL_CERT_DIR = h.tmp }, code)
            assert.matches("^nil\tssl handshake failed: certificate verify failed", out)
        end)

        it("fails against a self-signed certificate", function()
            local store = hiredis.new(verified({ port = self_port }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.equal("ssl handshake failed: certificate verify failed: self-signed certificate",
                         err)
            local value, gerr = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^ssl handshake failed: certificate verify failed", gerr)
        end)

        it("fails when the certificate is for another name (server_name checked)", function()
            local store = hiredis.new(verified({ port = other_port, server_name = "localhost" }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.equal("ssl handshake failed: hostname mismatch", err)
        end)

        it("fails when the certificate is for another name (host IP checked)", function()
            local store = hiredis.new(verified({ port = other_port }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.equal("ssl handshake failed: hostname mismatch", err)
        end)

        it("verifies server_name instead of host", function()
            local store = hiredis.new(verified({ port = other_port, server_name = "other.invalid" }))
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("does not verify with ssl_verify = false or nil (encrypted only, as upstream)", function()
            for _, verify in ipairs({ false, "nil" }) do
                local c = { port = self_port, ssl = true }
                if verify ~= "nil" then c.ssl_verify = verify end
                local store = hiredis.new(c)
                assert.equal(true, store:set(name, "k", "v", 60, os.time()))
                assert.equal("v", store:get(name, "k"))
            end
            local other = hiredis.new({ port = other_port, ssl = true, ssl_verify = false,
                                        server_name = "localhost" })
            assert.equal(true, other:set(name, "k", "v", 60, os.time()))
        end)

        it("reports an unreadable trusted certificate file", function()
            local store = hiredis.new(verified({
                ssl_trusted_certificate = h.tmp .. "/does-not-exist.crt" }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.matches("^ssl trusted certificate: ", err)
        end)
    end)

    describe("client certificates", function()
        it("are required by a tls-auth-clients server", function()
            local store = hiredis.new(verified({ port = client_port }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.is_string(err)
            assert.is_nil(err:find("certs", 1, true), err)  -- no file paths in the message
        end)

        it("are sent from ssl_client_cert and ssl_client_priv_key", function()
            local store = hiredis.new(verified({ port = client_port,
                                                 ssl_client_cert = cert("client.crt"),
                                                 ssl_client_priv_key = cert("client.key") }))
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("report files that cannot be loaded", function()
            local store = hiredis.new(verified({ port = client_port,
                                                 ssl_client_cert = h.tmp .. "/none.crt",
                                                 ssl_client_priv_key = cert("client.key") }))
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.matches("^ssl client certificate: ", err)
            local mismatched = hiredis.new(verified({ port = client_port,
                                                      pool = h.unique("mismatched"),
                                                      ssl_client_cert = cert("client.crt"),
                                                      ssl_client_priv_key = cert("other.key") }))
            local ok2, err2 = mismatched:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok2)
            assert.matches("^ssl client private key: ", err2)
        end)
    end)

    describe("timeouts and non-TLS peers", function()
        it("TLS against a plain Redis port fails within connect_timeout", function()
            local store = hiredis.new({ port = h.port, ssl = true, connect_timeout = 500,
                                        read_timeout = 5000, send_timeout = 5000 })
            local start = h.now()
            local value, err = store:get(name, "k")
            local elapsed = h.now() - start
            assert.is_nil(value)
            assert.is_true(err == "timeout" or starts_with(err, "ssl handshake failed"), err)
            assert.is_true(elapsed < 3, "took " .. elapsed .. " s")
        end)

        it("TLS against a silent listener times out after connect_timeout", function()
            -- accepts in the kernel backlog, never writes
            local listener = assert(socket.bind("127.0.0.1", 0))
            local _, port = listener:getsockname()
            port = tonumber(port)
            local store = hiredis.new({ port = port, ssl = true, connect_timeout = 300,
                                        read_timeout = 5000, send_timeout = 5000 })
            local start = h.now()
            local ok, err = store:set(name, "k", "v", 60, os.time())
            local elapsed = h.now() - start
            listener:close()
            assert.is_nil(ok)
            assert.equal("timeout", err)
            assert.is_true(elapsed >= 0.29 and elapsed < 1.5, "took " .. elapsed .. " s")
        end)

        it("plain against a TLS port fails cleanly", function()
            local store = hiredis.new({ port = tls_port, connect_timeout = 1000,
                                        read_timeout = 500, send_timeout = 500 })
            local start = h.now()
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.is_true(h.now() - start < 3)
            -- the module still works for a proper configuration afterwards
            assert.equal(true, hiredis.new(verified()):set(name, "k", "v", 60, os.time()))
        end)
    end)

    describe("pooling", function()
        it("reuses pooled TLS connections", function()
            tls_cli("CLIENT", "KILL", "TYPE", "normal")
            assert.is_true(h.wait_until(function() return #tls_client_ids() == 0 end, 2000))
            local store = hiredis.new(verified({ pool = h.unique("tls-pool") }))
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            local ids = tls_client_ids()
            assert.equal(1, #ids)
            for _ = 1, 5 do
                assert.equal("v", store:get(name, "k"))
            end
            assert.same(ids, tls_client_ids())
        end)

        it("never shares a pool between TLS and plain configurations", function()
            local plain = core.new({ port = tls_port })
            local tls = core.new({ port = tls_port, ssl = true })
            local tls_verify = core.new(verified())
            local tls_named = core.new(verified({ server_name = "localhost" }))
            local names = { plain:pool_name(), tls:pool_name(), tls_verify:pool_name(),
                            tls_named:pool_name() }
            for i = 1, #names do
                for j = i + 1, #names do
                    assert.are_not.equal(names[i], names[j])
                end
            end
        end)

        it("does not hand a pooled TLS connection to a plain configuration", function()
            local tls_store = hiredis.new({ port = tls_port, ssl = true })
            assert.equal(true, tls_store:set(name, "k", "v", 60, os.time()))  -- now pooled
            local plain_store = hiredis.new({ port = tls_port, read_timeout = 500 })
            local value, err = plain_store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.equal("v", tls_store:get(name, "k"))
        end)

        it("does not hand a pooled plain connection to a TLS configuration", function()
            local plain_store = hiredis.new({ port = h.port })
            assert.equal(true, plain_store:set(name, "k", "v", 60, os.time()))  -- now pooled
            local tls_store = hiredis.new({ port = h.port, ssl = true, connect_timeout = 300 })
            local value, err = tls_store:get(name, "k")
            assert.is_nil(value)
            assert.is_true(err == "timeout" or starts_with(err, "ssl handshake failed"), err)
            assert.equal("v", plain_store:get(name, "k"))
        end)
    end)

    describe("SNI", function()
        -- openssl s_server traces the ClientHello; it is no Redis, so the call
        -- itself fails (or times out): only the trace matters.
        local function client_hello_server_name(config)
            local port = h.unused_port()
            local trace = os.tmpname()
            local out = os.tmpname()
            local cmd = string.format(
                "openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -trace -msgfile %s "
                    .. "</dev/null >%s 2>&1 & echo $!",
                port, shell_quote(cert("server.crt")), shell_quote(cert("server.key")),
                shell_quote(trace), shell_quote(out))
            local p = assert(io.popen(cmd))
            local pid = tonumber(p:read("*l"))
            p:close()
            local ok, result = pcall(function()
                assert(h.wait_until(function()
                    local f = io.open(out)
                    local text = f and f:read("*a") or ""
                    if f then f:close() end
                    return text:find("ACCEPT", 1, true) ~= nil
                end, 5000), "openssl s_server did not start")
                config.port = port
                config.ssl = true
                config.connect_timeout = 1000
                config.read_timeout = 500
                config.send_timeout = 500
                hiredis.new(config):get(name, "k")
                local f = assert(io.open(trace))
                local text = f:read("*a")
                f:close()
                -- the hex dump of the extension, up to the next extension
                local block = text:match("extension_type=server_name%(0%)[^\n]*\n(.-)extension_type=")
                if not block then return nil end
                local bytes = {}
                for line in block:gmatch("[^\n]+") do
                    local hex = line:match("^%s*%x%x%x%x %- (.-)%s%s%s")
                    for byte in (hex or ""):gsub("%-", " "):gmatch("%x%x") do
                        bytes[#bytes + 1] = string.char(tonumber(byte, 16))
                    end
                end
                -- list length (2), type (1), name length (2), name
                return table.concat(bytes):sub(6)
            end)
            os.execute("kill " .. pid .. " 2>/dev/null")
            os.remove(trace)
            os.remove(out)
            assert(ok, result)
            return result
        end

        it("sends server_name", function()
            assert.equal("sni.example.test",
                         client_hello_server_name({ server_name = "sni.example.test" }))
        end)

        it("sends the host name when server_name is not set", function()
            assert.equal("localhost", client_hello_server_name({ host = "localhost" }))
        end)

        it("sends no server_name extension for an IP literal host", function()
            assert.is_nil(client_hello_server_name({ host = "127.0.0.1" }))
        end)
    end)
end)
