// NNPForce device code, written once for OpenMM's CUDA and OpenCL platforms (compiled by
// ComputeContext::compileProgram). Defines: NUM_REGION_ATOMS, PADDED_NUM_ATOMS, USE_PERIODIC (optional).
// `mixed` is double in mixed and double precision, float in single precision.

// Position of the atom in slot `index`, with the correction that mixed precision keeps separately.
inline DEVICE void loadPosition(GLOBAL const real4* RESTRICT posq,
#ifdef USE_MIXED_PRECISION
        GLOBAL const real4* RESTRICT posqCorrection,
#endif
        int index, mixed* x, mixed* y, mixed* z) {
    real4 p = posq[index];
#ifdef USE_MIXED_PRECISION
    real4 c = posqCorrection[index];
    *x = p.x + (mixed) c.x;
    *y = p.y + (mixed) c.y;
    *z = p.z + (mixed) c.z;
#else
    *x = p.x;
    *y = p.y;
    *z = p.z;
#endif
}

#ifdef USE_MIXED_PRECISION
#define LOAD_POSITION(index, x, y, z) loadPosition(posq, posqCorrection, index, x, y, z)
#else
#define LOAD_POSITION(index, x, y, z) loadPosition(posq, index, x, y, z)
#endif

/**
 * Copy the region's positions into `positions` ([NUM_REGION_ATOMS][3], region order), made whole:
 * atoms are placed in the order of the plan (order[k]), each at the minimum image of its displacement
 * from an atom placed before it (reference[k], -1 for the first atom of the plan), as the Reference
 * kernel does. The plan is sequential, so one thread runs it; regions are small.
 */
KERNEL void gatherRegion(GLOBAL const real4* RESTRICT posq,
#ifdef USE_MIXED_PRECISION
        GLOBAL const real4* RESTRICT posqCorrection,
#endif
        GLOBAL const int* RESTRICT slots, GLOBAL const int* RESTRICT order, GLOBAL const int* RESTRICT reference,
        GLOBAL mixed* RESTRICT positions, mixed4 boxA, mixed4 boxB, mixed4 boxC) {
    if (GLOBAL_ID != 0)
        return;
    for (int k = 0; k < NUM_REGION_ATOMS; k++) {
        int i = order[k];
        mixed x, y, z;
        LOAD_POSITION(slots[i], &x, &y, &z);
#ifdef USE_PERIODIC
        int j = reference[k];
        if (j >= 0) {
            mixed xj, yj, zj;
            LOAD_POSITION(slots[j], &xj, &yj, &zj);
            mixed dx = x - xj, dy = y - yj, dz = z - zj;
            // Minimum image in OpenMM's reduced triclinic box: c, then b, then a.
            mixed shift = floor(dz / boxC.z + (mixed) 0.5);
            dx -= shift * boxC.x;
            dy -= shift * boxC.y;
            dz -= shift * boxC.z;
            shift = floor(dy / boxB.y + (mixed) 0.5);
            dx -= shift * boxB.x;
            dy -= shift * boxB.y;
            shift = floor(dx / boxA.x + (mixed) 0.5);
            dx -= shift * boxA.x;
            x = positions[3 * j] + dx;
            y = positions[3 * j + 1] + dy;
            z = positions[3 * j + 2] + dz;
        }
#endif
        positions[3 * i] = x;
        positions[3 * i + 1] = y;
        positions[3 * i + 2] = z;
    }
}

/** Add the region's forces ([NUM_REGION_ATOMS][3], kJ/mol/nm, region order) to OpenMM's fixed-point force buffer. */
KERNEL void scatterRegionForces(GLOBAL const mixed* RESTRICT forces, GLOBAL const int* RESTRICT slots, GLOBAL mm_long* RESTRICT forceBuffers) {
    for (int i = GLOBAL_ID; i < NUM_REGION_ATOMS; i += GLOBAL_SIZE) {
        int slot = slots[i];
        forceBuffers[slot] += (mm_long) (forces[3 * i] * (mixed) 0x100000000);
        forceBuffers[slot + PADDED_NUM_ATOMS] += (mm_long) (forces[3 * i + 1] * (mixed) 0x100000000);
        forceBuffers[slot + 2 * PADDED_NUM_ATOMS] += (mm_long) (forces[3 * i + 2] * (mixed) 0x100000000);
    }
}
