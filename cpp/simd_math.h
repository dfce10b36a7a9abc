// Vectorised math for the CPU launchers' `omp simd` loops (glibc's libmvec, the x86-64 vector function ABI).
//
// GCC vectorises a loop that calls erf, exp or pow only if the function is declared `omp declare simd`; glibc's
// <math.h> does so only under -ffast-math, which would also license reassociation and drop NaN checks, so the
// functions the long-range pair terms call are declared here instead (CMake defines VISKRATES_LIBMVEC when
// libmvec has them: glibc 2.35 or later). libmvec's results are within 4 ulp of the scalar functions'.
// VISKRATES_CPU_CLONES compiles a launcher function once per instruction set (AVX-512, AVX2, baseline x86-64)
// and picks one when the library is loaded, so the library runs on any x86-64 CPU and uses 16-float vectors
// where it can (GCC 12 vectorises the long-range pair loops in the AVX-512 copy; its cost model keeps the
// others scalar).
#pragma once

#if defined(VISKRATES_LIBMVEC) && defined(_OPENMP) && defined(__x86_64__) && !defined(__CUDACC__)
extern "C" {
#pragma omp declare simd notinbranch
float erff(float) noexcept;
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
float powf(float, float) noexcept;
#pragma omp declare simd notinbranch
double erf(double) noexcept;
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
double pow(double, double) noexcept;
}
#define VISKRATES_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VISKRATES_CPU_CLONES
#endif

// The bodies a VISKRATES_CPU_CLONES function calls are inlined into each copy, so they are compiled for its
// instruction set.
#define VISKRATES_CPU_INLINE inline __attribute__((always_inline))
