/* bench/bench_common.h - what every C and C++ benchmark program measures the same way:
 * a monotonic clock in nanoseconds and the process's resident memory as the kernel
 * counts it (/proc/self/status: VmHWM is the peak, VmRSS the current size, in KiB).
 * Header-only, C17 and C++20. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec * 1e9 + (double)now.tv_nsec;
}

/* The value in KiB of one "Name:   1234 kB" line of /proc/self/status, -1 if absent. */
static inline long bench_status_kib(const char *field) {
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) return -1;
  char line[256];
  long value = -1;
  size_t field_length = strlen(field);
  while (fgets(line, sizeof line, status) != NULL) {
    if (strncmp(line, field, field_length) == 0 && line[field_length] == ':') {
      value = strtol(line + field_length + 1, NULL, 10);
      break;
    }
  }
  fclose(status);
  return value;
}

static inline long bench_peak_rss_kib(void) { return bench_status_kib("VmHWM"); }
static inline long bench_rss_kib(void) { return bench_status_kib("VmRSS"); }

/* The pseudo-random delays of W4, the same sequence in every language (the Python
 * programs repeat it): a 64-bit linear congruential generator (Knuth's MMIX
 * constants), its high bits reduced to 0..100 ms. */
#define BENCH_DELAY_SEED 20240601u
static inline unsigned bench_next_delay_ms(uint64_t *state) {
  *state = *state * 6364136223846793005u + 1442695040888963407u;
  return (unsigned)((*state >> 33) % 101u);
}

#endif
