// examples/fetch_all.cpp - the section "aiohttp for Async HTTP Requests" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// fetch / fetch_all with one reused http::client, against a small JSON server this
// program starts on 127.0.0.1 (each answer takes 200 ms, like a slow API), first one
// URL after another, then all at once with gather_settled (return_exceptions=True).
// Over https, as the tutorial's URLs are, the certificate checked: the
// program makes a throwaway certificate authority at start-up and trusts it. Built
// without TLS (CORO_LOOP_OPENSSL: `make` defines it where OpenSSL's headers are found)
// it says so and fetches over plain http. No network needed: everything is on loopback.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#if defined(CORO_LOOP_OPENSSL)
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <utility>
#endif

namespace cl = coro_loop;
using namespace std::chrono_literals;

// --- the server side: a tiny JSON API (the tutorial uses jsonplaceholder.typicode.com) ---

const char* const titles[] = {"sunt aut facere repellat", "qui est esse", "ea molestias quasi exercitationem"};

// Answers GET /posts/N on a kept-alive connection until the client closes it.
cl::task<void> serve_posts(cl::stream connection) {
  for (;;) {
    std::string head;
    try {
      head = co_await connection.read_until("\r\n\r\n");
    } catch (const cl::incomplete_read_error&) {
      co_return;  // the client closed the connection
    } catch (const std::exception&) {
      co_return;  // or dropped it (a reset; over TLS, an end without close_notify)
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

#if defined(CORO_LOOP_OPENSSL)
// --- a throwaway certificate authority (the tutorial fetches from a public API) ---
// A CA and a certificate for 127.0.0.1 and localhost that it signs, EC P-256 keys, made
// with OpenSSL's C API in a temporary directory removed at exit: the client trusts this
// CA alone, and verification stays on, as it would against a public server.
struct throwaway_ca {
  std::filesystem::path dir;
  std::string ca_file, certificate_file, key_file;
  throwaway_ca() = default;
  throwaway_ca(const throwaway_ca&) = delete;
  throwaway_ca& operator=(const throwaway_ca&) = delete;
  ~throwaway_ca() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

struct openssl_free {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  void operator()(X509* certificate) const { X509_free(certificate); }
  void operator()(BIO* file) const { BIO_free(file); }
};
template <class T>
using openssl_ptr = std::unique_ptr<T, openssl_free>;

void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("making the throwaway CA: ") + what + " failed");
}

// A certificate for `key`, named `common_name`, signed by `issuer_key` (issuer: its
// name, or its own when null), valid for a day, with the extensions given (v3 syntax).
openssl_ptr<X509> issue(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key, long serial,
                        const std::vector<std::pair<int, const char*>>& extensions) {
  openssl_ptr<X509> certificate(X509_new());
  require(certificate != nullptr, "X509_new");
  require(X509_set_version(certificate.get(), X509_VERSION_3) == 1, "X509_set_version");
  require(ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), serial) == 1, "the serial number");
  require(X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600) != nullptr, "notBefore");
  require(X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 86400) != nullptr, "notAfter");
  require(X509_set_pubkey(certificate.get(), key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(certificate.get());
  require(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name),
                                     -1, -1, 0) == 1,
          "the subject name");
  X509* signer = issuer != nullptr ? issuer : certificate.get();
  require(X509_set_issuer_name(certificate.get(), X509_get_subject_name(signer)) == 1, "the issuer name");
  X509V3_CTX context;
  X509V3_set_ctx(&context, signer, certificate.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : extensions) {
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
    require(extension != nullptr && X509_add_ext(certificate.get(), extension, -1) == 1, value);
    X509_EXTENSION_free(extension);
  }
  require(X509_sign(certificate.get(), issuer_key, EVP_sha256()) > 0, "X509_sign");
  return certificate;
}

void write_pem(const std::filesystem::path& path, X509* certificate, EVP_PKEY* key) {
  openssl_ptr<BIO> file(BIO_new_file(path.string().c_str(), "w"));
  require(file != nullptr, "opening a PEM file");
  const bool written = certificate != nullptr
                           ? PEM_write_bio_X509(file.get(), certificate) == 1
                           : PEM_write_bio_PrivateKey(file.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  require(written, "writing a PEM file");
}

std::unique_ptr<throwaway_ca> make_throwaway_ca() {
  auto made = std::make_unique<throwaway_ca>();
  const auto unique = std::chrono::steady_clock::now().time_since_epoch().count();
  // A directory of its own (removed at exit, so only once made here), readable by this
  // user only: it holds a private key.
  const auto dir = std::filesystem::temp_directory_path() / ("coro_loop_fetch_all." + std::to_string(unique));
  require(std::filesystem::create_directory(dir), "a new temporary directory");
  made->dir = dir;
  std::filesystem::permissions(made->dir, std::filesystem::perms::owner_all);
  openssl_ptr<EVP_PKEY> ca_key(EVP_EC_gen("P-256"));
  openssl_ptr<EVP_PKEY> server_key(EVP_EC_gen("P-256"));
  require(ca_key != nullptr && server_key != nullptr, "EVP_EC_gen");
  openssl_ptr<X509> ca = issue(ca_key.get(), "fetch_all example CA", nullptr, ca_key.get(), 1,
                               {{NID_basic_constraints, "critical,CA:TRUE"}, {NID_key_usage, "critical,keyCertSign"}});
  openssl_ptr<X509> server = issue(server_key.get(), "localhost", ca.get(), ca_key.get(), 2,
                                   {{NID_basic_constraints, "CA:FALSE"},
                                    {NID_ext_key_usage, "serverAuth"},
                                    {NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"}});
  made->ca_file = (made->dir / "ca.pem").string();
  made->certificate_file = (made->dir / "server.pem").string();
  made->key_file = (made->dir / "server.key").string();
  write_pem(made->ca_file, ca.get(), nullptr);
  write_pem(made->certificate_file, server.get(), nullptr);
  write_pem(made->key_file, nullptr, server_key.get());
  return made;
}
#endif  // CORO_LOOP_OPENSSL

// --- the tutorial's program ---

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
#if defined(CORO_LOOP_OPENSSL)
  // The server presents a certificate of the CA made here; the client trusts that CA
  // (aiohttp: ssl=ssl.create_default_context(cafile=...)) and checks the name.
  const std::unique_ptr<throwaway_ca> certificates = make_throwaway_ca();
  cl::tls_options server_tls(cl::tls_context::server(certificates->certificate_file, certificates->key_file));
  cl::server api = co_await cl::start_server(serve_posts, "127.0.0.1", 0, std::move(server_tls));
  const std::string base = "https://127.0.0.1:" + std::to_string(api.addresses().front().port());
  cl::http::client_options options;
  options.tls = cl::tls_context::client();
  options.tls.load_verify_locations(certificates->ca_file);
  std::printf("https: on, the certificate verified against a CA made at start-up\n");
#else
  cl::server api = co_await cl::start_server(serve_posts, "127.0.0.1", 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(api.addresses().front().port());
  cl::http::client_options options;
  std::printf("https: off (built without CORO_LOOP_OPENSSL and -lssl -lcrypto): plain http\n");
#endif
  const std::vector<std::string> urls = {base + "/posts/1", base + "/posts/2", base + "/posts/3"};

  // Reuse the client: it keeps the connections open between requests.
  cl::http::client session(std::move(options));

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
