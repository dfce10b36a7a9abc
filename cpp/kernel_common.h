// Shared by every kernel body: the functions in cpp/*_kernel.h are compiled for the CPU launchers by the host
// compiler and for the CUDA launchers by nvcc, so they are marked for both.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define VISKRATES_HD __host__ __device__ __forceinline__
#else
#define VISKRATES_HD inline
#endif

// Marks a kernel body's output pointer as the only way to its memory, so the compiler may keep the inputs in
// registers across the output's updates and vectorise the channel loops (GCC, Clang and nvcc spell it alike).
#define VISKRATES_RESTRICT __restrict__

namespace viskrates {
// Math functions of the kernel bodies, called as math::exp(x) etc. with float or double x: in device code
// CUDA's overloads of the global names, in host code those of std, so a body compiles unchanged for both
// launchers and a float argument takes the float function (expf, not exp) on either side.
namespace math {
#if defined(__CUDA_ARCH__)
using ::copysign, ::cos, ::erf, ::exp, ::floor, ::pow, ::sin, ::sqrt;
#else
using std::copysign, std::cos, std::erf, std::exp, std::floor, std::pow, std::sin, std::sqrt;
#endif
}  // namespace math

// x, or 0 when |x| is below the smallest normal number of T (float 1.18e-38, double 2.23e-308). Subnormal
// operands make x86 arithmetic several times slower (a Gaussian basis has such a tail), and they cannot change
// a sum of the working precision. Same rule as viskrates.nn.radial.zero_subnormals.
template <typename T>
VISKRATES_HD T zero_subnormal(T x) {
  const T tiny = sizeof(T) == 4 ? T(1.1754943508222875e-38) : T(2.2250738585072014e-308);
  return (x < tiny && x > -tiny) ? T(0) : x;
}
}  // namespace viskrates
