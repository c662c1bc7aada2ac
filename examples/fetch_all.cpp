// examples/fetch_all.cpp - the guide's "aiohttp for Async HTTP Requests" section.
// fetch / fetch_all with one reused http::client, against a small JSON server this
// program starts on 127.0.0.1 (each answer takes 200 ms, like a slow API), first one
// URL after another, then all at once with gather_settled (return_exceptions=True).
// No network needed: everything is on loopback.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

// --- the server side: a tiny JSON API (the guide uses jsonplaceholder.typicode.com) ---

const char* const titles[] = {"sunt aut facere repellat", "qui est esse", "ea molestias quasi exercitationem"};

// Answers GET /posts/N on a kept-alive connection until the client closes it.
cl::task<void> serve_posts(cl::stream connection) {
  for (;;) {
    std::string head;
    try {
      head = co_await connection.read_until("\r\n\r\n");
    } catch (const cl::incomplete_read_error&) {
      co_return;  // the client closed the connection
    }
    co_await cl::sleep(200ms);  // a slow API
    const std::size_t path_start = head.find(' ') + 1;
    const std::string path = head.substr(path_start, head.find(' ', path_start) - path_start);
    std::string status = "404 Not Found";
    std::string body = "{\"error\": \"not found\"}";
    for (int id = 1; id <= 3; ++id) {
      if (path == "/posts/" + std::to_string(id)) {
        status = "200 OK";
        body = "{\"userId\": 1, \"id\": " + std::to_string(id) + ", \"title\": \"" + titles[id - 1] + "\"}";
      }
    }
    connection.write("HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body);
    co_await connection.drain();
  }
}

// One post, as resp.json<post>() makes it: json<T>() takes any type with a static
// T::parse(text), nlohmann::json among them. This example needs no JSON library, so
// its own type picks the one string field it prints (aiohttp's r["title"]).
struct post {
  std::string title;
  static post parse(const std::string& json) {
    const std::string key = "\"title\": \"";
    const std::size_t start = json.find(key);
    if (start == std::string::npos) return {};
    const std::size_t value = start + key.size();
    return {json.substr(value, json.find('"', value) - value)};
  }
};

// --- the guide's program ---

// async def fetch(session, url): session.get(url, timeout=aiohttp.ClientTimeout(total=10)),
// raise_for_status, return await resp.json().
cl::task<post> fetch(cl::http::client& session, std::string url) {
  cl::http::response resp = co_await session.get(std::move(url), {.timeout = {.total = 10s}});
  resp.raise_for_status();
  co_return co_await resp.json<post>();
}

// async def fetch_all(urls): one session, gather(..., return_exceptions=True).
cl::task<std::vector<cl::outcome<post>>> fetch_all(cl::http::client& session, std::vector<std::string> urls) {
  std::vector<cl::task<post>> tasks;
  for (const std::string& url : urls) tasks.push_back(fetch(session, url));
  co_return co_await cl::gather_settled(std::move(tasks));
}

void print_results(const std::vector<cl::outcome<post>>& results) {
  for (const auto& r : results) {
    if (!r.has_value()) {
      try {
        std::rethrow_exception(r.error());
      } catch (const std::exception& e) {
        std::printf("Error: %s\n", e.what());
      }
      continue;
    }
    std::printf("%s\n", r.value().title.c_str());
  }
}

cl::task<void> amain() {
  cl::server api = co_await cl::start_server(serve_posts, "127.0.0.1", 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(api.addresses().front().port());
  const std::vector<std::string> urls = {base + "/posts/1", base + "/posts/2", base + "/posts/3"};

  // Reuse the client: it keeps the connections open between requests.
  cl::http::client session;

  const auto start_sequential = cl::clock::now();
  std::vector<cl::outcome<post>> one_by_one;
  for (const std::string& url : urls) {
    std::vector<std::string> single = {url};
    auto results = co_await fetch_all(session, std::move(single));
    one_by_one.push_back(std::move(results.front()));
  }
  const std::chrono::duration<double> sequential = cl::clock::now() - start_sequential;
  std::printf("sequential:\n");
  print_results(one_by_one);
  std::printf("Sequential: %.2fs\n", sequential.count());  // ~0.6 s: 3 x 200 ms

  const auto start_concurrent = cl::clock::now();
  std::vector<cl::outcome<post>> results = co_await fetch_all(session, urls);
  const std::chrono::duration<double> concurrent = cl::clock::now() - start_concurrent;
  std::printf("concurrent:\n");
  print_results(results);
  std::printf("Concurrent: %.2fs\n", concurrent.count());  // ~0.2 s: the three overlap

  // A failing URL shows the Error: branch: raise_for_status throws http::status_error.
  std::vector<std::string> missing = {base + "/posts/404"};
  print_results(co_await fetch_all(session, std::move(missing)));

  std::printf("connections opened: %zu\n", session.connections_opened());  // 3: reused, never one per request
  session.close();
  api.close();
  co_await api.wait_closed();
}

int main() {
  cl::run(amain());
  return 0;
}
