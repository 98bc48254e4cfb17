-- A throwaway replica of the benchmark's Redis, for the durability rows (bench/http_bench.lua):
-- redis-server on a free loopback port with --replicaof, in its own directory under $TMPDIR.
-- It is this process's child (io.popen), so stop() reaps it; should this process be killed
-- instead (Ctrl-C, TERM from with-servers.sh), bench/run.sh stops it on exit from the pid
-- file in that directory, as it does nginx.
--
--   local replica = require "replica"
--   local r = replica.start(master_port, call)   -- returns once the replica is in sync
--   r:stop()                                     -- returns once the master has no replica left
--   r:kill()                                     -- the replica alone (on errors: no wait)
--
-- `call(cmd, ...)` is a client of the master (reply or nil, err).
local socket = require "socket"
local raw = require "raw_redis"
local nginx = require "nginx"
local proc = require "proc"

local sh, quote = proc.sh, proc.quote

local _M = {}

local replica = {}
replica.__index = replica

-- Calls `check` every 20 ms until it returns a true value (returned), for at most `seconds` (nil).
local function poll(seconds, check)
  local deadline = socket.gettime() + seconds
  repeat
    local v = check()
    if v then return v end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return nil
end

local function log_tail(self)
  return sh("tail -n 5 " .. quote(self.dir .. "/redis.log"))
end

-- The process: TERM, KILL after 5 s, then reaped.
local function kill_process(self)
  if not self.pid then return end
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  if not poll(5, function() return not proc.alive(self.pid) end) then
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
  end
  self.pipe:close()
  self.pid = nil
end

-- Whether the replica is in sync: its link to the master is up and the master has it online
-- (before that, a WAIT might count it out).
local function in_sync(self)
  local r = raw.connect(self.port)
  if not r then return false end
  local info = r:call("INFO", "replication") or ""
  r:close()
  return info:find("master_link_status:up", 1, true) ~= nil
         and (self.master_call("INFO", "replication") or ""):find("port=" .. self.port .. ",state=online", 1, true)
             ~= nil
end

function _M.start(master_port, master_call)
  -- The master: the full sync starts at once (not after repl-diskless-sync-delay, 5 s), and
  -- its replication backlog is freed a second after the replica leaves (not after an hour:
  -- repl-backlog-ttl), so that what runs after stop() sees it as if it never had a replica.
  -- Neither matters while no replica is attached.
  assert(master_call("CONFIG", "SET", "repl-diskless-sync-delay", "0"))
  assert(master_call("CONFIG", "SET", "repl-backlog-ttl", "1"))
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local dir = sh("mktemp -d " .. quote(base .. "/rsh-replica.XXXXXX"))
  assert(dir ~= "", "replica: mktemp failed")
  local self = setmetatable({ dir = dir, master_call = master_call }, replica)
  for attempt = 1, 5 do
    self.port = nginx.free_port()
    -- `exec`: the shell's pid, printed first, becomes redis-server's
    self.pipe = assert(io.popen(string.format(
      "echo $$; exec redis-server --port %d --bind 127.0.0.1 --protected-mode no --save '' --appendonly no "
      .. "--dir %s --logfile %s --replicaof 127.0.0.1 %d </dev/null >/dev/null 2>&1",
      self.port, quote(dir), quote(dir .. "/redis.log"), master_port)))
    self.pid = assert(tonumber(self.pipe:read("*l")), "replica: no pid")
    local f = assert(io.open(dir .. "/redis.pid", "wb"))
    f:write(self.pid, "\n")
    f:close()
    local state = poll(30, function()
      if not proc.alive(self.pid) then return "exited" end
      return in_sync(self) and "in sync"
    end)
    if state == "in sync" then return self end
    local tail = log_tail(self)
    kill_process(self)
    -- the port was taken between free_port() and the bind: another one
    if state ~= "exited" or not tail:find("Address already in use", 1, true) or attempt == 5 then
      self:kill()
      error(string.format("replica of 127.0.0.1:%d on port %d %s:\n%s", master_port, self.port,
                          state == "exited" and "exited" or "not in sync after 30 s", tail), 0)
    end
  end
end

-- Stops the replica and removes its directory.
function replica:kill()
  kill_process(self)
  if self.dir then
    sh("rm -rf " .. quote(self.dir))
    self.dir = nil
  end
end

-- kill(), then waits until the master has no replica and no replication backlog left
-- (polled; an error after 10 s or when the master does not answer).
function replica:stop()
  self:kill()
  local state = poll(10, function()
    local info, err = self.master_call("INFO", "replication")
    if not info then return "the master failed: " .. tostring(err) end
    return info:find("connected_slaves:0", 1, true) and info:find("repl_backlog_active:0", 1, true) and "gone"
  end)
  if state ~= "gone" then
    error("replica: " .. (state or "the master still has a replica or a replication backlog after 10 s"), 0)
  end
end

return _M
