/* P1 spawn+wait, the floor: 2,000 runs of /bin/true one after the other with plain
 * posix_spawn and a blocking waitpid, no event loop. Prints spawns/s; every exit status
 * is checked. */
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench_common.h"

enum { spawn_count = 2000 };

extern char **environ;

static int spawn_and_wait(void) {
  char *arguments[] = {"/bin/true", NULL};
  pid_t pid = 0;
  if (posix_spawn(&pid, "/bin/true", NULL, NULL, arguments, environ) != 0) return 1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return 1;
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

int main(void) {
  int failures = spawn_and_wait(); /* warm-up, untimed */
  const double started = bench_now_ns();
  for (int index = 0; index < spawn_count; ++index) failures += spawn_and_wait();
  const double elapsed = bench_now_ns() - started;
  printf("RESULT spawns_per_s=%.1f us_per_spawn=%.2f count_ok=%d\n", spawn_count / (elapsed / 1e9),
         elapsed / 1e3 / spawn_count, failures == 0 ? 1 : 0);
  if (failures != 0) fprintf(stderr, "p1_spawn: %d runs did not exit with 0\n", failures);
  return failures == 0 ? 0 : 1;
}
