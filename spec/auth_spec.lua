-- AUTH [username] password and SELECT database on new connections, failures
-- without the password in the message, runtime password change, force_auth.
local hiredis = require "resty.session.hiredis"
local h = require "helpers"

local function refute_leak(err, secret)
    assert.is_string(err)
    assert.is_nil(err:find(secret, 1, true), "error message contains the password: " .. err)
end

describe("authentication", function()
    local name

    before_each(function()
        name = h.unique("auth")
    end)

    after_each(function()
        collectgarbage()
    end)

    describe("requirepass", function()
        it("authenticates with the password", function()
            local store = hiredis.new({ port = h.pass_port, password = h.password })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
            local r = h.raw_pass()
            assert.equal("v", r:call("GET", name .. ":k"))
            r:close()
        end)

        it("fails with WRONGPASS on a wrong password, never showing it", function()
            local wrong = "wrong-" .. h.unique("secret")
            local store = hiredis.new({ port = h.pass_port, password = wrong })
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.matches("^WRONGPASS", err)
            refute_leak(err, wrong)
            local value, gerr = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", gerr)
            refute_leak(gerr, wrong)
        end)

        it("fails with NOAUTH without a password", function()
            local store = hiredis.new({ port = h.pass_port })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^NOAUTH", err)
            local ok, serr = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.matches("^NOAUTH", serr)
            local res, rerr = store:read_metadata(name, "a", "s", os.time())
            assert.is_nil(res)
            assert.matches("^NOAUTH", rerr)
            local dok, derr = store:delete(name, "k", os.time())
            assert.is_nil(dok)
            assert.matches("^NOAUTH", derr)
        end)

        it("applies a runtime password change to the next call", function()
            local store = hiredis.new({ port = h.pass_port, password = "wrong-at-first" })
            local ok, err = store:set(name, "k", "v", 60, os.time())
            assert.is_nil(ok)
            assert.matches("^WRONGPASS", err)
            store.password = h.password
            assert.equal(h.password, store.password)
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
            -- and back to a wrong one: no pooled connection authenticated with the
            -- old password may serve the new configuration
            store.password = "rotated-away"
            local value, gerr = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", gerr)
            refute_leak(gerr, "rotated-away")
        end)

        it("applies a runtime password change within a custom pool too", function()
            local store = hiredis.new({ port = h.pass_port, password = h.password, pool = h.unique("pool") })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            store.password = "rotated-wrong"
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", err)
            refute_leak(err, "rotated-wrong")
            store.password = h.password
            assert.equal("v", store:get(name, "k"))
        end)

        it("clears the password at run time (nil)", function()
            local store = hiredis.new({ port = h.pass_port, password = h.password })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            store.password = nil
            assert.is_nil(store.password)
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^NOAUTH", err)
        end)

        it("sends AUTH once per new connection, not per call", function()
            local r = h.raw_pass()
            local store = hiredis.new({ port = h.pass_port, password = h.password, pool = h.unique("pool") })
            local before = h.command_calls(r, "auth")
            for i = 1, 5 do
                assert.equal(true, store:set(name, "k" .. i, "v", 60, os.time()))
            end
            assert.equal(before + 1, h.command_calls(r, "auth"))
            r:close()
        end)

        it("sends AUTH on every call with force_auth = true", function()
            local r = h.raw_pass()
            local store = hiredis.new({ port = h.pass_port, password = h.password, pool = h.unique("pool"),
                                        force_auth = true })
            h.kill_others(r)
            local before = h.command_calls(r, "auth")
            for i = 1, 5 do
                assert.equal(true, store:set(name, "k" .. i, "v", 60, os.time()))
            end
            assert.equal(before + 5, h.command_calls(r, "auth"))
            -- still one connection
            assert.equal(1, #h.other_ids(r))
            r:close()
        end)

        it("force_auth can be turned on at run time", function()
            local r = h.raw_pass()
            local store = hiredis.new({ port = h.pass_port, password = h.password, pool = h.unique("pool") })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            local before = h.command_calls(r, "auth")
            store.force_auth = true
            assert.equal(true, store.force_auth)
            assert.equal("v", store:get(name, "k"))
            assert.equal("v", store:get(name, "k"))
            assert.equal(before + 2, h.command_calls(r, "auth"))
            r:close()
        end)
    end)

    describe("ACL users", function()
        it("authenticates with username and password", function()
            local store = hiredis.new({ port = h.acl_port, username = h.acl_user, password = h.acl_password })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
            local r = h.raw_acl()
            local found = false
            for _, c in ipairs(r:client_list("TYPE", "normal")) do
                if c.user == h.acl_user and c.cmd == "get" then found = true end
            end
            r:close()
            assert.is_true(found, "no connection authenticated as " .. h.acl_user)
        end)

        it("fails without the username: the user's password is not the default user's", function()
            local store = hiredis.new({ port = h.acl_port, password = h.acl_password })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", err)
            refute_leak(err, h.acl_password)
        end)

        it("authenticates the default user with its own password", function()
            local store = hiredis.new({ port = h.acl_port, password = h.acl_default_password })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)

        it("fails with WRONGPASS for a wrong password, never showing it", function()
            local wrong = "nope-" .. h.unique("pw")
            local store = hiredis.new({ port = h.acl_port, username = h.acl_user, password = wrong })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", err)
            refute_leak(err, wrong)
            refute_leak(err, h.acl_user .. " " .. wrong)
        end)

        it("fails with WRONGPASS for an unknown user", function()
            local store = hiredis.new({ port = h.acl_port, username = "nobody", password = h.acl_password })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.matches("^WRONGPASS", err)
        end)

        it("applies a runtime username change to the next call", function()
            local store = hiredis.new({ port = h.acl_port, password = h.acl_password })
            assert.is_nil((store:get(name, "k")))
            store.username = h.acl_user
            assert.equal(h.acl_user, store.username)
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            assert.equal("v", store:get(name, "k"))
        end)
    end)

    describe("database", function()
        it("selects the database on new connections, isolated from database 0", function()
            local r0 = h.raw()
            local r1 = h.raw(h.port, { database = 1 })
            local db0 = hiredis.new({ port = h.port })
            local db1 = hiredis.new({ port = h.port, database = 1 })
            assert.equal(true, db1:set(name, "k", "in-db1", 60, os.time()))
            assert.equal("in-db1", r1:call("GET", name .. ":k"))
            assert.is_nil(r0:call("GET", name .. ":k"))
            assert.is_nil(db0:get(name, "k"))
            assert.equal(true, db0:set(name, "k", "in-db0", 60, os.time()))
            assert.equal("in-db1", db1:get(name, "k"))
            assert.equal("in-db0", db0:get(name, "k"))
            r0:close()
            r1:close()
        end)

        it("sends SELECT once per connection, not per call", function()
            local r = h.raw()
            local store = hiredis.new({ port = h.port, database = 2, pool = h.unique("pool") })
            local before = h.command_calls(r, "select")
            for i = 1, 5 do
                assert.equal(true, store:set(name, "k" .. i, "v", 60, os.time()))
            end
            assert.equal(before + 1, h.command_calls(r, "select"))
            local r2 = h.raw(h.port, { database = 2 })
            assert.equal("v", r2:call("GET", name .. ":k5"))
            r2:close()
            r:close()
        end)

        it("applies a runtime database change to the next call", function()
            local r3 = h.raw(h.port, { database = 3 })
            local store = hiredis.new({ port = h.port })
            assert.equal(true, store:set(name, "k", "db0", 60, os.time()))
            store.database = 3
            assert.equal(3, store.database)
            assert.equal(true, store:set(name, "k", "db3", 60, os.time()))
            assert.equal("db3", r3:call("GET", name .. ":k"))
            store.database = nil
            assert.equal("db0", store:get(name, "k"))
            r3:close()
        end)

        it("reports an out-of-range database as the server's error", function()
            local store = hiredis.new({ port = h.port, database = 5000 })
            local value, err = store:get(name, "k")
            assert.is_nil(value)
            assert.is_string(err)
            assert.matches("^ERR", err)
        end)

        it("combines password and database", function()
            local store = hiredis.new({ port = h.pass_port, password = h.password, database = 4 })
            assert.equal(true, store:set(name, "k", "v", 60, os.time()))
            local r = h.raw(h.pass_port, { password = h.password, database = 4 })
            assert.equal("v", r:call("GET", name .. ":k"))
            r:close()
        end)
    end)
end)
