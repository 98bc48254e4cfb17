// Redis Cluster key slots, computed exactly as Redis does (cluster.c keyHashSlot):
// CRC16/XMODEM of the key, or of its hash tag, modulo 16384.
#pragma once

#include <cstdint>
#include <string_view>

namespace rsh {

constexpr int kClusterSlots = 16384;

// CRC16/XMODEM (poly 0x1021, init 0, no reflection): Redis's crc16().
std::uint16_t crc16_xmodem(std::string_view data);

// The part of a key that is hashed: between the first '{' and the first '}'
// after it, when that is not empty; else the whole key.
std::string_view hash_tag(std::string_view key);

// The slot of a key, 0..16383.
int key_slot(std::string_view key);

}  // namespace rsh
