// Micro benchmarks of the pure parts: request building, reply parsing, key naming.
#include <benchmark/benchmark.h>

#include <string>

#include "commands.hpp"
#include "keys.hpp"
#include "operation.hpp"
#include "resp.hpp"

namespace {

using namespace rsh;

KeyNaming naming() {
    KeyNaming n;
    n.prefix = "sessions";
    n.suffix = "v1";
    return n;
}

SetArgs set_args(bool old_key, int metadata_entries) {
    SetArgs a;
    a.name = "session";
    a.key = std::string(43, 'k');        // base64url of 32 bytes, as lua-resty-session makes
    a.value = std::string(512, 'v');
    a.ttl = 3600;
    a.current_time = 1700000000;
    if (old_key) {
        a.old_key = std::string(43, 'o');
        a.stale_ttl = 10;
    }
    if (metadata_entries > 0) {
        Metadata m;
        for (int i = 0; i < metadata_entries; ++i) {
            m.entries.emplace_back("audience" + std::to_string(i), "subject" + std::to_string(i));
        }
        a.metadata = m;
    }
    return a;
}

void BM_SetPlainRequest(benchmark::State& state) {
    const KeyNaming n = naming();
    const SetArgs args = set_args(false, 0);
    for (auto _ : state) {
        Operation op = Operation::set(n, args);
        auto request = op.next_request(70000);
        benchmark::DoNotOptimize(request);
    }
}
BENCHMARK(BM_SetPlainRequest);

void BM_SetTransactionRequest(benchmark::State& state) {
    const KeyNaming n = naming();
    const SetArgs args = set_args(true, static_cast<int>(state.range(0)));
    std::size_t bytes = 0;
    for (auto _ : state) {
        Operation op = Operation::set(n, args);
        auto request = op.next_request(70000);
        bytes = request->size();
        benchmark::DoNotOptimize(request);
    }
    state.counters["request_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_SetTransactionRequest)->Arg(1)->Arg(4);

void BM_CommandBufferSet(benchmark::State& state) {
    const std::string key = "sessions:session:" + std::string(43, 'k') + ":v1";
    const std::string value(512, 'v');
    for (auto _ : state) {
        CommandBuffer b;
        b.add({"SET", key, value, "EX", "3600"});
        benchmark::DoNotOptimize(b.bytes().data());
    }
}
BENCHMARK(BM_CommandBufferSet);

std::string metadata_reply(int members) {
    std::string wire = "*" + std::to_string(members * 2) + "\r\n";
    for (int i = 0; i < members; ++i) {
        std::string key = std::string(40, 'k') + std::to_string(1000 + i);
        std::string score = std::to_string(1700003600 + i);
        wire += "$" + std::to_string(key.size()) + "\r\n" + key + "\r\n";
        wire += "$" + std::to_string(score.size()) + "\r\n" + score + "\r\n";
    }
    return wire;
}

void BM_ReadMetadataReply100(benchmark::State& state) {
    const KeyNaming n = naming();
    ReadMetadataArgs args;
    args.name = "session";
    args.audience = "audience";
    args.subject = "subject";
    args.current_time = 1700000000;
    const std::string wire = metadata_reply(100);
    for (auto _ : state) {
        Operation op = Operation::read_metadata(n, args);
        auto request = op.next_request(70000);
        benchmark::DoNotOptimize(request);
        op.feed(wire.data(), wire.size());
        benchmark::DoNotOptimize(op.result().map.data());
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_ReadMetadataReply100);

void BM_ReplyReader100Members(benchmark::State& state) {
    const std::string wire = metadata_reply(100);
    for (auto _ : state) {
        ReplyReader reader;
        reader.feed(wire.data(), wire.size());
        ReplyPtr reply = reader.next();
        benchmark::DoNotOptimize(reply.get());
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(wire.size()));
}
BENCHMARK(BM_ReplyReader100Members);

void BM_SessionKey(benchmark::State& state) {
    const KeyNaming n = naming();
    const std::string key(43, 'k');
    for (auto _ : state) {
        std::string name = n.session_key("session", key);
        benchmark::DoNotOptimize(name.data());
    }
}
BENCHMARK(BM_SessionKey);

void BM_MetadataKey(benchmark::State& state) {
    const KeyNaming n = naming();
    for (auto _ : state) {
        std::string name = n.metadata_key("session", "audience", "subject");
        benchmark::DoNotOptimize(name.data());
    }
}
BENCHMARK(BM_MetadataKey);

}  // namespace

BENCHMARK_MAIN();
