#ifndef OPENMM_NNP_VECTORIZE_H_
#define OPENMM_NNP_VECTORIZE_H_

// Runtime choice of the vector width for the compiled operators' hand-written loops (today SO3LR's). The
// library is built for the baseline x86-64 (SSE2: four floats a vector, no -march); with GCC on x86-64 Linux,
// runVectorized(body) compiles body also for AVX2 + FMA (x86-64-v3) and AVX-512 (x86-64-v4) and runs the widest
// version the CPU has (chosen once by the loader). The body and the kernels it calls must be inlined into it
// (NNP_INLINE, and NNP_INLINE_LAMBDA after a lambda's parameter list) to be compiled for each target. Elsewhere the
// body runs as built.

// (GCC 11 is the first to know the x86-64-v3/v4 levels.)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__x86_64__) && defined(__linux__)
#define NNP_INLINE inline __attribute__((always_inline))
#define NNP_INLINE_LAMBDA __attribute__((always_inline))
#define NNP_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NNP_INLINE inline
#define NNP_INLINE_LAMBDA
#define NNP_TARGET_CLONES
#endif

namespace NNPPlugin {

template <typename Body>
NNP_TARGET_CLONES void runVectorized(const Body& body) {
    body();
}

} // namespace NNPPlugin

#endif
