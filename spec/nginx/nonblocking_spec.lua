-- The nginx event loop is never blocked: with every Redis reply delayed by a TCP
-- proxy, N concurrent requests to ONE nginx worker finish in about one delay
-- through cosockets. The control (transport = "native" forced in the content
-- phase) shows what blocking looks like with the same setup: about N delays.
local h = require "helpers"
local nginx = require "nginx"

local DELAY_MS = 300
local N = 8

describe("nginx event loop", function()
    local srv, proxy_port, stop_proxy, name

    lazy_setup(function()
        proxy_port, stop_proxy = nginx.delay_proxy(h.host, h.port, DELAY_MS)
        name = h.unique("nonblocking")
        local r = h.raw()
        r:call("SET", name .. ":k", "value")
        r:close()
        srv = nginx.start_kit({
            workers = 1,
            vars = { port = proxy_port, name = name },
            server = [[
                location = /get {
                    content_by_lua_block {
                        local transport = ngx.var.arg_transport
                        local s = H.storage({ port = T.port, transport = transport,
                                              pool_size = 32 }, "nonblocking-" .. (transport or "auto"))
                        local v, err = s:get(T.name, "k")
                        ngx.say(v or ("error: " .. tostring(err)))
                    }
                }
            ]],
        })
    end)

    lazy_teardown(function()
        if srv then assert.same({}, srv:shutdown()) end
        if stop_proxy then stop_proxy() end
    end)

    local function urls(query)
        local out = {}
        for i = 1, N do out[i] = srv:url("/get?i=" .. i .. (query or "")) end
        return out
    end

    local function check_all(results)
        for i, res in ipairs(results) do
            assert.equal(200, res.status, "request " .. i)
            assert.equal("value\n", res.body, "request " .. i)
            -- every request did wait for a delayed reply
            assert.is_true(res.time >= DELAY_MS / 1000 * 0.9, "request " .. i .. " took " .. res.time)
        end
    end

    it("serves " .. N .. " concurrent requests through cosockets in about one delay", function()
        -- warm up: N pooled connections, so that the measured round is one reply each
        check_all((nginx.concurrent(urls())))
        local results, elapsed = nginx.concurrent(urls())
        check_all(results)
        -- blocking would take N * DELAY (2.4 s); allow generous slack for slow machines
        assert.is_true(elapsed < 4 * DELAY_MS / 1000,
                       string.format("%d requests took %.3f s", N, elapsed))
    end)

    it("control: forcing the native transport in content serialises the same requests", function()
        check_all((nginx.concurrent(urls("&transport=native"))))
        local results, elapsed = nginx.concurrent(urls("&transport=native"))
        check_all(results)
        assert.is_true(elapsed >= N * DELAY_MS / 1000 * 0.9,
                       string.format("%d blocking requests took only %.3f s", N, elapsed))
    end)
end)
