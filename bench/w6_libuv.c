/* W6 cancellation, libuv: 100,000 uv_timer_t started for 10 s, then each stopped and
 * closed, and the loop run until every close callback came back. libuv has no task to
 * unwind: this is the cost of cancelling the timer itself, not of an exception path.
 * Prints ns per cancel (first stop to last close callback). */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "bench/bench_common.h"

enum { timer_count = 100000 };

static long fired;
static long closed;

static void on_timeout(uv_timer_t *timer) {
  (void)timer;
  ++fired;
}

static void on_close(uv_handle_t *handle) {
  (void)handle;
  ++closed;
}

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  uv_timer_t *timers = calloc(timer_count, sizeof *timers);
  if (timers == NULL) return 1;
  for (long index = 0; index < timer_count; ++index) {
    uv_timer_init(loop, &timers[index]);
    uv_timer_start(&timers[index], on_timeout, 10000, 0);
  }
  uv_run(loop, UV_RUN_NOWAIT);
  const double started = bench_now_ns();
  for (long index = 0; index < timer_count; ++index) {
    uv_timer_stop(&timers[index]);
    uv_close((uv_handle_t *)&timers[index], on_close);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  const double elapsed = bench_now_ns() - started;
  const int counts_ok = closed == timer_count && fired == 0;
  printf("RESULT ns_per_cancel=%.1f count_ok=%d\n", elapsed / timer_count, counts_ok);
  if (!counts_ok) fprintf(stderr, "w6_libuv: %ld closed, %ld fired\n", closed, fired);
  uv_loop_close(loop);
  free(timers);
  return counts_ok ? 0 : 1;
}
