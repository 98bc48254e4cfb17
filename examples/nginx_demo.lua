-- The demo's second half: the same round trip inside a real nginx. Request
-- phases (content here) go through cosockets, the log phase through the native
-- transport. Run by `make demo` under spec/support/with-servers.sh.
package.path = "spec/support/?.lua;" .. package.path

local nginx = require "nginx"

local port = assert(tonumber(os.getenv("HIREDIS_TEST_PORT")), "run under spec/support/with-servers.sh")

local server = nginx.start({
  vars = { port = port },
  init = [[
    hiredis = require "resty.session.hiredis"
    storage = hiredis.new({ port = T.port, prefix = "nginx-demo" })
    meta = { audiences = { "web" }, subjects = { "alice" } }
    function show(label, ...)
      local out = {}
      for i = 1, select("#", ...) do
        local v = select(i, ...)
        if type(v) == "table" then
          local keys = {}
          for k, score in pairs(v) do keys[#keys + 1] = k .. "=" .. score end
          table.sort(keys)
          v = "{ " .. table.concat(keys, ", ") .. " }"
        end
        out[#out + 1] = tostring(v)
      end
      ngx.say(string.format("  %-58s -> %s", label, table.concat(out, ", ")))
    end
  ]],
  server = [[
    location = /store {
      content_by_lua_block {
        local now = ngx.time()
        show("[" .. ngx.get_phase() .. "/cosocket] set sid-1 (metadata web/alice)",
             storage:set("session", "sid-1", "payload one", 3600, now, nil, nil, meta))
        show("[" .. ngx.get_phase() .. "/cosocket] set sid-2 (metadata web/alice)",
             storage:set("session", "sid-2", "payload two", 600, now, nil, nil, meta))
        show("[" .. ngx.get_phase() .. "/cosocket] get sid-1", storage:get("session", "sid-1"))
        show("[" .. ngx.get_phase() .. "/cosocket] read_metadata web/alice",
             storage:read_metadata("session", "web", "alice", now))
      }
      log_by_lua_block {
        -- no cosockets in the log phase: the native transport serves this call
        local ok, err = storage:delete("session", "sid-2", ngx.time(), meta)
        ngx.shared.results:set("log_delete", tostring(ok) .. (err and (", " .. err) or ""))
      }
    }
    location = /logged {
      content_by_lua_block { ngx.print(ngx.shared.results:get("log_delete") or "") }
    }
    location = /list {
      content_by_lua_block {
        show("[log/native] delete sid-2 (done after /store's response)",
             ngx.shared.results:get("log_delete"))
        show("[" .. ngx.get_phase() .. "/cosocket] get sid-2", storage:get("session", "sid-2"))
        show("[" .. ngx.get_phase() .. "/cosocket] read_metadata web/alice",
             storage:read_metadata("session", "web", "alice", ngx.time()))
        show("[" .. ngx.get_phase() .. "/cosocket] delete sid-1",
             storage:delete("session", "sid-1", ngx.time(), meta))
        show("[" .. ngx.get_phase() .. "/cosocket] read_metadata web/alice",
             storage:read_metadata("session", "web", "alice", ngx.time()))
      }
    }
  ]],
})

local ok, err = pcall(function()
  print("nginx " .. server.port .. " (1 worker) -> redis-server 127.0.0.1:" .. port)
  io.write((assert(server:get("/store"))))
  -- the log phase runs after the response is sent: wait for its result
  for _ = 1, 100 do
    if server:get("/logged") ~= "" then break end
    require("socket").sleep(0.02)
  end
  io.write((assert(server:get("/list"))))
  local errors = server:errors()
  assert(#errors == 0, "nginx logged errors:\n" .. table.concat(errors, "\n"))
end)
server:stop()
assert(ok, err)
print("nginx stopped")
