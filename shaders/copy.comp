// copy.comp: copies `count` 16-byte elements from binding 0 to binding 1.
// Used to test large buffers and bound ranges, and to measure memory bandwidth.
// Elements are uvec4, not vec4, so that any bit pattern (NaNs included) is copied exactly.
// A grid-stride loop lets any number of workgroups cover any count.
// variant: copy_vec4
#version 450

layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Source { uvec4 source[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Destination { uvec4 destination[]; };

layout(push_constant) uniform Push {
    uint count; // elements of 16 bytes
} push;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < push.count; i += stride) destination[i] = source[i];
}
