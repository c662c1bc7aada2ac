// bench/e1_coro_loop_uring.cpp - E1 echo: bench/e1_coro_loop.cpp's very program on
// coro_loop's io_uring backend, both sides (the macro is in e1_coro_loop_uring.flags);
// it fails if the kernel refused io_uring rather than measure the epoll fallback.
#include "e1_coro_loop.cpp"
