// tests/scripted_server.hpp - what the HTTP client tests (test_http.cpp, test_faults.cpp)
// share: the error classification their checks speak in (kind(), CHECK_KIND, what_of,
// failure_of) and the scripted server: our own start_server on 127.0.0.1, port 0,
// reading each request head with read_until("\r\n\r\n") (and a Content-Length
// body) and answering with whatever bytes a test's action writes, counting
// connections, requests and what the client did.
// Included after catch.hpp and coro_loop.hpp; everything is inline.
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace http_test {

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;

// --- error classification ----------------------------------------------------

// The most derived of the error types these tests tell apart, or "none".
inline std::string kind(const std::exception_ptr& error) {
  if (error == nullptr) return "none";
  try {
    std::rethrow_exception(error);
  } catch (const http::disconnected_error&) {
    return "disconnected_error";
  } catch (const http::protocol_error&) {
    return "protocol_error";
  } catch (const http::status_error&) {
    return "status_error";
  } catch (const http::redirect_error&) {
    return "redirect_error";
  } catch (const http::error&) {
    return "http::error";
  } catch (const http::url_error&) {
    return "url_error";
  } catch (const http::invalid_request_error&) {
    return "invalid_request_error";
  } catch (const cl::timeout_error&) {
    return "timeout_error";
  } catch (const cl::invalid_state_error&) {
    return "invalid_state_error";
  } catch (const std::system_error&) {
    return "system_error";
  } catch (const std::exception&) {
    return "std::exception";
  } catch (const cl::cancelled_error&) {
    return "cancelled_error";
  } catch (...) {
    return "unknown";
  }
}

// "kind: what()" for messages.
inline std::string describe(const std::exception_ptr& error) {
  if (error == nullptr) return "none";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& caught) {
    return kind(error) + ": " + caught.what();
  } catch (...) {
    return kind(error);
  }
}

// An error's what() (empty for none, or for an error that is no std::exception).
inline std::string what_of(const std::exception_ptr& error) {
  if (error == nullptr) return {};
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& caught) {
    return caught.what();
  } catch (...) {
    return {};
  }
}

// The error `awaitable` ends with (nullptr when it succeeds).
template <class Awaitable>
cl::task<std::exception_ptr> failure_of(Awaitable awaitable) {
  std::exception_ptr error;
  try {
    (void)co_await std::move(awaitable);
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

// Checks that `error` is of the kind `expected`; its kind and what() are the message.
#define CHECK_KIND(error, expected)                         \
  do {                                                      \
    UNSCOPED_INFO("error: " << http_test::describe(error)); \
    CHECK(http_test::kind(error) == (expected));            \
  } while (false)

// --- the scripted server ---------------------------------------------------------

// ASCII lower case: field names compare without case.
inline std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Without leading and trailing blanks (spaces, tabs).
inline std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// One request as the server read it.
struct seen_request {
  std::string head;  // request line, fields and the empty line, as received
  std::string body;
  std::string method;
  std::string target;
  std::string version;
  std::vector<std::pair<std::string, std::string>> fields;  // in order

  std::vector<std::string> values(std::string_view name) const {
    std::vector<std::string> found;
    for (const auto& [field, value] : fields) {
      if (lower(field) == lower(name)) found.push_back(value);
    }
    return found;
  }
  std::optional<std::string> value(std::string_view name) const {
    auto found = values(name);
    if (found.empty()) return std::nullopt;
    return found.front();
  }
  // Position of the first field named `name` (fields.size() when absent).
  std::size_t index_of(std::string_view name, std::string_view with_value = {}) const {
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (lower(fields[i].first) == lower(name) && (with_value.empty() || fields[i].second == with_value)) return i;
    }
    return fields.size();
  }
};

// Fills in the method, target, version and fields from `request.head`.
inline void split_head(seen_request& request) {
  std::string_view rest = request.head;
  std::size_t end = rest.find("\r\n");
  std::string_view line = rest.substr(0, end);
  rest.remove_prefix(end + 2);
  const std::size_t first_space = line.find(' ');
  const std::size_t last_space = line.rfind(' ');
  if (first_space != std::string_view::npos && last_space != first_space) {
    request.method = std::string(line.substr(0, first_space));
    request.target = std::string(line.substr(first_space + 1, last_space - first_space - 1));
    request.version = std::string(line.substr(last_space + 1));
  }
  for (int guard = 0; guard < 1000 && !rest.empty(); ++guard) {
    end = rest.find("\r\n");
    if (end == std::string_view::npos || end == 0) break;
    line = rest.substr(0, end);
    rest.remove_prefix(end + 2);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      request.fields.emplace_back(std::string(line), std::string());
    } else {
      request.fields.emplace_back(std::string(line.substr(0, colon)), std::string(trim(line.substr(colon + 1))));
    }
  }
}

// Reads one request (head, and a Content-Length body); nullopt at the end of the
// connection or on an error.
inline cl::task<std::optional<seen_request>> read_request(cl::stream& connection) {
  seen_request request;
  bool ended = false;
  try {
    request.head = co_await connection.read_until("\r\n\r\n");
  } catch (const std::exception&) {
    ended = true;
  }
  if (ended) co_return std::nullopt;
  split_head(request);
  if (auto length = request.value("Content-Length")) {
    std::size_t size = 0;
    try {
      size = std::stoul(*length);
    } catch (const std::exception&) {
      size = 0;
    }
    try {
      request.body = co_await connection.read_exactly(size);
    } catch (const std::exception&) {
      ended = true;
    }
    if (ended) co_return std::nullopt;
  }
  co_return request;
}

// What the server does with one request: (connection, request, connection number
// from 1, request number on that connection from 1) -> keep the connection open?
using server_action = std::function<cl::task<bool>(cl::stream&, const seen_request&, int, int)>;

// A scripted server's state: its action, and what it saw.
struct script {
  server_action act;
  int connections = 0;  // accepted so far
  int open = 0;         // handlers running now
  int max_open = 0;
  int in_flight = 0;  // requests being answered now (all connections)
  int max_in_flight = 0;
  int ended_by_client = 0;  // connections whose handler saw the client's end of stream
  int waits_ended = 0;      // write_and_wait_for_close calls that saw the client end (or write)
  std::vector<seen_request> requests;
};

// One connection: requests read and handed to `s.act` until it says not to keep
// the connection, the client ends it, or 1,000 requests.
inline cl::task<void> serve_script(script& s, cl::stream connection) {
  const int number = ++s.connections;
  ++s.open;
  s.max_open = std::max(s.max_open, s.open);
  struct open_guard {
    script* s;
    ~open_guard() { --s->open; }
  } guard{&s};
  bool keep = true;
  for (int i = 1; keep && i <= 1000; ++i) {
    std::optional<seen_request> request = co_await read_request(connection);
    if (!request) {
      ++s.ended_by_client;
      break;
    }
    s.requests.push_back(*request);  // (other connections may grow the vector meanwhile)
    ++s.in_flight;
    s.max_in_flight = std::max(s.max_in_flight, s.in_flight);
    try {
      auto acting = s.act(connection, *request, number, i);
      keep = co_await std::move(acting);
    } catch (const std::exception&) {
      keep = false;  // the client went away while we wrote
    }
    --s.in_flight;
  }
  connection.close();
  try {
    co_await connection.wait_closed();
  } catch (const std::exception&) {
  }
}

// An action answering every request with the string `respond` returns, keeping the
// connection open.
inline server_action reply(std::function<std::string(const seen_request&, int, int)> respond) {
  return [respond = std::move(respond)](cl::stream& connection, const seen_request& request, int number,
                                        int index) -> cl::task<bool> {
    connection.write(respond(request, number, index));
    co_await connection.drain();
    co_return true;
  };
}

inline server_action reply(std::string fixed) {
  return reply([fixed = std::move(fixed)](const seen_request&, int, int) { return fixed; });
}

// Writes `bytes`, then waits (bounded) for the client to end the connection.
inline cl::task<bool> write_and_wait_for_close(cl::stream& connection, std::string bytes, int* ended = nullptr) {
  connection.write(bytes);
  co_await connection.drain();
  (void)co_await cl::timeout(10s, connection.read());
  if (ended != nullptr) ++*ended;
  co_return false;
}

// The server serving `s`, on 127.0.0.1 and a free port.
inline cl::task<cl::server> start(script& s) {
  auto handler = [&s](cl::stream connection) { return serve_script(s, std::move(connection)); };
  co_return co_await cl::start_server(handler, "127.0.0.1", 0);
}

// "http://127.0.0.1:PORT", the server's port.
inline std::string base_url(const cl::server& server) { return "http://127.0.0.1:" + std::to_string(server.port()); }

// Closes the server and its connections and waits (bounded) until they are gone.
inline cl::task<void> stop(cl::server& server) {
  server.close();
  server.close_clients();
  co_await cl::timeout(10s, server.wait_closed());
}

// The body of a GET of `url`, as text.
inline cl::task<std::string> fetch_text(http::client& client, std::string url) {
  http::response response = co_await client.get(std::move(url));
  co_return co_await response.text();
}

// A 200 response carrying `body`, with its Content-Length.
inline std::string ok_response(std::string_view body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

inline double seconds_since(cl::time_point start) {
  return std::chrono::duration<double>(cl::clock::now() - start).count();
}

}  // namespace http_test
