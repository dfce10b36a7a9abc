// Launch configuration shared by the CUDA launchers (cuda/*.cu).
#pragma once

#include <cstdint>

namespace viskrates {
namespace cuda {

constexpr int kThreads = 128;  // threads per block
constexpr int kWarp = 32;

// Blocks of kThreads that cover `threads` threads.
inline unsigned int thread_blocks(int64_t threads) {
  return static_cast<unsigned int>((threads + kThreads - 1) / kThreads);
}

}  // namespace cuda
}  // namespace viskrates
