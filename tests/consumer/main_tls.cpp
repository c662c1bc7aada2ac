// tests/consumer/main_tls.cpp - a program that uses coro_loop with TLS the way a user's project
// does (CORO_LOOP_OPENSSL and OpenSSL 3 from the route that built it: coro_loop::tls in CMake,
// coro_loop-openssl in pkg-config and meson, the define and -lssl -lcrypto by hand);
// tests/consumer/run.sh builds it each way and checks the line it prints.
#include <cstdio>

#include "coro_loop.hpp"

#if !defined(CORO_LOOP_OPENSSL)
#error "the route that built this did not define CORO_LOOP_OPENSSL"
#endif

coro_loop::task<bool> https_is_accepted() {
  // Parsing an https:// URL needs TLS built in; making a context links libssl.
  const coro_loop::http::url parsed = coro_loop::http::url::parse("https://example.com/");
  coro_loop::tls_context context = coro_loop::tls_context::client();
  context.set_alpn_protocols({"http/1.1"});
  co_return parsed.port == 443 && context.verifies();
}

int main() {
  const bool ok = coro_loop::run(https_is_accepted());
  std::printf("consumer: TLS built in, https accepted (coro_loop %s)\n", CORO_LOOP_VERSION);
  return ok ? 0 : 1;
}
