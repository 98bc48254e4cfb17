#include "commands.hpp"

#include <cmath>
#include <cstdio>
#include <memory>
#include <new>
#include <vector>

#include <hiredis/hiredis.h>

namespace rsh {

void CommandBuffer::add(std::initializer_list<std::string_view> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> argvlen;
    argv.reserve(args.size());
    argvlen.reserve(args.size());
    for (auto arg : args) {
        argv.push_back(arg.data());
        argvlen.push_back(arg.size());
    }
    char* raw = nullptr;
    int len = redisFormatCommandArgv(&raw, static_cast<int>(argv.size()), argv.data(), argvlen.data());
    std::unique_ptr<char, void (*)(char*)> cmd(raw, redisFreeCommand);
    if (len < 0 || !cmd) throw std::bad_alloc();
    bytes_.append(cmd.get(), static_cast<std::size_t>(len));
    ++count_;
}

std::string format_number(double value) {
    char buf[32];
    if (std::floor(value) == value && std::fabs(value) < 9007199254740992.0) {
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(value));
    } else {
        std::snprintf(buf, sizeof buf, "%.17g", value);
    }
    return buf;
}

}  // namespace rsh
