// examples/async_context_managers.cpp - the section "Async Context Managers" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// C++ answer to `async with`: RAII when cleanup is synchronous (a destructor, a
// scoped lock guard), and async_with(opening, body) when cleanup must co_await:
// it awaits the resource, runs the body, then always awaits resource.aclose(),
// whether the body returned, threw or was cancelled.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

struct row {
  int id;
  std::string name;
};

// class AsyncDBConnection: __aenter__ is open(), __aexit__ is aclose().
class async_db_connection {
 public:
  static cl::task<async_db_connection> open() {
    std::printf("Opening DB connection\n");
    co_await cl::sleep(10ms);  // simulate connect
    co_return async_db_connection();
  }
  cl::task<void> aclose() {
    std::printf("Closing DB connection\n");
    co_await cl::sleep(10ms);  // simulate disconnect
  }
  cl::task<std::vector<row>> query(std::string sql) {
    (void)sql;
    co_await cl::sleep(50ms);
    co_return std::vector<row>{{1, "Alice"}};
  }
};

// @asynccontextmanager get_connection(url): the code before `yield` is the
// opening coroutine, the `finally` block is aclose().
struct connection {
  std::string url;
  bool active = true;
  cl::task<void> aclose() {
    active = false;
    std::printf("Connection closed\n");
    co_return;
  }
};

cl::task<connection> get_connection(std::string url) {
  std::printf("Connecting to %s\n", url.c_str());
  co_await cl::sleep(10ms);
  co_return connection{url, true};
}

cl::task<void> amain() {
  // async with AsyncDBConnection() as db: rows = await db.query(...); print(rows)
  auto use_db = [](async_db_connection& db) -> cl::task<void> {
    std::vector<row> rows = co_await db.query("SELECT * FROM users");
    std::printf("[");
    for (const row& r : rows) std::printf("{'id': %d, 'name': '%s'}", r.id, r.name.c_str());
    std::printf("]\n");
  };
  co_await cl::async_with(async_db_connection::open(), use_db);

  // async with get_connection("postgresql://localhost/mydb") as conn: print(conn)
  auto show = [](connection& conn) -> cl::task<void> {
    std::printf("{'url': '%s', 'active': %s}\n", conn.url.c_str(), conn.active ? "True" : "False");
    co_return;
  };
  co_await cl::async_with(get_connection("postgresql://localhost/mydb"), show);

  // Synchronous cleanup needs no helper: a destructor runs on every path. The
  // lock is released when `guard` goes out of scope, even if the block throws.
  cl::lock mutex;
  {
    auto guard = co_await mutex.scoped();
    std::printf("lock held: %s\n", mutex.locked() ? "True" : "False");
  }
  std::printf("lock held: %s\n", mutex.locked() ? "True" : "False");
}

int main() {
  cl::run(amain());
  return 0;
}
