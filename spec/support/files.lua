-- Files, temporary directories and shell commands for the spec helpers.
local _M = {}

-- s quoted for a POSIX shell.
function _M.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its output (stdout and stderr) and whether it exited 0.
function _M.run(cmd)
    local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"__rc=$?\""))
    local out = p:read("*a")
    p:close()
    local code = tonumber(out:match("__rc=(%d+)%s*$"))
    out = out:gsub("__rc=%d+%s*$", "")
    return out, code == 0
end

-- Runs a shell command; true when it exited 0 (its output is not captured).
function _M.sh(cmd)
    local r = os.execute(cmd)
    return r == 0 or r == true
end

-- The whole file, or nil when it cannot be opened.
function _M.read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local data = f:read("*a")
    f:close()
    return data
end

function _M.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

-- A new directory under $TMPDIR (or /tmp) named after `what`.
function _M.temp_dir(what)
    local base = os.getenv("TMPDIR")
    if not base or base == "" then base = "/tmp" end
    local dir = _M.run("mktemp -d " .. _M.shell_quote(base .. "/" .. what .. ".XXXXXX")):gsub("%s+$", "")
    assert(dir ~= "", "mktemp failed")
    return dir
end

return _M
