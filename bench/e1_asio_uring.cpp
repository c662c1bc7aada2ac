// bench/e1_asio_uring.cpp - E1 echo: bench/e1_asio.cpp's very program, built on Asio's io_uring
// backend instead of epoll (the macros and -luring are in e1_asio_uring.flags; this checks they
// took). e1_asio.cpp runs each io_context without run_for, which Asio 1.22's io_uring backend
// gets wrong (e1_asio.cpp says how).
#include "e1_asio.cpp"

#if !defined(ASIO_HAS_IO_URING_AS_DEFAULT)
#error "Asio is not on its io_uring backend: see bench/e1_asio_uring.flags"
#endif
