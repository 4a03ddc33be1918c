/* clock.h: the monotonic clock every module times with (request latencies, pipeline
 * creation, step recording): seconds since an arbitrary fixed point, never going back. */
#ifndef VKL_CLOCK_H
#define VKL_CLOCK_H

double vkl_monotonic_s(void);

#endif
