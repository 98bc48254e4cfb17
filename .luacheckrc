-- luacheck configuration: OpenResty globals for the module, busted for the specs.
std = "ngx_lua"
max_line_length = 120
codes = true

files["lua/"] = { std = "ngx_lua" }
files["spec/"] = { std = "+busted" }
files["spec/support/"] = { std = "luajit+busted" }
files["examples/"] = { std = "ngx_lua" }

exclude_files = { "build*/" }
files["bench/"] = { std = "luajit" }
files["bench/handlers.lua"] = { std = "ngx_lua" }
files["bench/wrk_report.lua"] = { std = "luajit", globals = { "done" } }
