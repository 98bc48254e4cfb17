-- Writes the latest benchmark (bench/results/results.md and the chart) into README.md,
-- between the bench:begin and bench:end markers. Run by bench/run.sh after a full
-- `make bench`, or by hand: `luajit bench/update_readme.lua [results dir]`.
local results = arg[1] or "bench/results"
local readme_path = "README.md"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local table_md = read(results .. "/results.md")
local readme = read(readme_path)
local BEGIN = "<!-- bench:begin: written by bench/update_readme.lua from " .. results .. "; do not edit -->"
local END = "<!-- bench:end -->"
local first = readme:find("<!-- bench:begin", 1, true)
local last_start, last_end = readme:find(END, 1, true)
assert(first and last_start and first < last_start,
       "README.md has no <!-- bench:begin ... --> ... " .. END .. " section")

local section = BEGIN .. "\n" .. table_md .. "\n![make bench chart](" .. results .. "/results.png)\n" .. END
local f = assert(io.open(readme_path, "wb"))
f:write(readme:sub(1, first - 1), section, readme:sub(last_end + 1))
f:close()
io.stderr:write("bench: README.md updated from " .. results .. "/results.md\n")
