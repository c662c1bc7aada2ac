// tests/kqueue/sys/event.h - a test double of kqueue(2)/kevent(2) over Linux epoll
//
// What it is: the kqueue subset coro_loop's kqueue backend uses, written over
// epoll and eventfd, so that the test suite can run that backend on Linux
// (there is no macOS or BSD machine here and no kqueue library is packaged).
// Build with -Itests/kqueue and -DCORO_LOOP_BACKEND_KQUEUE; `#include
// <sys/event.h>` then finds this file. Never ship it: on macOS and the BSDs
// the system's <sys/event.h> is the real thing.
//
// The subset, with the semantics of FreeBSD's kevent(2) manual:
//   kqueue()                      a new queue, close-on-exec
//   kevent(kq, changes, nchanges, events, nevents, timeout)
//                                 changes applied in order before waiting;
//                                 timeout NULL waits forever, {0, 0} polls;
//                                 a signal gives -1/EINTR
//   struct kevent                 ident, filter, flags, fflags, data, udata
//   EV_SET(kevp, ident, filter, flags, fflags, data, udata)
//   EVFILT_READ, EVFILT_WRITE     sockets, pipes, eventfds: level-triggered, or
//                                 reported once per change with EV_CLEAR; the
//                                 two filters of one descriptor are separate
//                                 registrations; READ data = bytes readable
//                                 (FIONREAD), WRITE data = a positive estimate of
//                                 the room left; EV_EOF as described below
//   EVFILT_USER                   EV_ADD (EV_CLEAR), NOTE_TRIGGER from any thread,
//                                 NOTE_FFNOP; fflags' user bits are not kept
//   EVFILT_PROC                   ident = a pid, fflags NOTE_EXIT only, EV_ADD and
//                                 EV_DELETE: reported once the process exits, with
//                                 EV_EOF, fflags NOTE_EXIT and data = its wait(2)
//                                 status (0 when it is not the caller's child);
//                                 the registration ends with that report (BSD marks
//                                 it EV_ONESHOT); a process that has exited but is
//                                 not reaped yet is reported at once (FreeBSD);
//                                 ESRCH for a pid with no process
//   EV_ADD EV_DELETE EV_ENABLE EV_DISABLE EV_CLEAR EV_RECEIPT; out: EV_EOF EV_ERROR
//   change errors                 EV_ERROR entries (data = errno) while the event
//                                 list has room, else -1 with errno; EV_RECEIPT
//                                 always gives an entry (data 0 on success); a
//                                 call that produced any EV_ERROR entry returns
//                                 at once without waiting; EBADF for a closed
//                                 descriptor, ENOENT for a filter not registered,
//                                 EINVAL for a filter or flag outside the subset
// Constants have FreeBSD's values. Anything else (EV_ONESHOT, EV_DISPATCH,
// EVFILT_TIMER, NOTE_FFOR, ...) is deliberately undefined, so code that needs it
// fails to compile here instead of passing against a guess.
//
// Where it cannot match BSD (code under test must not rely on these):
//   - fflags of a READ/WRITE event is always 0: BSD puts the socket's pending
//     error there with EV_EOF, but reading SO_ERROR on Linux clears it, which
//     would hide the error from the caller's own getsockopt(SO_ERROR). Take the
//     error from the retried system call or from getsockopt(SO_ERROR).
//   - epoll has one registration per descriptor, so EV_CLEAR is per descriptor:
//     when every enabled filter of a descriptor has EV_CLEAR, it is EPOLLET;
//     if one of them is level-triggered, both are. And in EPOLLET mode a change
//     in one direction (data arriving) may report the other filter too
//     (EVFILT_WRITE again); changing one filter re-reports the other if ready.
//     Spurious reports only: readiness is never lost.
//   - EV_EOF on READ: the peer shut down its writing side or hung up
//     (EPOLLRDHUP, EPOLLHUP). On WRITE: hung up (EPOLLHUP), or a pipe without
//     readers. A local shutdown(SHUT_WR) alone gives no EV_EOF (BSD sets it on
//     WRITE), and a TCP socket never connected reports EPOLLHUP on Linux, so a
//     filter added before connect() may fire once with EV_EOF (BSD: nothing).
//   - READ data on a listening socket is 1 (Linux has no backlog count to read);
//     on a descriptor FIONREAD does not support (an eventfd) it is 1 when readable.
//   - Regular files are refused with EPERM (epoll's answer); BSD accepts them.
//   - A descriptor closed without EV_DELETE loses its epoll registration when
//     the last reference to the open file goes (BSD: when that descriptor is
//     closed); while a dup() of it stays open, its events keep arriving under
//     the old number. Delete both filters before close(), as the backend does.
//   - Several threads waiting in kevent() on one queue at once is supported but
//     may each report the same level-triggered event.
//   - EVFILT_PROC holds a pidfd (pidfd_open(2), Linux 5.3) per registration
//     until the exit is reported or the filter deleted: one more descriptor
//     open meanwhile (BSD needs none). NOTE_FORK, NOTE_EXEC, NOTE_TRACK and the
//     other NOTE_* of EVFILT_PROC are refused with EINVAL.
//
// Lifetime of a queue: the kqueue descriptor is the epoll descriptor itself, and
// close(kq) releases every kernel object but EVFILT_PROC's pidfds (closed when
// kqueue() hands out that number again, or at exit): the eventfd that lets NOTE_TRIGGER
// wake a waiting kevent() is created per blocking wait and closed before that
// kevent() returns, so nothing stays open behind the caller's back (cost: an
// eventfd, an epoll_ctl and a close per blocking wait on a queue that has
// EVFILT_USER events; polls and queues without them pay nothing). close()
// cannot be hooked, so the bookkeeping of a closed queue (a few arrays) stays
// in one static table indexed by descriptor number until kqueue() hands out
// that number again (its arrays are cleared and reused) or the program exits
// (the table's destructor frees them): valgrind and ASan see no leak.
//
// Written in C style (structs, pthreads, malloc), but compiled as C++ only:
// the table is a function-local static of an inline function, so every
// translation unit of a program shares it.
#pragma once

#if !defined(__linux__) || !defined(__cplusplus)
#error "tests/kqueue/sys/event.h emulates kqueue on Linux for the C++ tests; elsewhere use the system's <sys/event.h>"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if !defined(SYS_pidfd_open)
#define SYS_pidfd_open 434  // the same number on every Linux architecture
#endif

// --- The public subset (FreeBSD's names and values) ---

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_PROC (-5)
#define EVFILT_USER (-11)

#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_ERROR 0x4000
#define EV_EOF 0x8000

#define NOTE_FFNOP 0x00000000u
#define NOTE_TRIGGER 0x01000000u
#define NOTE_EXIT 0x80000000u

struct kevent {
  uintptr_t ident;       // a descriptor (READ, WRITE), a pid (PROC) or any number (USER)
  short filter;          // EVFILT_*
  unsigned short flags;  // EV_*
  unsigned int fflags;   // NOTE_* in; 0 out (see above), NOTE_EXIT for PROC
  int64_t data;          // errno with EV_ERROR; bytes readable / room to write; PROC: wait status
  void* udata;           // handed back unchanged
};

// Parameter names differ from the field names: a macro parameter would also
// replace the field name after `->`.
#define EV_SET(event_pointer, ident_value, filter_value, flags_value, fflags_value, data_value, udata_value) \
  do {                                                                                                       \
    struct kevent* kqueue_emulation_target_ = (event_pointer);                                               \
    kqueue_emulation_target_->ident = (uintptr_t)(ident_value);                                              \
    kqueue_emulation_target_->filter = (short)(filter_value);                                                \
    kqueue_emulation_target_->flags = (unsigned short)(flags_value);                                         \
    kqueue_emulation_target_->fflags = (unsigned int)(fflags_value);                                         \
    kqueue_emulation_target_->data = (int64_t)(data_value);                                                  \
    kqueue_emulation_target_->udata = (void*)(udata_value);                                                  \
  } while (0)

// --- Bookkeeping ---

// The flags that say what to do with a change; the rest (EV_CLEAR, EV_RECEIPT)
// describe the registration and are handed back with its events, as BSD does.
#define KQUEUE_EMULATION_ACTION_FLAGS (EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE)
#define KQUEUE_EMULATION_KNOWN_FLAGS (KQUEUE_EMULATION_ACTION_FLAGS | EV_CLEAR | EV_RECEIPT)
// NOTE_FFAND/FFOR/FFCOPY live in these bits; only NOTE_FFNOP (none) is emulated.
#define KQUEUE_EMULATION_FFLAGS_CONTROL_MASK 0xc0000000u
// epoll_data of the per-wait eventfd; descriptors are never this large.
#define KQUEUE_EMULATION_WAKE_MARKER UINT64_MAX
// epoll_data of an EVFILT_PROC registration's pidfd: this bit, or'ed with the pidfd.
#define KQUEUE_EMULATION_PROCESS_MARKER (UINT64_C(1) << 62)

// One filter (READ or WRITE) of one descriptor.
struct kqueue_emulation_filter {
  int registered;
  int enabled;
  unsigned short flags;  // as registered, without the action flags
  void* udata;
  unsigned long delivered_in_call;  // call number of the last report: one per call
};

struct kqueue_emulation_descriptor {
  struct kqueue_emulation_filter read;
  struct kqueue_emulation_filter write;
  uint32_t epoll_events;  // what epoll has for this descriptor; 0: not in epoll
};

struct kqueue_emulation_user_event {
  uintptr_t ident;
  int enabled;
  int triggered;
  unsigned short flags;
  int64_t data;
  void* udata;
  unsigned long delivered_in_call;
};

// One EVFILT_PROC registration: the pidfd epoll watches (level-triggered, so a
// report that does not fit in the event list comes again with the next call).
struct kqueue_emulation_process {
  uintptr_t pid;
  int pidfd;
  unsigned short flags;  // as registered, without the action flags
  void* udata;
};

// A readiness epoll reported when the event list was already full (one epoll
// event can make two kevents); handed out first by the next call, so an
// EPOLLET edge is never lost.
struct kqueue_emulation_pending {
  int descriptor;
  short filter;
  uint32_t epoll_events;
};

// A thread blocked in kevent() on this queue, and the eventfd that wakes it.
// Lives on that thread's stack for the duration of the wait.
struct kqueue_emulation_waiter {
  int wake_descriptor;
  struct kqueue_emulation_waiter* next;
};

struct kqueue_emulation_queue {
  int in_use;
  unsigned long call_count;
  struct kqueue_emulation_descriptor* descriptors;  // indexed by descriptor number
  size_t descriptor_capacity;
  struct kqueue_emulation_user_event* user_events;
  size_t user_event_count;
  size_t user_event_capacity;
  struct kqueue_emulation_pending* pending;
  size_t pending_count;
  size_t pending_capacity;
  struct kqueue_emulation_process* processes;
  size_t process_count;
  size_t process_capacity;
  struct kqueue_emulation_waiter* waiters;
};

// Every queue of the process, indexed by its (epoll) descriptor number, behind
// one mutex that is never held across epoll_wait().
struct kqueue_emulation_table {
  pthread_mutex_t mutex;
  struct kqueue_emulation_queue* queues;
  size_t queue_capacity;

  ~kqueue_emulation_table() {
    for (size_t i = 0; i < queue_capacity; ++i) {
      free(queues[i].descriptors);
      free(queues[i].user_events);
      free(queues[i].pending);
      for (size_t j = 0; j < queues[i].process_count; ++j) close(queues[i].processes[j].pidfd);
      free(queues[i].processes);
    }
    free(queues);
    // A thread still calling kevent() after exit began finds no queue (EBADF).
    queues = NULL;
    queue_capacity = 0;
  }
};

// Not static: one table for the whole program, whichever translation unit
// created a queue and whichever one uses it.
inline struct kqueue_emulation_table* kqueue_emulation_table_instance(void) {
  static struct kqueue_emulation_table table = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};
  return &table;
}

// Makes *array hold at least `needed` elements, the new ones zeroed. 0 or ENOMEM.
static inline int kqueue_emulation_reserve(void** array, size_t* capacity, size_t element_size, size_t needed) {
  if (needed <= *capacity) return 0;
  size_t new_capacity = *capacity < 16 ? 16 : *capacity * 2;
  if (new_capacity < needed) new_capacity = needed;
  void* grown = realloc(*array, new_capacity * element_size);
  if (grown == NULL) return ENOMEM;
  memset((char*)grown + *capacity * element_size, 0, (new_capacity - *capacity) * element_size);
  *array = grown;
  *capacity = new_capacity;
  return 0;
}

// The live queue behind kq, or NULL. Table mutex held.
static inline struct kqueue_emulation_queue* kqueue_emulation_find_queue(struct kqueue_emulation_table* table, int kq) {
  if (kq < 0 || (size_t)kq >= table->queue_capacity || !table->queues[kq].in_use) return NULL;
  return &table->queues[kq];
}

// --- Descriptor filters: the epoll side ---

// The epoll registration a descriptor's filters need: EPOLLET only when every
// enabled filter asked for EV_CLEAR (epoll has one mode per descriptor).
static inline uint32_t kqueue_emulation_wanted_events(const struct kqueue_emulation_descriptor* descriptor) {
  uint32_t events = 0;
  int any_enabled = 0;
  int all_clear = 1;
  if (descriptor->read.registered && descriptor->read.enabled) {
    events |= EPOLLIN | EPOLLRDHUP;
    any_enabled = 1;
    if (!(descriptor->read.flags & EV_CLEAR)) all_clear = 0;
  }
  if (descriptor->write.registered && descriptor->write.enabled) {
    events |= EPOLLOUT;
    any_enabled = 1;
    if (!(descriptor->write.flags & EV_CLEAR)) all_clear = 0;
  }
  if (any_enabled && all_clear) events |= EPOLLET;
  return events;
}

// Brings epoll in line with the descriptor's filters. Always re-registers
// (EPOLL_CTL_MOD), because BSD re-checks the condition on every EV_ADD and
// EV_ENABLE and reports it when it holds, even with EV_CLEAR; epoll does the
// same on MOD. Returns 0 or an errno; ENOENT from MOD/DEL means the descriptor
// was closed (and maybe reused) since it was registered.
static inline int kqueue_emulation_sync_epoll(int kq, int fd, struct kqueue_emulation_descriptor* descriptor) {
  const uint32_t wanted = kqueue_emulation_wanted_events(descriptor);
  const uint32_t installed = descriptor->epoll_events;
  if (wanted == 0 && installed == 0) return 0;
  struct epoll_event event;
  memset(&event, 0, sizeof event);
  event.events = wanted;
  event.data.u64 = (uint64_t)fd;
  int operation = installed == 0 ? EPOLL_CTL_ADD : (wanted == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
  if (epoll_ctl(kq, operation, fd, &event) < 0) {
    if (operation == EPOLL_CTL_ADD && errno == EEXIST) {
      operation = EPOLL_CTL_MOD;
      if (epoll_ctl(kq, operation, fd, &event) < 0) return errno;
    } else {
      return errno;
    }
  }
  descriptor->epoll_events = wanted;
  return 0;
}

// Applies one EVFILT_READ/EVFILT_WRITE change. Returns 0 or an errno.
static inline int kqueue_emulation_change_descriptor(struct kqueue_emulation_queue* queue, int kq,
                                                     const struct kevent* change) {
  if (change->ident > (uintptr_t)INT_MAX) return EBADF;
  const int fd = (int)change->ident;
  if (fcntl(fd, F_GETFD) < 0) return EBADF;
  int error = kqueue_emulation_reserve((void**)&queue->descriptors, &queue->descriptor_capacity,
                                       sizeof(struct kqueue_emulation_descriptor), (size_t)fd + 1);
  if (error != 0) return error;
  struct kqueue_emulation_descriptor* descriptor = &queue->descriptors[fd];
  const struct kqueue_emulation_descriptor before = *descriptor;
  // Two passes at most: the second after finding the record stale (its descriptor
  // was closed, so BSD would have dropped both filters already).
  for (int attempt = 0; attempt < 2; ++attempt) {
    struct kqueue_emulation_filter* filter = change->filter == EVFILT_READ ? &descriptor->read : &descriptor->write;
    if (change->flags & EV_ADD) {
      if (!filter->registered) {
        filter->registered = 1;
        filter->enabled = 1;
      }
      filter->flags = (unsigned short)(change->flags & ~KQUEUE_EMULATION_ACTION_FLAGS);
      filter->udata = change->udata;
    } else if (!filter->registered) {
      return ENOENT;
    }
    if (change->flags & EV_DELETE) {
      memset(filter, 0, sizeof *filter);
    } else {
      if (change->flags & EV_DISABLE) filter->enabled = 0;
      if (change->flags & EV_ENABLE) filter->enabled = 1;
    }
    error = kqueue_emulation_sync_epoll(kq, fd, descriptor);
    if (error == 0) return 0;
    if (attempt > 0) break;
    if (error == ENOENT && before.epoll_events != 0) {
      memset(descriptor, 0, sizeof *descriptor);  // closed without EV_DELETE: forget it
      continue;
    }
    *descriptor = before;
    return error;
  }
  memset(descriptor, 0, sizeof *descriptor);
  return error;
}

// --- EVFILT_USER ---

static inline struct kqueue_emulation_user_event* kqueue_emulation_find_user_event(struct kqueue_emulation_queue* queue,
                                                                                   uintptr_t ident) {
  for (size_t i = 0; i < queue->user_event_count; ++i) {
    if (queue->user_events[i].ident == ident) return &queue->user_events[i];
  }
  return NULL;
}

// Wakes every thread blocked in kevent() on this queue. Table mutex held, so a
// waiter's eventfd cannot be closed under our feet.
static inline void kqueue_emulation_wake_waiters(struct kqueue_emulation_queue* queue) {
  for (struct kqueue_emulation_waiter* waiter = queue->waiters; waiter != NULL; waiter = waiter->next) {
    const uint64_t one = 1;
    // Only fails when the counter is already huge: the waiter is awake anyway.
    ssize_t written = write(waiter->wake_descriptor, &one, sizeof one);
    (void)written;
  }
}

// Applies one EVFILT_USER change. Returns 0 or an errno.
static inline int kqueue_emulation_change_user(struct kqueue_emulation_queue* queue, const struct kevent* change) {
  if ((change->fflags & KQUEUE_EMULATION_FFLAGS_CONTROL_MASK) != NOTE_FFNOP) return EINVAL;
  struct kqueue_emulation_user_event* user_event = kqueue_emulation_find_user_event(queue, change->ident);
  if (user_event == NULL) {
    if (!(change->flags & EV_ADD)) return ENOENT;
    const int error = kqueue_emulation_reserve((void**)&queue->user_events, &queue->user_event_capacity,
                                               sizeof(struct kqueue_emulation_user_event), queue->user_event_count + 1);
    if (error != 0) return error;
    user_event = &queue->user_events[queue->user_event_count++];
    memset(user_event, 0, sizeof *user_event);
    user_event->ident = change->ident;
    user_event->enabled = 1;
  }
  if (change->flags & EV_DELETE) {
    *user_event = queue->user_events[--queue->user_event_count];
    return 0;
  }
  if (change->flags & EV_ADD) user_event->flags = (unsigned short)(change->flags & ~KQUEUE_EMULATION_ACTION_FLAGS);
  // FreeBSD keeps the last change's udata and data, the trigger's included.
  user_event->udata = change->udata;
  user_event->data = change->data;
  if (change->flags & EV_DISABLE) user_event->enabled = 0;
  if (change->flags & EV_ENABLE) user_event->enabled = 1;
  if (change->fflags & NOTE_TRIGGER) user_event->triggered = 1;
  if (user_event->triggered && user_event->enabled) kqueue_emulation_wake_waiters(queue);
  return 0;
}

// --- EVFILT_PROC ---

static inline struct kqueue_emulation_process* kqueue_emulation_find_process(struct kqueue_emulation_queue* queue,
                                                                             uintptr_t pid) {
  for (size_t i = 0; i < queue->process_count; ++i) {
    if (queue->processes[i].pid == pid) return &queue->processes[i];
  }
  return NULL;
}

// Ends a registration: its pidfd closes (leaving the epoll set with it, as it
// is never duplicated) and the last entry takes its place.
static inline void kqueue_emulation_drop_process(struct kqueue_emulation_queue* queue,
                                                 struct kqueue_emulation_process* process) {
  close(process->pidfd);
  *process = queue->processes[--queue->process_count];
}

// Applies one EVFILT_PROC change. Returns 0 or an errno.
static inline int kqueue_emulation_change_process(struct kqueue_emulation_queue* queue, int kq,
                                                  const struct kevent* change) {
  if ((change->flags & (EV_ENABLE | EV_DISABLE)) || (change->flags & EV_ADD && change->fflags != NOTE_EXIT)) {
    return EINVAL;
  }
  if (change->ident == 0 || change->ident > (uintptr_t)INT_MAX) return ESRCH;
  struct kqueue_emulation_process* process = kqueue_emulation_find_process(queue, change->ident);
  if (change->flags & EV_DELETE) {
    if (process == NULL) return ENOENT;
    kqueue_emulation_drop_process(queue, process);
    return 0;
  }
  if (!(change->flags & EV_ADD)) return process == NULL ? ENOENT : 0;
  if (process == NULL) {
    int error = kqueue_emulation_reserve((void**)&queue->processes, &queue->process_capacity,
                                         sizeof(struct kqueue_emulation_process), queue->process_count + 1);
    if (error != 0) return error;
    const int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)change->ident, 0);
    if (pidfd < 0) return errno;  // ESRCH: no such process
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.u64 = KQUEUE_EMULATION_PROCESS_MARKER | (uint64_t)pidfd;
    if (epoll_ctl(kq, EPOLL_CTL_ADD, pidfd, &event) < 0) {
      error = errno;
      close(pidfd);
      return error;
    }
    process = &queue->processes[queue->process_count++];
    memset(process, 0, sizeof *process);
    process->pid = change->ident;
    process->pidfd = pidfd;
  }
  process->flags = (unsigned short)(change->flags & ~KQUEUE_EMULATION_ACTION_FLAGS);
  process->udata = change->udata;
  return 0;
}

// The wait(2) status of `pid` without reaping it; 0 when it is not our child.
static inline int64_t kqueue_emulation_exit_status(uintptr_t pid) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0) return 0;
  if (info.si_code == CLD_EXITED) return (int64_t)(info.si_status & 0xff) << 8;
  return (int64_t)(info.si_status & 0x7f) | (info.si_code == CLD_DUMPED ? 0x80 : 0);
}

// The exit of the process whose pidfd epoll reported: one kevent, then the
// registration ends. Returns 1 if written, 0 if not (no room: the pidfd stays
// readable and the next call reports it).
static inline int kqueue_emulation_report_process(struct kqueue_emulation_queue* queue, int pidfd, struct kevent* out,
                                                  int room) {
  for (size_t i = 0; i < queue->process_count; ++i) {
    struct kqueue_emulation_process* process = &queue->processes[i];
    if (process->pidfd != pidfd) continue;
    if (room <= 0) return 0;
    EV_SET(out, process->pid, EVFILT_PROC, process->flags | EV_EOF, NOTE_EXIT,
           kqueue_emulation_exit_status(process->pid), process->udata);
    kqueue_emulation_drop_process(queue, process);
    return 1;
  }
  return 0;  // deleted since epoll reported it
}

// --- Reporting ---

// Bytes readable (BSD's data for EVFILT_READ).
static inline int64_t kqueue_emulation_readable_bytes(int fd, uint32_t epoll_events) {
  int available = 0;
  if (ioctl(fd, FIONREAD, &available) == 0) return available;
  // A listening socket or an eventfd: something is there when epoll says so.
  return (epoll_events & EPOLLIN) ? 1 : 0;
}

// Room left to write, positive (BSD: the free space of the send buffer).
static inline int64_t kqueue_emulation_writable_room(int fd) {
  int buffer_size = 0;
  socklen_t length = sizeof buffer_size;
  int queued = 0;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_size, &length) == 0) {
    if (ioctl(fd, TIOCOUTQ, &queued) == 0 && buffer_size > queued) return buffer_size - queued;
    return 1;
  }
  const int pipe_size = fcntl(fd, F_GETPIPE_SZ);
  if (pipe_size > 0 && ioctl(fd, FIONREAD, &queued) == 0 && pipe_size > queued) return pipe_size - queued;
  return 1;
}

static inline int kqueue_emulation_is_socket(int fd) {
  int type = 0;
  socklen_t length = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0;
}

// Remembers a readiness that did not fit in the event list. 0 or ENOMEM.
static inline int kqueue_emulation_defer(struct kqueue_emulation_queue* queue, int fd, short filter,
                                         uint32_t epoll_events) {
  for (size_t i = 0; i < queue->pending_count; ++i) {
    if (queue->pending[i].descriptor == fd && queue->pending[i].filter == filter) {
      queue->pending[i].epoll_events |= epoll_events;
      return 0;
    }
  }
  const int error = kqueue_emulation_reserve((void**)&queue->pending, &queue->pending_capacity,
                                             sizeof(struct kqueue_emulation_pending), queue->pending_count + 1);
  if (error != 0) return error;
  struct kqueue_emulation_pending* entry = &queue->pending[queue->pending_count++];
  entry->descriptor = fd;
  entry->filter = filter;
  entry->epoll_events = epoll_events;
  return 0;
}

// One kevent for (fd, filter) from epoll's events, unless this call already
// reported it. Returns 1 if written, 0 if not (not wanted, or no room: then
// deferred to the next call).
static inline int kqueue_emulation_report_descriptor(struct kqueue_emulation_queue* queue, int kq, int fd, short filter,
                                                     uint32_t epoll_events, unsigned long call, struct kevent* out,
                                                     int room) {
  if (fd < 0 || (size_t)fd >= queue->descriptor_capacity) return 0;
  struct kqueue_emulation_filter* state =
      filter == EVFILT_READ ? &queue->descriptors[fd].read : &queue->descriptors[fd].write;
  if (!state->registered || !state->enabled || state->delivered_in_call == call) return 0;
  const uint32_t relevant =
      filter == EVFILT_READ ? (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) : (EPOLLOUT | EPOLLHUP | EPOLLERR);
  if (!(epoll_events & relevant)) return 0;
  if (room <= 0) {
    if (kqueue_emulation_defer(queue, fd, filter, epoll_events) != 0) {
      // Out of memory: an EPOLLET edge must not be lost, so re-arm the descriptor;
      // epoll then reports it again while it is still ready (an extra report at
      // worst, for the other filter too).
      struct epoll_event event;
      memset(&event, 0, sizeof event);
      event.events = queue->descriptors[fd].epoll_events;
      event.data.u64 = (uint64_t)fd;
      epoll_ctl(kq, EPOLL_CTL_MOD, fd, &event);
    }
    return 0;
  }
  int end_of_file = 0;
  int64_t data = 0;
  if (filter == EVFILT_READ) {
    end_of_file = (epoll_events & (EPOLLRDHUP | EPOLLHUP)) != 0;
    data = kqueue_emulation_readable_bytes(fd, epoll_events);
  } else {
    end_of_file = (epoll_events & EPOLLHUP) != 0 ||
                  ((epoll_events & EPOLLERR) != 0 && !kqueue_emulation_is_socket(fd));  // a pipe without readers
    data = kqueue_emulation_writable_room(fd);
  }
  EV_SET(out, fd, filter, state->flags | (end_of_file ? EV_EOF : 0), 0, data, state->udata);
  state->delivered_in_call = call;
  return 1;
}

// Reports the deferred readiness first, then triggered user events. Returns
// how many were written to out (at most room).
static inline int kqueue_emulation_report_without_waiting(struct kqueue_emulation_queue* queue, int kq,
                                                          unsigned long call, struct kevent* out, int room) {
  int written = 0;
  size_t kept = 0;
  for (size_t i = 0; i < queue->pending_count; ++i) {
    const struct kqueue_emulation_pending entry = queue->pending[i];
    if (written < room) {
      written += kqueue_emulation_report_descriptor(queue, kq, entry.descriptor, entry.filter, entry.epoll_events, call,
                                                    out + written, room - written);
    } else {
      queue->pending[kept++] = entry;
    }
  }
  queue->pending_count = kept;
  for (size_t i = 0; i < queue->user_event_count && written < room; ++i) {
    struct kqueue_emulation_user_event* user_event = &queue->user_events[i];
    if (!user_event->triggered || !user_event->enabled || user_event->delivered_in_call == call) continue;
    EV_SET(out + written, user_event->ident, EVFILT_USER, user_event->flags, 0, user_event->data, user_event->udata);
    ++written;
    user_event->delivered_in_call = call;
    // EV_CLEAR: fire once per trigger. Without it the event stays triggered (BSD).
    if (user_event->flags & EV_CLEAR) user_event->triggered = 0;
  }
  return written;
}

// Milliseconds left until deadline (CLOCK_MONOTONIC), rounded up so that a wait
// never ends early; 0 once passed.
static inline int kqueue_emulation_milliseconds_left(const struct timespec* deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  const int64_t nanoseconds =
      (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 + (int64_t)(deadline->tv_nsec - now.tv_nsec);
  if (nanoseconds <= 0) return 0;
  const int64_t milliseconds = (nanoseconds + 999999) / 1000000;
  return milliseconds > INT_MAX ? INT_MAX : (int)milliseconds;
}

// --- kqueue() and kevent() ---

static inline int kqueue(void) {
  const int kq = epoll_create1(EPOLL_CLOEXEC);
  if (kq < 0) return -1;
  struct kqueue_emulation_table* table = kqueue_emulation_table_instance();
  pthread_mutex_lock(&table->mutex);
  const int error = kqueue_emulation_reserve((void**)&table->queues, &table->queue_capacity,
                                             sizeof(struct kqueue_emulation_queue), (size_t)kq + 1);
  if (error != 0) {
    pthread_mutex_unlock(&table->mutex);
    close(kq);
    errno = error;
    return -1;
  }
  // The number may have belonged to a queue closed earlier: reuse its arrays, empty.
  struct kqueue_emulation_queue* queue = &table->queues[kq];
  if (queue->descriptors != NULL) {
    memset(queue->descriptors, 0, queue->descriptor_capacity * sizeof(struct kqueue_emulation_descriptor));
  }
  queue->in_use = 1;
  queue->call_count = 0;
  queue->user_event_count = 0;
  queue->pending_count = 0;
  // Registrations of the queue that had this number, closed without EV_DELETE:
  // their pidfds are still ours (never closed, so never reused).
  for (size_t i = 0; i < queue->process_count; ++i) close(queue->processes[i].pidfd);
  queue->process_count = 0;
  queue->waiters = NULL;
  pthread_mutex_unlock(&table->mutex);
  return kq;
}

static inline int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist, int nevents,
                         const struct timespec* timeout) {
  if (nchanges < 0 || nevents < 0 ||
      (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L))) {
    errno = EINVAL;
    return -1;
  }
  if ((nchanges > 0 && changelist == NULL) || (nevents > 0 && eventlist == NULL)) {
    errno = EFAULT;
    return -1;
  }
  struct timespec deadline = {0, 0};
  if (timeout != NULL) {
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    // Far enough for "forever" without overflowing time_t on 32-bit targets.
    const time_t seconds = timeout->tv_sec > 100000000 ? 100000000 : timeout->tv_sec;
    deadline.tv_sec += seconds;
    deadline.tv_nsec += timeout->tv_nsec;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_nsec -= 1000000000L;
      deadline.tv_sec += 1;
    }
  }

  struct kqueue_emulation_table* table = kqueue_emulation_table_instance();
  pthread_mutex_lock(&table->mutex);
  struct kqueue_emulation_queue* queue = kqueue_emulation_find_queue(table, kq);
  if (queue == NULL) {
    pthread_mutex_unlock(&table->mutex);
    errno = EBADF;
    return -1;
  }

  // Changes, in order. The change is copied first: changelist and eventlist may
  // be the same array, and an entry written never lies past the change read.
  int written = 0;
  for (int i = 0; i < nchanges; ++i) {
    struct kevent change = changelist[i];
    int error = 0;
    if (change.flags & ~KQUEUE_EMULATION_KNOWN_FLAGS) {
      error = EINVAL;
    } else if (change.filter == EVFILT_READ || change.filter == EVFILT_WRITE) {
      error = kqueue_emulation_change_descriptor(queue, kq, &change);
    } else if (change.filter == EVFILT_USER) {
      error = kqueue_emulation_change_user(queue, &change);
    } else if (change.filter == EVFILT_PROC) {
      error = kqueue_emulation_change_process(queue, kq, &change);
    } else {
      error = EINVAL;
    }
    if (error == 0 && !(change.flags & EV_RECEIPT)) continue;
    if (written >= nevents) {
      // No room for the entry: an error fails the call; a receipt stops it (BSD).
      pthread_mutex_unlock(&table->mutex);
      if (error == 0) return written;
      errno = error;
      return -1;
    }
    change.flags = EV_ERROR;
    change.data = error;
    eventlist[written++] = change;
  }
  // Any EV_ERROR entry: return them now, without waiting (BSD).
  if (written > 0 || nevents == 0) {
    pthread_mutex_unlock(&table->mutex);
    return written;
  }

  const unsigned long call = ++queue->call_count;
  for (;;) {
    written = kqueue_emulation_report_without_waiting(queue, kq, call, eventlist, nevents);
    int wait_milliseconds = -1;
    if (written > 0) {
      wait_milliseconds = 0;  // only collect what epoll has ready as well
    } else if (timeout != NULL) {
      wait_milliseconds = kqueue_emulation_milliseconds_left(&deadline);
    }
    // A blocking wait on a queue with user events needs a way for NOTE_TRIGGER
    // from another thread to end it: an eventfd of its own, for this wait only.
    struct kqueue_emulation_waiter waiter = {-1, NULL};
    if (wait_milliseconds != 0 && queue->user_event_count > 0) {
      waiter.wake_descriptor = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      struct epoll_event wake_event;
      memset(&wake_event, 0, sizeof wake_event);
      wake_event.events = EPOLLIN;
      wake_event.data.u64 = KQUEUE_EMULATION_WAKE_MARKER;
      if (waiter.wake_descriptor < 0 || epoll_ctl(kq, EPOLL_CTL_ADD, waiter.wake_descriptor, &wake_event) < 0) {
        const int error = errno;
        if (waiter.wake_descriptor >= 0) close(waiter.wake_descriptor);
        pthread_mutex_unlock(&table->mutex);
        errno = error;
        return -1;
      }
      waiter.next = queue->waiters;
      queue->waiters = &waiter;
    }
    pthread_mutex_unlock(&table->mutex);

    struct epoll_event ready[64];
    const int room = nevents - written < 64 ? nevents - written : 64;
    const int count = epoll_wait(kq, ready, room, wait_milliseconds);
    const int wait_error = errno;

    pthread_mutex_lock(&table->mutex);
    queue = kqueue_emulation_find_queue(table, kq);
    if (waiter.wake_descriptor >= 0) {
      if (queue != NULL) {
        for (struct kqueue_emulation_waiter** link = &queue->waiters; *link != NULL; link = &(*link)->next) {
          if (*link == &waiter) {
            *link = waiter.next;
            break;
          }
        }
      }
      close(waiter.wake_descriptor);  // also leaves the epoll set
    }
    if (queue == NULL) {  // closed by another thread while we waited
      pthread_mutex_unlock(&table->mutex);
      errno = EBADF;
      return -1;
    }
    if (count < 0 && written == 0) {
      pthread_mutex_unlock(&table->mutex);
      errno = wait_error;  // EINTR when a signal arrived
      return -1;
    }
    for (int i = 0; i < count; ++i) {
      if (ready[i].data.u64 == KQUEUE_EMULATION_WAKE_MARKER) continue;
      if (ready[i].data.u64 & KQUEUE_EMULATION_PROCESS_MARKER) {
        const int pidfd = (int)(ready[i].data.u64 & ~KQUEUE_EMULATION_PROCESS_MARKER);
        written += kqueue_emulation_report_process(queue, pidfd, eventlist + written, nevents - written);
        continue;
      }
      const int fd = (int)ready[i].data.u64;
      written += kqueue_emulation_report_descriptor(queue, kq, fd, EVFILT_READ, ready[i].events, call,
                                                    eventlist + written, nevents - written);
      written += kqueue_emulation_report_descriptor(queue, kq, fd, EVFILT_WRITE, ready[i].events, call,
                                                    eventlist + written, nevents - written);
    }
    // NOTE_TRIGGER may have come in while we waited.
    written += kqueue_emulation_report_without_waiting(queue, kq, call, eventlist + written, nevents - written);
    if (written > 0 || wait_milliseconds == 0 ||
        (timeout != NULL && kqueue_emulation_milliseconds_left(&deadline) == 0)) {
      pthread_mutex_unlock(&table->mutex);
      return written;
    }
    // Woken with nothing to report (an event deleted meanwhile): wait again.
  }
}
