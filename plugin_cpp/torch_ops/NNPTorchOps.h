#ifndef OPENMM_NNP_TORCH_OPS_H_
#define OPENMM_NNP_TORCH_OPS_H_

// TorchScript operators of openmm-nnp (library libOpenMMNNPTorchOps), registered with the
// PyTorch dispatcher when the library is loaded. They serve openmm_nnp.models.ANI on the CPU:
//
//   openmm_nnp::ani_aev              ANI atomic environment vectors (ANIFeatures.h);
//                                    differentiable (first order) by autograd
//   openmm_nnp::ani_aev_backward     their vector-Jacobian product: d(energy)/d(positions)
//                                    from d(energy)/d(AEV)
//   openmm_nnp::ani_energies         AEVs, the ensemble's networks (ANINetworks.h) and, on
//                                    request, d(mean energy)/d(positions), in one call
//
// Schemas and kernels are in NNPTorchOps.cpp. A process that loads a TorchScript model calling them must
// have loaded this library first: the NNPForce kernels link it, and `import openmm_nnp` loads it.

#if defined(_WIN32)
#define OPENMM_NNP_OPS_EXPORT __declspec(dllexport)
#else
#define OPENMM_NNP_OPS_EXPORT __attribute__((visibility("default")))
#endif

namespace NNPPlugin {

// The number of operators this library registers. Calling it from another library makes the
// dynamic linker keep the dependency (and so the registration) even when linking with --as-needed.
OPENMM_NNP_OPS_EXPORT int registeredTorchOperators();

// Run ATen's lazy per-thread initialization of the intra-op thread count, as this library's operators
// would on their first at::parallel_for (it sets the calling thread's OpenMP thread count to the
// process-wide one). A thread that then sets its own count keeps it (NNPWorker).
OPENMM_NNP_OPS_EXPORT void initializeParallelOnThisThread();

} // namespace NNPPlugin

#endif
