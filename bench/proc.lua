-- What the benchmark reads from the system: nginx worker processes and their CPU
-- time (/proc/<pid>/stat), shell commands' output, and the machine's description.
local _M = {}

-- A shell command's standard output (stderr too when `with_stderr`), trailing space trimmed.
function _M.sh(cmd, with_stderr)
  local p = assert(io.popen(cmd .. (with_stderr and " 2>&1" or " 2>/dev/null")))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

function _M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end
_M.read_file = read_file

_M.CLK_TCK = tonumber(_M.sh("getconf CLK_TCK")) or 100

-- Fields of /proc/<pid>/stat after the command name (which may hold spaces):
-- [1] = state (field 3), [2] = ppid (field 4), [12] = utime (14), [13] = stime (15).
local function stat_fields(pid)
  local text = read_file("/proc/" .. pid .. "/stat")
  if not text then return nil end
  local rest = text:match("%) (.*)$")
  local fields = {}
  for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
  return fields
end

-- The pids of the processes whose parent is `ppid` (nginx's workers under its master).
function _M.children(ppid)
  local out = {}
  for pid in _M.sh("ls /proc"):gmatch("%d+") do
    local f = stat_fields(pid)
    if f and tonumber(f[2]) == ppid then
      out[#out + 1] = tonumber(pid)
    end
  end
  table.sort(out)
  return out
end

-- utime + stime of the processes, summed, in microseconds; nil when one is gone
-- (a worker that died would make the figure meaningless).
function _M.cpu_us(pids)
  local ticks = 0
  for _, pid in ipairs(pids) do
    local f = stat_fields(pid)
    if not f then return nil end
    ticks = ticks + tonumber(f[12]) + tonumber(f[13])
  end
  return ticks * 1e6 / _M.CLK_TCK
end

-- Whether the process runs (a zombie, exited but not yet reaped, does not).
function _M.alive(pid)
  local f = stat_fields(pid)
  return f ~= nil and f[1] ~= "Z"
end

function _M.loadavg()
  return ((read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)")) or "?"
end

-- nproc, CPU model, kernel, redis-server and nginx versions, plus `extra` pairs.
function _M.machine(extra, nginx_binary)
  local cpu = (read_file("/proc/cpuinfo") or ""):match("model name%s*:%s*([^\n]+)") or "?"
  local redis = _M.sh("redis-server --version"):match("v=(%S+)") or "?"
  local nginx = _M.sh(_M.quote(nginx_binary or "nginx") .. " -v", true):match("nginx/(%S+)") or "?"
  local m = {
    { "nproc", _M.sh("nproc") },
    { "cpu", cpu },
    { "kernel", _M.sh("uname -r") },
    { "redis", redis },
    { "nginx", nginx },
  }
  for _, pair in ipairs(extra or {}) do m[#m + 1] = pair end
  return m
end

return _M
