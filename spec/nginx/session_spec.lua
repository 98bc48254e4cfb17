-- The real lua-resty-session inside nginx with this module as its storage, by name
-- (storage = "resty.session.hiredis") and as an instance: the flows an application
-- runs (login, open, refresh, regenerate, logout, destroy, remember-me), checked
-- against what Redis holds. The libraries come from UPSTREAM_LUA_PATH or
-- ../shared/third_party; without them these specs are pending with the reason.
local h = require "helpers"
local upstream = require "upstream"
local kit = require "session_kit"
local mime = require "mime"

local ROLLING = 600   -- rolling_timeout: the TTL lua-resty-session gives a saved session
local STALE = 30      -- stale_ttl: what an old session id keeps after a regeneration
local IDLE = 60       -- idling_timeout
local TOUCH = 10      -- touch_threshold

local OPTIONS = {
    rolling_timeout = ROLLING, stale_ttl = STALE, idling_timeout = IDLE, touch_threshold = TOUCH,
    audience = "web",
}

local function b64url(s)
    return (mime.b64(s):gsub("%+", "-"):gsub("/", "_"):gsub("=", ""))
end

local function options(extra)
    local out = {}
    for k, v in pairs(OPTIONS) do out[k] = v end
    for k, v in pairs(extra or {}) do out[k] = v end
    return out
end

-- The chunks a browser's requests run (S.config(ARGS): see spec/support/session_kit.lua).
local LOGIN = [[
    local s = S.session.new(S.config(ARGS))
    s:set_subject("alice")
    s:set("role", "admin")
    assert(s:save())
    return { id = s:get_property("id"), now = S.now(s) }
]]
local OPEN = [[
    local s, err, exists = S.session.open(S.config(ARGS))
    return { exists = exists, err = err, subject = s:get_subject(), role = s:get("role"),
             id = exists and s:get_property("id") or nil, now = S.now(s) }
]]
local START = [[
    local s, err, exists, refreshed = S.session.start(S.config(ARGS))
    return { exists = exists, err = err, refreshed = refreshed, subject = s:get_subject(),
             id = exists and s:get_property("id") or nil, now = S.now(s) }
]]
local REGENERATE = [[
    local s, err, exists = S.session.open(S.config(ARGS))
    assert(exists, err)
    assert(s:save())
    return { id = s:get_property("id"), now = S.now(s) }
]]
-- Joins audience ARGS.join to the session that the cookie holds.
local JOIN = [[
    local s, err, exists = S.session.open(S.config(ARGS))
    assert(not exists and err == "missing session audience", tostring(err))
    s:set_subject("alice")
    assert(s:save())
    return { id = s:get_property("id"), now = S.now(s) }
]]
local LOGOUT = [[
    local ok, err, exists, logged_out = S.session.logout(S.config(ARGS))
    return { ok = ok, err = err, exists = exists, logged_out = logged_out }
]]
local DESTROY = [[
    local ok, err, exists, destroyed = S.session.destroy(S.config(ARGS))
    return { ok = ok, err = err, exists = exists, destroyed = destroyed }
]]

describe("lua-resty-session with resty.session.hiredis", function()
    local srv, r

    lazy_setup(function()
        if upstream.missing then return end
        srv = kit.start()
        r = h.raw()
    end)

    lazy_teardown(function()
        if r then r:close() end
        if srv then assert.same({}, srv:shutdown()) end
    end)

    for _, via in ipairs({ "name", "instance" }) do
        local function browser(extra_options)
            local prefix = h.unique("session-" .. via)
            return kit.browser(srv, { backend = "hiredis", via = via, prefix = prefix,
                                      session = options(extra_options) }), prefix
        end

        local function snapshot(prefix)
            return kit.snapshot(r, prefix)
        end

        describe("(storage by " .. via .. ")", function()
            upstream.it("login stores the session under [prefix:]session:<id> for rolling_timeout; open reads it",
                        function()
                local b, prefix = browser()
                local login = b:run(LOGIN)
                assert.is_string(b.jar:get("session"))
                local data = snapshot(prefix)
                assert.same({ "session:" .. login.id }, kit.keys(data))
                local stored = data["session:" .. login.id]
                assert.equal("string", stored.type)
                assert.is_true(stored.ttl >= ROLLING - 1 and stored.ttl <= ROLLING, "ttl " .. stored.ttl)

                local open = b:run(OPEN)
                assert.same({ exists = true, subject = "alice", role = "admin", id = login.id, now = open.now },
                            open)
                -- a browser without the cookie has no session
                local stranger = kit.browser(srv, b.settings)
                assert.is_false(stranger:run(OPEN).exists)
                -- the cookie alone is not enough: the data lives in Redis
                assert.equal(1, r:call("DEL", prefix .. ":session:" .. login.id))
                local gone = b:run(OPEN)
                assert.is_false(gone.exists)
                assert.equal("unable to load session", gone.err)
            end)

            upstream.it("refresh past 3/4 of rolling_timeout saves under a new id; the old id keeps stale_ttl",
                        function()
                local b, prefix = browser({ idling_timeout = 0 })   -- only the rolling timeout
                local login = b:run(LOGIN)
                local old_cookie = b:clone()
                local offset = math.floor(ROLLING * 0.75) + 10
                local refreshed = b:run(START, { offset = offset })
                assert.is_true(refreshed.exists)
                assert.is_true(refreshed.refreshed, tostring(refreshed.err))
                assert.not_equal(login.id, refreshed.id)
                local data = snapshot(prefix)
                local keys = { "session:" .. login.id, "session:" .. refreshed.id }
                table.sort(keys)
                assert.same(keys, kit.keys(data))
                local new_ttl, old_ttl = data["session:" .. refreshed.id].ttl, data["session:" .. login.id].ttl
                assert.is_true(new_ttl > STALE and new_ttl <= ROLLING, "new ttl " .. new_ttl)
                assert.is_true(old_ttl > 0 and old_ttl <= STALE, "old ttl " .. old_ttl)
                -- both cookies open for now: the old one only until stale_ttl passes
                assert.equal(refreshed.id, b:run(OPEN, { offset = offset }).id)
                assert.equal(login.id, old_cookie:run(OPEN, { offset = offset }).id)
            end)

            upstream.it("refresh past touch_threshold touches the cookie only; idling_timeout ends a session",
                        function()
                local b, prefix = browser()
                local login = b:run(LOGIN)
                local untouched = b:clone()
                local before = snapshot(prefix)
                local cookie = b.jar:get("session")
                local touched = b:run(START, { offset = TOUCH + 10 })
                assert.is_true(touched.exists)
                assert.is_true(touched.refreshed)
                assert.equal(login.id, touched.id)
                assert.not_equal(cookie, b.jar:get("session"))
                -- nothing was written: same key, same value
                local after = snapshot(prefix)
                assert.same(kit.keys(before), kit.keys(after))
                assert.equal(before["session:" .. login.id].value, after["session:" .. login.id].value)
                -- IDLE + 5 s after login, but only IDLE - 5 s after the touch
                local late = TOUCH + 10 + IDLE - 5
                local kept = b:run(OPEN, { offset = late })
                assert.is_true(kept.exists)
                assert.equal(login.id, kept.id)
                local idle = untouched:run(OPEN, { offset = late })
                assert.is_false(idle.exists)
                assert.equal("session idling timeout exceeded", idle.err)
                assert.equal("session idling timeout exceeded", b:run(OPEN, { offset = late + IDLE }).err)
            end)

            upstream.it("regenerate: the old id expires after stale_ttl; metadata follows the new id", function()
                local b, prefix = browser({ stale_ttl = 1, store_metadata = true })
                local meta_key = "session:" .. b64url("web") .. ":" .. b64url("alice")
                local login = b:run(LOGIN)
                assert.same({ [login.id] = tostring(login.now + ROLLING) }, r:zscores(prefix .. ":" .. meta_key))
                local old_cookie = b:clone()
                local regenerated = b:run(REGENERATE)
                assert.not_equal(login.id, regenerated.id)
                local old_ttl = r:call("PTTL", prefix .. ":session:" .. login.id)
                assert.is_true(old_ttl > 0 and old_ttl <= 1000, "old pttl " .. tostring(old_ttl))
                assert.same({ [regenerated.id] = tostring(regenerated.now + ROLLING) },
                            r:zscores(prefix .. ":" .. meta_key))
                -- once stale_ttl has passed, only the new cookie opens
                assert.is_true(h.wait_until(function()
                    return r:call("EXISTS", prefix .. ":session:" .. login.id) == 0
                end, 3000))
                assert.equal("unable to load session", old_cookie:run(OPEN).err)
                assert.equal(regenerated.id, b:run(OPEN).id)
            end)

            upstream.it("logout of one audience of several keeps the others", function()
                local b, prefix = browser({ store_metadata = true })
                local login = b:run(LOGIN)
                local joined = b:run(JOIN, { session = options({ store_metadata = true, audience = "api" }) })
                assert.not_equal(login.id, joined.id)
                local api = options({ store_metadata = true, audience = "api" })
                local web_meta = prefix .. ":session:" .. b64url("web") .. ":" .. b64url("alice")

                local out = b:run(LOGOUT, { session = api })
                assert.same({ ok = true, exists = true, logged_out = true }, out)
                local web = b:run(OPEN)
                assert.is_true(web.exists)
                assert.equal("alice", web.subject)
                assert.is_nil(b:run(OPEN, { session = api }).id)
                assert.equal("missing session audience", b:run(OPEN, { session = api }).err)
                -- a new id for what is left; the two-audience one only keeps stale_ttl
                assert.not_equal(joined.id, web.id)
                local data = snapshot(prefix)
                assert.equal("string", data["session:" .. web.id].type)
                local stale = data["session:" .. joined.id].ttl
                assert.is_true(stale > 0 and stale <= STALE, "stale ttl " .. stale)
                -- scored by the logout's save, which ran between the join and this open
                local score = tonumber(r:zscores(web_meta)[web.id])
                assert.is_true(score >= joined.now + ROLLING and score <= web.now + ROLLING, tostring(score))
            end)

            upstream.it("destroy deletes the session and its metadata member, and clears the cookie", function()
                local b, prefix = browser({ store_metadata = true })
                local login = b:run(LOGIN)
                local keys = { "session:" .. login.id, "session:" .. b64url("web") .. ":" .. b64url("alice") }
                table.sort(keys)
                assert.same(keys, kit.keys(snapshot(prefix)))
                local out = b:run(DESTROY)
                assert.same({ ok = true, exists = true, destroyed = true }, out)
                assert.is_nil(b.jar:get("session"))
                -- the zset lost its only member, so Redis removed it too
                assert.same({}, snapshot(prefix))
                assert.is_false(b:run(OPEN).exists)
            end)

            upstream.it("remember-me: the persistent session restores a lost session cookie", function()
                local b, prefix = browser({ remember = true, remember_rolling_timeout = 7200 })
                local login = b:run(LOGIN)
                assert.is_string(b.jar:get("remember"))
                local function remember_keys(data)
                    local out = {}
                    for _, key in ipairs(kit.keys(data)) do
                        if key:match("^remember:") then out[#out + 1] = key end
                    end
                    return out
                end
                local data = snapshot(prefix)
                local first = remember_keys(data)
                assert.equal(1, #first)
                assert.equal(2, #kit.keys(data))
                assert.equal("string", data["session:" .. login.id].type)
                local ttl = data[first[1]].ttl
                assert.is_true(ttl > ROLLING and ttl <= 7200, "remember ttl " .. ttl)

                -- the browser lost its session cookie, not the persistent one
                b.jar:set("session", nil)
                local restored = b:run(OPEN)
                assert.is_true(restored.exists)
                assert.equal("alice", restored.subject)
                assert.not_equal(login.id, restored.id)
                assert.is_string(b.jar:get("session"))
                -- a new session and a new persistent id; the old persistent one goes stale
                data = snapshot(prefix)
                assert.equal("string", data["session:" .. restored.id].type)
                local now = remember_keys(data)
                assert.equal(2, #now)
                local second = now[1] == first[1] and now[2] or now[1]
                assert.is_true(data[first[1]].ttl <= STALE, "old remember ttl " .. data[first[1]].ttl)
                assert.is_true(data[second].ttl > ROLLING, "new remember ttl " .. data[second].ttl)

                -- logout ends both: the session and the persistent session behind it
                assert.is_true(b:run(LOGOUT).ok)
                assert.is_nil(b.jar:get("session"))
                assert.is_nil(b.jar:get("remember"))
                data = snapshot(prefix)
                assert.is_nil(data["session:" .. restored.id])
                assert.is_nil(data[second])
                assert.is_false(b:run(OPEN).exists)
            end)

            upstream.it("hash_storage_key: Redis holds a digest of the session id, never the id", function()
                local b, prefix = browser({ hash_storage_key = true })
                local login = b:run(LOGIN)
                local keys = kit.keys(snapshot(prefix))
                assert.equal(1, #keys)
                local stored = keys[1]:match("^session:(.+)$")
                assert.is_string(stored)
                assert.not_equal(login.id, stored)
                assert.equal(43, #stored)   -- base64url of a SHA-256 digest
                assert.equal(login.id, b:run(OPEN).id)
                assert.is_true(b:run(DESTROY).ok)
                assert.same({}, snapshot(prefix))
            end)

            upstream.it("store_metadata: read_metadata lists the subject's sessions as Redis holds them",
                        function()
                local b, prefix = browser({ store_metadata = true })
                local first = b:run(LOGIN)
                local second = kit.browser(srv, b.settings):run(LOGIN, { offset = 5 })
                local listed = b:run([[
                    local s = S.config(ARGS).storage
                    if type(s) == "string" then
                        s = require(s).new(S.config(ARGS)[s])
                    end
                    return { s:read_metadata("session", ARGS.audience, ARGS.subject, ARGS.at) }
                ]], { audience = b64url("web"), subject = b64url("alice"), at = first.now })
                local expected = {
                    [first.id] = tostring(first.now + ROLLING),
                    [second.id] = tostring(second.now + ROLLING),
                }
                assert.same({ expected }, listed)
                assert.same(expected, r:zscores(prefix .. ":session:" .. b64url("web") .. ":" .. b64url("alice")))
            end)
        end)
    end
end)
