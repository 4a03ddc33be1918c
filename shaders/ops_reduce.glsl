/* ops_reduce.glsl: workgroup-wide sum and max of one float per invocation.
 *
 * The including shader declares `layout(constant_id = 0) const uint BLOCK_SIZE`
 * (its local_size_x, a power of two) before including this file. Every
 * invocation of the workgroup must call these functions in uniform control
 * flow; all of them receive the result.
 *
 * Two paths, chosen by the variant:
 *   - portable (default): a shared-memory tree over BLOCK_SIZE slots;
 *   - USE_SUBGROUP: subgroupAdd/subgroupMax inside each subgroup, then every
 *     invocation folds the per-subgroup partials from shared memory. It uses
 *     gl_NumSubgroups and gl_SubgroupID only, so it is correct for any
 *     subgroup size (8 on lavapipe, 32 on NVIDIA, 64 on AMD) and for a last
 *     subgroup that is only partly filled. */
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

shared float ops_reduce_slots[BLOCK_SIZE];

float ops_wg_sum(float v) {
#ifdef USE_SUBGROUP
    v = subgroupAdd(v);
    if (subgroupElect()) ops_reduce_slots[gl_SubgroupID] = v;
    barrier();
    float total = 0.0;
    for (uint s = 0; s < gl_NumSubgroups; s++) total += ops_reduce_slots[s];
    barrier(); /* the slots may be reused by the next reduction */
    return total;
#else
    uint lid = gl_LocalInvocationID.x;
    ops_reduce_slots[lid] = v;
    barrier();
    for (uint half_width = BLOCK_SIZE / 2; half_width > 0; half_width >>= 1) {
        if (lid < half_width) ops_reduce_slots[lid] += ops_reduce_slots[lid + half_width];
        barrier();
    }
    float total = ops_reduce_slots[0];
    barrier();
    return total;
#endif
}

float ops_wg_max(float v) {
#ifdef USE_SUBGROUP
    v = subgroupMax(v);
    if (subgroupElect()) ops_reduce_slots[gl_SubgroupID] = v;
    barrier();
    float result = ops_reduce_slots[0];
    for (uint s = 1; s < gl_NumSubgroups; s++) result = max(result, ops_reduce_slots[s]);
    barrier();
    return result;
#else
    uint lid = gl_LocalInvocationID.x;
    ops_reduce_slots[lid] = v;
    barrier();
    for (uint half_width = BLOCK_SIZE / 2; half_width > 0; half_width >>= 1) {
        if (lid < half_width)
            ops_reduce_slots[lid] = max(ops_reduce_slots[lid], ops_reduce_slots[lid + half_width]);
        barrier();
    }
    float result = ops_reduce_slots[0];
    barrier();
    return result;
#endif
}

/* Row index of this workgroup: rows are spread over x and y so that more than
 * maxComputeWorkGroupCount[0] rows fit in one dispatch (see k_ops.c). */
uint ops_row_index() { return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; }
