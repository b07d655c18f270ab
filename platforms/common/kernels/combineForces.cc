// NNPMTSLangevinMiddleIntegrator's force combination on OpenMM's CUDA and OpenCL platforms: one force
// group's forces are kept (per atom, so a reordering of the atoms in between does not matter), and the next
// group's forces become a multiple of themselves plus the kept ones. Fixed point: the multiple is exact.
// Defines: NUM_ATOMS, PADDED_NUM_ATOMS.

KERNEL void saveForces(GLOBAL const mm_long* RESTRICT forceBuffer, GLOBAL const int* RESTRICT atomIndex,
        GLOBAL mm_long* RESTRICT saved) {
    for (int i = GLOBAL_ID; i < NUM_ATOMS; i += GLOBAL_SIZE) {
        int atom = atomIndex[i];
        saved[atom] = forceBuffer[i];
        saved[atom + PADDED_NUM_ATOMS] = forceBuffer[i + PADDED_NUM_ATOMS];
        saved[atom + 2 * PADDED_NUM_ATOMS] = forceBuffer[i + 2 * PADDED_NUM_ATOMS];
    }
}

KERNEL void scaleAndAddSavedForces(GLOBAL mm_long* RESTRICT forceBuffer, GLOBAL const int* RESTRICT atomIndex,
        GLOBAL const mm_long* RESTRICT saved, int multiple) {
    for (int i = GLOBAL_ID; i < NUM_ATOMS; i += GLOBAL_SIZE) {
        int atom = atomIndex[i];
        forceBuffer[i] = multiple * forceBuffer[i] + saved[atom];
        forceBuffer[i + PADDED_NUM_ATOMS] = multiple * forceBuffer[i + PADDED_NUM_ATOMS] + saved[atom + PADDED_NUM_ATOMS];
        forceBuffer[i + 2 * PADDED_NUM_ATOMS] = multiple * forceBuffer[i + 2 * PADDED_NUM_ATOMS] + saved[atom + 2 * PADDED_NUM_ATOMS];
    }
}
