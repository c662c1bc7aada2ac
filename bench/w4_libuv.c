/* W4 many timers, libuv: 100,000 uv_timer_t, each started with a pseudo-random
 * 0-100 ms timeout (bench_next_delay_ms, fixed seed) - libuv's own unit of deferred
 * work, no coroutine around it. Prints the time to init and start them all, the wall
 * time past 100 ms until the last one fired, and the peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "bench/bench_common.h"

enum { timer_count = 100000 };

struct sleeper {
  uv_timer_t timer;
  double started;
  unsigned delay_ms;
};

static long fired;
static long early;
static double finished;

static void on_timeout(uv_timer_t *timer) {
  struct sleeper *sleeper = timer->data;
  if (bench_now_ns() - sleeper->started < sleeper->delay_ms * 1e6) ++early;
  if (++fired == timer_count) finished = bench_now_ns();
  uv_close((uv_handle_t *)timer, NULL);
}

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  struct sleeper *sleepers = calloc(timer_count, sizeof *sleepers);
  if (sleepers == NULL) return 1;
  uint64_t random_state = BENCH_DELAY_SEED;
  const double started = bench_now_ns();
  for (long index = 0; index < timer_count; ++index) {
    struct sleeper *sleeper = &sleepers[index];
    sleeper->delay_ms = bench_next_delay_ms(&random_state);
    sleeper->started = bench_now_ns();
    uv_timer_init(loop, &sleeper->timer);
    sleeper->timer.data = sleeper;
    uv_timer_start(&sleeper->timer, on_timeout, sleeper->delay_ms, 0);
  }
  const double armed = bench_now_ns();
  uv_run(loop, UV_RUN_DEFAULT);
  const int counts_ok = fired == timer_count && early == 0;
  printf("RESULT arm_ms=%.2f late_ms=%.2f peak_rss_kib=%ld count_ok=%d\n", (armed - started) / 1e6,
         (finished - started) / 1e6 - 100.0, bench_peak_rss_kib(), counts_ok);
  if (!counts_ok) fprintf(stderr, "w4_libuv: %ld fired, %ld early\n", fired, early);
  uv_loop_close(loop);
  free(sleepers);
  return counts_ok ? 0 : 1;
}
