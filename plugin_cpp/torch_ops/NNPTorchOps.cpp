// Schemas of openmm-nnp's TorchScript operators (see NNPTorchOps.h); the kernels are registered
// next to their implementations.

#include "NNPTorchOps.h"

#include <torch/library.h>

#define AEV_ARGUMENTS                                                                                      \
    "Tensor positions, Tensor? box, Tensor species, Tensor pair_index, Tensor radial_shifts, "            \
    "Tensor angular_shifts, Tensor sections, float radial_cutoff, float radial_eta, float angular_cutoff, " \
    "float angular_eta, float angular_zeta"

TORCH_LIBRARY(openmm_nnp, m) {
    m.def("ani_aev(" AEV_ARGUMENTS ") -> Tensor");
    m.def("ani_aev_backward(Tensor grad_aev, " AEV_ARGUMENTS ") -> Tensor");
    m.def("ani_networks(Tensor aev, Tensor[] parameters, bool need_gradient) -> (Tensor, Tensor)");
}

int NNPPlugin::registeredTorchOperators() {
    return 3;
}
