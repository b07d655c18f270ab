#ifndef OPENMM_NNP_EXPORT_H_
#define OPENMM_NNP_EXPORT_H_

/* Symbol visibility of openmm-nnp's API library (NNPForce, NNPMTSLangevinMiddleIntegrator). */
#if defined(SWIG)
#define OPENMM_NNP_EXPORT
#elif defined(_WIN32) && defined(OPENMM_NNP_BUILDING_LIBRARY)
#define OPENMM_NNP_EXPORT __declspec(dllexport)
#elif defined(_WIN32)
#define OPENMM_NNP_EXPORT __declspec(dllimport)
#else
#define OPENMM_NNP_EXPORT __attribute__((visibility("default")))
#endif

#endif /*OPENMM_NNP_EXPORT_H_*/
