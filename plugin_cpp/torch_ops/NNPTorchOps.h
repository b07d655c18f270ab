#ifndef OPENMM_NNP_TORCH_OPS_H_
#define OPENMM_NNP_TORCH_OPS_H_

// openmm-nnp's TorchScript class (library libOpenMMNNPTorchOps), registered with PyTorch when the
// library is loaded. It serves openmm_nnp.models.ANI on the CPU:
//
//   torch.classes.openmm_nnp.ANIFeatures(species, pair_index, radial_shifts, angular_shifts, sections,
//                                        radial_cutoff, radial_eta, angular_cutoff, angular_eta, angular_zeta)
//       holds one region's AEV constants (ANIFeatures.h), checked and parsed once here;
//       pickled as these arguments (def_pickle), so modules holding it save, load and copy.
//     .aev(positions, box)            ANI atomic environment vectors; differentiable (first order) by
//                                     autograd with respect to the positions
//     .energies(positions, box, network_parameters, need_gradient)
//                                     AEVs, the ensemble's networks (ANINetworks.h) and, on request,
//                                     d(mean energy)/d(positions), in one call
//     .energy_and_forces(positions, box, network_parameters, self_energy, hartree_to_kj_per_mol,
//                        nm_to_angstrom, need_forces)
//                                     what ANI.energy_and_forces() returns, from positions and box in nm:
//                                     the ensemble-mean energy in kJ/mol and the forces in kJ/mol/nm, unit
//                                     conversions included (no tensor operation around the call)
//
// It also registers ten operators for openmm_nnp.models.so3lr on the CPU, each differentiable (first order) by a
// hand-written backward pass: so3lr_front and so3lr_pair_geometry (SO3LRGeometry.cpp: pair geometry, spherical
// harmonics, radial basis), so3lr_radial_filters(_grouped) and so3lr_ev_filters (SO3LRFilters.cpp),
// so3lr_projections and so3lr_attention (SO3LRAttention.cpp: queries, keys, values; attention coefficients on the
// pairs within the short-range cutoff), so3lr_layer_update (SO3LRUpdate.cpp), so3lr_heads (SO3LRHeads.cpp) and
// so3lr_physical (SO3LRPhysical.cpp: ZBL, electrostatics, dispersion). The file of each documents its operators.
// The loops of the attention, ev-filter and layer-update operators pick AVX2 or AVX-512 at run time where the CPU
// has them (Vectorize.h); the library itself is built for the baseline x86-64.
//
// Implemented in NNPTorchOps.cpp. A process that loads a TorchScript model using the class or operator must have
// loaded this library first: the NNPForce kernels link it, and `import openmm_nnp` loads it.

#if defined(_WIN32)
#define OPENMM_NNP_OPS_EXPORT __declspec(dllexport)
#else
#define OPENMM_NNP_OPS_EXPORT __attribute__((visibility("default")))
#endif

namespace NNPPlugin {

// The number of TorchScript classes and operators this library registers. Calling it from another library
// makes the dynamic linker keep the dependency (and so the registration) even when linking with --as-needed.
OPENMM_NNP_OPS_EXPORT int registeredTorchOperators();

// Run ATen's lazy per-thread initialization of the intra-op thread count, as this library's operators
// would on their first at::parallel_for (it sets the calling thread's OpenMP thread count to the
// process-wide one). A thread that then sets its own count keeps it (NNPWorker).
OPENMM_NNP_OPS_EXPORT void initializeParallelOnThisThread();

} // namespace NNPPlugin

#endif
