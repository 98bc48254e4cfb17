-- The nginx configurations users copy run as documented: the README's minimal
-- example (read from README.md at test time, so the two cannot drift apart) and
-- examples/nginx.conf, each started in a real nginx with the real lua-resty-session
-- and walked through login, whoami and logout. Only what ties them to a machine
-- changes: the Redis port, the listen port, the key prefix (unique per run), and the
-- harness's module paths and prefix (spec/support/nginx.lua).
local h = require "helpers"
local nginx = require "nginx"
local upstream = require "upstream"
local cookies = require "cookies"

local function read(path)
    local f = assert(io.open(nginx.root .. "/" .. path, "rb"))
    local data = f:read("*a")
    f:close()
    return data
end

-- Replaces each plain `from` with `to`, failing when the text has no `from`.
local function replace(text, substitutions)
    for _, sub in ipairs(substitutions) do
        local from, to = sub[1], sub[2]
        local escaped = from:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
        local n
        text, n = text:gsub(escaped, (to:gsub("%%", "%%%%")))
        assert(n > 0, "not found in the configuration: " .. from)
    end
    return text
end

local function readme_example()
    local readme = read("README.md")
    local after = readme:find("A minimal nginx setup", 1, true)
    assert(after, "README.md has no minimal nginx setup")
    local block = readme:match("```nginx\n(.-)```", after)
    assert(block, "README.md has no ```nginx block after the minimal nginx setup")
    return block
end

-- Keys under `prefix:` (sorted).
local function keys(r, prefix)
    local out = assert(r:call("KEYS", prefix .. ":*"))
    table.sort(out)
    return out
end

describe("documented nginx configurations", function()
    local r

    lazy_setup(function()
        r = h.raw()
    end)

    lazy_teardown(function()
        if r then r:close() end
    end)

    -- GET with the jar's cookies; keeps the cookies the response sets.
    local function get(srv, jar, path)
        local body, status, headers = srv:get(path, jar:headers())
        jar:update(headers)
        return status, body
    end

    upstream.it("README's minimal example: login, whoami, logout", function()
        local prefix = h.unique("readme")
        local conf = replace(readme_example(), {
            { "port = 6379", "port = " .. h.port },
            { 'prefix = "sessions"', 'prefix = "' .. prefix .. '"' },
        })
        local srv = nginx.start_config(conf, { lua_path = upstream.lua_path })
        local ok, err = pcall(function()
            local jar = cookies.new()
            assert.same({ 200, "anonymous\n" }, { get(srv, jar, "/whoami") })
            assert.same({ 200, "logged in\n" }, { get(srv, jar, "/login") })
            assert.is_string(jar:get("session"))
            local stored = keys(r, prefix)
            assert.equal(1, #stored)
            assert.matches("^" .. prefix:gsub("%-", "%%-") .. ":session:", stored[1])
            assert.same({ 200, "alice\n" }, { get(srv, jar, "/whoami") })
            assert.same({ 200, "logged out\n" }, { get(srv, jar, "/logout") })
            assert.is_nil(jar:get("session"))
            assert.same({}, keys(r, prefix))
            assert.same({ 200, "anonymous\n" }, { get(srv, jar, "/whoami") })
            assert.same({ 200, "no session\n" }, { get(srv, jar, "/logout") })
        end)
        local errors = srv:shutdown()
        assert(ok, err)
        assert.same({}, errors)
    end)

    upstream.it("examples/nginx.conf: login, admin, whoami, audit, logout", function()
        local prefix, audit = h.unique("example"), h.unique("audit")
        local conf = replace(read("examples/nginx.conf"), {
            { "port = 6379", "port = " .. h.port },
            { 'prefix = "sessions"', 'prefix = "' .. prefix .. '"' },
            { 'prefix = "audit"', 'prefix = "' .. audit .. '"' },
        })
        local srv = nginx.start_config(conf, { lua_path = upstream.lua_path })
        local ok, err = pcall(function()
            local jar = cookies.new()
            assert.equal(401, (get(srv, jar, "/admin")))
            assert.equal(401, (get(srv, jar, "/whoami")))
            assert.same({ 200, "logged in\n" }, { get(srv, jar, "/login") })
            assert.equal(1, #keys(r, prefix))
            assert.same({ 200, "hello alice\n" }, { get(srv, jar, "/admin") })
            assert.same({ 200, "alice\n" }, { get(srv, jar, "/whoami") })
            -- the log phase writes through the native transport after the response
            assert.same({ 200, "ok\n" }, { get(srv, jar, "/audit") })
            assert.is_true(h.wait_until(function() return #keys(r, audit) == 1 end, 5000))
            local key = keys(r, audit)[1]
            assert.matches(":hits:%x+$", key)
            assert.equal("/audit", r:call("GET", key))
            assert.same({ 200, "logged out\n" }, { get(srv, jar, "/logout") })
            assert.same({}, keys(r, prefix))
            assert.equal(401, (get(srv, jar, "/admin")))
            assert.equal(401, (get(srv, jar, "/whoami")))
        end)
        local errors = srv:shutdown()
        assert(ok, err)
        assert.same({}, errors)
    end)
end)
