// Shared by every kernel body: the functions in cpp/*_kernel.h are compiled for the CPU launchers by the host
// compiler and for the CUDA launchers by nvcc, so they are marked for both.
#pragma once

#if defined(__CUDACC__)
#define VISKRATES_HD __host__ __device__ __forceinline__
#else
#define VISKRATES_HD inline
#endif
