// bench/h1_libcurl.cpp - H1/H2/H3/C1 with libcurl's multi interface (see h1_common.hpp).
// One easy handle per connection slot, re-added to the multi handle as soon as its
// transfer ends, so each slot keeps its kept-alive connection (the multi handle's
// connection cache, at most CURLMOPT_MAX_HOST_CONNECTIONS to the host); curl_multi_poll
// waits. H3 sets CURLOPT_FORBID_REUSE and "Connection: close": a new connection per request.
// H1S and H2S: https with libcurl's defaults (peer and host verified, its TLS session cache on)
// plus CURLOPT_CAINFO, the benchmark's CA, and HTTP/1.1 asked for (Debian's libcurl would offer
// h2 through ALPN; nginx's TLS port here speaks HTTP/1.1 only, and so do the peers compared).
#include "h1_common.hpp"

#include <curl/curl.h>

#include <memory>

struct transfer {
  CURL* easy = nullptr;
  std::size_t body_bytes = 0;
  std::chrono::steady_clock::time_point begin;
};

static std::size_t count_body(char*, std::size_t size, std::size_t count, void* user) {
  static_cast<transfer*>(user)->body_bytes += size * count;
  return size * count;
}

static bool check(CURLMcode code, const char* what) {
  if (code == CURLM_OK) return true;
  std::fprintf(stderr, "h1_libcurl: %s: %s\n", what, curl_multi_strerror(code));
  return false;
}

int main(int argc, char** argv) {
  const bench_http::workload chosen = bench_http::parse_arguments(argc, argv);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
  CURLM* multi = curl_multi_init();
  const long connections = static_cast<long>(chosen.connections);
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, connections);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, connections);
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_NOTHING));

  const std::string url = chosen.url();
  curl_slist* headers = chosen.new_connection ? curl_slist_append(nullptr, "Connection: close") : nullptr;
  std::vector<std::unique_ptr<transfer>> slots;
  bench_http::measurement measured(chosen);
  std::size_t started = 0, good = 0, body_bytes = 0, failures = 0;

  auto start_transfer = [&](transfer& slot) {
    slot.body_bytes = 0;
    slot.begin = std::chrono::steady_clock::now();
    ++started;
    return check(curl_multi_add_handle(multi, slot.easy), "curl_multi_add_handle");
  };

  for (std::size_t i = 0; i < chosen.connections; ++i) {
    auto slot = std::make_unique<transfer>();
    slot->easy = curl_easy_init();
    curl_easy_setopt(slot->easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(slot->easy, CURLOPT_WRITEFUNCTION, count_body);
    curl_easy_setopt(slot->easy, CURLOPT_WRITEDATA, slot.get());
    curl_easy_setopt(slot->easy, CURLOPT_PRIVATE, slot.get());
    curl_easy_setopt(slot->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(slot->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(slot->easy, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(slot->easy, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (chosen.tls) {
      curl_easy_setopt(slot->easy, CURLOPT_CAINFO, chosen.ca_file.c_str());
      curl_easy_setopt(slot->easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    }
    if (chosen.new_connection) {
      curl_easy_setopt(slot->easy, CURLOPT_FORBID_REUSE, 1L);
      curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, headers);
    }
    slots.push_back(std::move(slot));
  }

  measured.start();
  for (auto& slot : slots) {
    if (started < chosen.requests && !start_transfer(*slot)) return 1;
  }
  int running = 1;
  // Bounded: every transfer has a 60 s timeout, and each round finishes or waits.
  while (running > 0) {
    if (!check(curl_multi_perform(multi, &running), "curl_multi_perform")) return 1;
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      transfer* slot = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&slot));
      long status = 0;
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      measured.record_latency(std::chrono::steady_clock::now() - slot->begin);
      if (message->data.result != CURLE_OK) {
        std::fprintf(stderr, "h1_libcurl: %s\n", curl_easy_strerror(message->data.result));
        ++failures;
      } else if (status != 200 || slot->body_bytes != chosen.body_size) {
        std::fprintf(stderr, "bad response: status %ld, %zu body bytes\n", status, slot->body_bytes);
      } else {
        ++good;
        body_bytes += slot->body_bytes;
      }
      curl_multi_remove_handle(multi, slot->easy);
      if (started < chosen.requests) {
        if (!start_transfer(*slot)) return 1;
        running = 1;  // more work even when the perform above found none
      }
    }
    if (running > 0 && !check(curl_multi_poll(multi, nullptr, 0, 1000, nullptr), "curl_multi_poll")) return 1;
  }

  const int status = failures != 0 ? 1 : measured.report(good, body_bytes);
  for (auto& slot : slots) curl_easy_cleanup(slot->easy);
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  curl_global_cleanup();
  return status;
}
