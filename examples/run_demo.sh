#!/usr/bin/env bash
# make demo's body, run under spec/support/with-servers.sh: the round trip in
# plain LuaJIT (native transport), on a Redis Cluster, then inside nginx (cosockets
# in request phases).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
luajit -e 'package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
           package.cpath = "build/lib/?.so;" .. package.cpath' examples/demo.lua
echo
luajit -e 'package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
           package.cpath = "build/lib/?.so;" .. package.cpath' examples/cluster_demo.lua
echo
echo "== inside nginx: cosockets in request phases, the native transport in the log phase"
luajit examples/nginx_demo.lua
