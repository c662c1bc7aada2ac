/* W5 to_thread, libuv: 200,000 uv_queue_work calls of a trivial function on libuv's
 * thread pool (its default size, UV_THREADPOOL_SIZE unset), in batches of 1,000: the
 * after-work callback of the batch's last call queues the next batch. Prints calls/s;
 * the sum of the results is checked. */
#include <stdio.h>
#include <uv.h>

#include "bench/bench_common.h"

enum { call_count = 200000, batch_size = 1000 };

struct call {
  uv_work_t request;
  long value;
  long result;
};

static struct call batch[batch_size];
static long next_value;
static long remaining_in_batch;
static long sum;

static long successor(long value) { return value + 1; }

static void work(uv_work_t *request) {
  struct call *call = request->data;
  call->result = successor(call->value);
}

static void start_batch(uv_loop_t *loop);

static void after_work(uv_work_t *request, int status) {
  struct call *call = request->data;
  if (status == 0) sum += call->result;
  if (--remaining_in_batch == 0 && next_value < call_count) start_batch(request->loop);
}

static void start_batch(uv_loop_t *loop) {
  remaining_in_batch = batch_size;
  for (long index = 0; index < batch_size; ++index) {
    struct call *call = &batch[index];
    call->value = next_value++;
    call->request.data = call;
    uv_queue_work(loop, &call->request, work, after_work);
  }
}

static void warm_up_work(uv_work_t *request) { (void)request; }
static void warm_up_done(uv_work_t *request, int status) { (void)request; (void)status; }

int main(void) {
  uv_loop_t *loop = uv_default_loop();
  /* The pool's threads start on first use: one call outside the timing. */
  uv_work_t warm_up;
  uv_queue_work(loop, &warm_up, warm_up_work, warm_up_done);
  uv_run(loop, UV_RUN_DEFAULT);
  const double started = bench_now_ns();
  start_batch(loop);
  uv_run(loop, UV_RUN_DEFAULT);
  const double elapsed = bench_now_ns() - started;
  const long expected = (long)call_count * (call_count + 1) / 2;
  printf("RESULT calls_per_s=%.0f sum_ok=%d\n", call_count / (elapsed / 1e9), sum == expected);
  if (sum != expected) fprintf(stderr, "w5_libuv: sum %ld, expected %ld\n", sum, expected);
  uv_loop_close(loop);
  return sum == expected ? 0 : 1;
}
