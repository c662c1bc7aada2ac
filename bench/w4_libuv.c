/* W4 many timers, libuv: 100,000 uv_timer_t, each started with a pseudo-random
 * 0-100 ms timeout (bench_next_delay_ms, fixed seed) - libuv's own unit of deferred
 * work, no coroutine around it. Prints the time to init and start them all, the wall
 * time past 100 ms until the last one fired, and the peak RSS. Every timer must fire,
 * none earlier than libuv's clock allows (below).
 *
 * libuv counts a timeout from the loop's cached "now" (uv_now), which only moves at the
 * start of a loop iteration or on uv_update_time(); arming 100,000 timers takes tens of
 * milliseconds, so without an update the last ones would count from a "now" that long
 * past and fire that much early. libuv's documentation says to call uv_update_time()
 * when the loop is held that long, and the other implementations read the clock for
 * every sleep too, so each start here updates it first.
 *
 * What remains is libuv's millisecond clock: the loop's now is the monotonic clock
 * truncated to whole milliseconds, so a timer may fire up to 1 ms before its start plus
 * its timeout measured in nanoseconds; where the kernel's CLOCK_MONOTONIC_COARSE ticks
 * at 1 ms or finer libuv reads that clock instead (src/unix/linux-core.c, uv__hrtime),
 * which lags by up to one tick more. The check allows exactly that much. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
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
static double allowed_early_ns;

/* 1 ms of truncation, plus one tick of the coarse clock when libuv uses it. */
static double libuv_clock_slack_ns(void) {
  struct timespec resolution;
  double slack = 1e6;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &resolution) == 0 && resolution.tv_sec == 0 &&
      resolution.tv_nsec <= 1000000)
    slack += (double)resolution.tv_nsec;
  return slack;
}

static void on_timeout(uv_timer_t *timer) {
  struct sleeper *sleeper = timer->data;
  if (bench_now_ns() - sleeper->started < sleeper->delay_ms * 1e6 - allowed_early_ns) ++early;
  if (++fired == timer_count) finished = bench_now_ns();
  uv_close((uv_handle_t *)timer, NULL);
}

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  struct sleeper *sleepers = calloc(timer_count, sizeof *sleepers);
  if (sleepers == NULL) return 1;
  allowed_early_ns = libuv_clock_slack_ns();
  uint64_t random_state = BENCH_DELAY_SEED;
  const double started = bench_now_ns();
  for (long index = 0; index < timer_count; ++index) {
    struct sleeper *sleeper = &sleepers[index];
    sleeper->delay_ms = bench_next_delay_ms(&random_state);
    sleeper->started = bench_now_ns();
    uv_timer_init(loop, &sleeper->timer);
    sleeper->timer.data = sleeper;
    uv_update_time(loop);
    uv_timer_start(&sleeper->timer, on_timeout, sleeper->delay_ms, 0);
  }
  const double armed = bench_now_ns();
  uv_run(loop, UV_RUN_DEFAULT);
  const int counts_ok = fired == timer_count && early == 0;
  printf("RESULT arm_ms=%.2f late_ms=%.2f peak_rss_kib=%ld count_ok=%d\n", (armed - started) / 1e6,
         (finished - started) / 1e6 - 100.0, bench_peak_rss_kib(), counts_ok);
  if (!counts_ok)
    fprintf(stderr, "w4_libuv: %ld fired, %ld more than %.1f ms early\n", fired, early, allowed_early_ns / 1e6);
  uv_loop_close(loop);
  free(sleepers);
  return counts_ok ? 0 : 1;
}
