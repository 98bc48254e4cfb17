-- wrk script: only a done() hook (request/response hooks would slow wrk down), which
-- prints one machine-readable line for bench/http_bench.lua:
--   RESULT requests=... duration_us=... p50_us=... p99_us=... connect=... read=... write=... status=... timeout=...
-- wrk counts non-2xx/3xx responses in `status`; the others are socket errors.
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
