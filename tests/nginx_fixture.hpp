// tests/nginx_fixture.hpp - a private nginx for the HTTP client tests (POSIX).
//
//   nginx_test::nginx server;          // started and answering when the constructor returns
//   server.url("/1k")                  // "http://127.0.0.1:PORT/1k"
//   server.stub_status().accepts       // connections nginx accepted so far
//   nginx_test::nginx tls_server(nginx_test::nginx::tls_files{"server.pem", "server.key"});
//   tls_server.https_url("/1k")        // "https://127.0.0.1:TLS_PORT/1k": the same locations over TLS
//
// Each instance writes its own nginx.conf into a fresh temporary directory
// (mkdtemp), with the pid file, logs, temp paths and the files it serves inside
// it, and runs nginx in the foreground as one process (daemon off,
// master_process off) on 127.0.0.1 and a free port: a port bound to 0 and
// released, tried again (up to 5 ports) if something else took it meanwhile.
// The constructor returns once that nginx answers GET /fixture_token with the
// directory's name, so the port is known to be this instance's (at most 10 s).
// The destructor stops it (SIGQUIT, then SIGTERM, then SIGKILL, each bounded),
// reaps it and removes the directory (on Linux, nginx is also killed if the test
// process dies without running destructors). The system's nginx configuration, logs and
// port 80 are never touched. Works as root and as an ordinary user.
//
// nginx is looked for in $NGINX, then on PATH, then in the sbin directories that
// are not on an ordinary user's PATH. When there is none, the constructor throws:
// a test that needs nginx fails loudly instead of being skipped
// (scripts/install-deps.sh test, run by `make test`, installs it). Needs
// nginx >= 1.19.5 (-e) with the stub_status, proxy, sub and rewrite modules
// (Debian's `nginx` package).
//
// What it serves (PORT is port()):
//   /1k, /1m         static files of 1024 and 1,048,576 bytes; the content is
//                    nginx::content(size): every byte value, CR, LF and NUL included
//   /c/1k, /c/1m     the same files sent with Transfer-Encoding: chunked and a
//                    trailer field "X-Trailer: done"
//   /missing         404 (nothing named so)
//   /status          stub_status ("accepts" counts TCP connections: keep-alive proof)
//   /r301 /r303 /r307 /r308   that redirect code to http://127.0.0.1:PORT/1k (absolute)
//   /r302            302 to "/1k" (relative: absolute_redirect off)
//   /sub/rel         302 to "../1k" (relative to /sub/rel: /1k)
//   /r301m ... /r308m         that code to /echo (method and body preservation)
//   /chain1          302 -> /chain2 -> /chain3 -> /1k (three redirects)
//   /loop            302 to itself, forever
//   /rhttps          302 to https://127.0.0.1:PORT/1k
//   /method          200, the body is the request method
//   /echo            200, the body is "METHOD CONTENT_LENGTH BODY" ("GET  " without
//                    a body); the request body must be a single line under 64 KiB
//   /headers         200, "ua=<User-Agent> x=<X-Test>"
//   /close           200 "closed" with Connection: close; nginx closes the connection
//   /short           200 "short"; nginx closes the connection after 200 ms idle
//   /fixture_token   200, the temporary directory's name (start-up check)
//   /credentials     200, "auth=<Authorization> cookie=<Cookie>"
//   /same/credentials         302 to /credentials (the same origin)
// Elsewhere keepalive_requests and keepalive_timeout are large: nginx itself
// closes no idle connection during a test.
//
// Given tls_files (a certificate chain and its key, PEM), a second server block
// listens with TLS (1.2 and 1.3) on 127.0.0.1:tls_port(), serving the same
// locations, and then also:
//   /5m              a static file of 5 * 1,048,576 bytes (content(5 << 20))
//   /rhttps          (on the plain port) 302 to https://127.0.0.1:TLS_PORT/1k
//   /to_https/credentials     (plain) 302 to https://127.0.0.1:TLS_PORT/credentials
//   /to_http/credentials      (TLS) 302 to http://127.0.0.1:PORT/credentials
//   /client_cert     (TLS, with client_ca) 200 "client=<subject>" when the client presented a
//                    certificate client_ca issued, else 403 (nginx asks, never requires one)
// The TLS server's access log holds "CONNECTION_SERIAL REQUEST_URI" per request
// (tls_connections(uri): how many connections carried requests for that URI).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace nginx_test {

class nginx {
 public:
  /// The counters of stub_status.
  struct status {
    std::uint64_t active = 0;    // open client connections (this request's included)
    std::uint64_t accepts = 0;   // client connections accepted since start
    std::uint64_t handled = 0;
    std::uint64_t requests = 0;  // requests since start (this one included)
  };

  /// A certificate chain and its key (PEM files) for the TLS server block, and the CA
  /// (PEM) that client certificates are checked against ("": none are asked for).
  struct tls_files {
    std::string certificate;
    std::string key;
    std::string client_ca = {};
  };

  nginx() : nginx(std::nullopt) {}
  explicit nginx(std::optional<tls_files> tls) : tls_(std::move(tls)) {
    binary_ = find_binary();
    if (binary_.empty()) {
      throw std::runtime_error(
          "nginx_fixture: nginx not found ($NGINX, PATH, /usr/sbin, /usr/local/sbin, ...): "
          "install it with scripts/install-deps.sh test (Debian: apt-get install nginx), "
          "or set NGINX=/path/to/nginx");
    }
    dir_ = make_temp_dir();
    try {
      write_files();
      std::string failures;
      for (int attempt = 0; attempt < 5; ++attempt) {
        port_ = free_port();
        if (tls_) {
          do {
            tls_port_ = free_port();
          } while (tls_port_ == port_);
        }
        write_config();
        std::string why;
        if (start(why)) return;
        failures += "\n  port " + std::to_string(port_) + ": " + why;
        if (why.find("in use") == std::string::npos) break;  // only a taken port is worth another try
      }
      throw std::runtime_error("nginx_fixture: nginx (" + binary_ + ") did not start in " + dir_ + ":" +
                               failures);
    } catch (...) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
      throw;
    }
  }
  nginx(const nginx&) = delete;
  nginx& operator=(const nginx&) = delete;
  ~nginx() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::uint16_t port() const noexcept { return port_; }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string url(const std::string& path) const { return base() + path; }
  /// With tls_files: the TLS server's port and URLs ("https://127.0.0.1:TLS_PORT/1k").
  std::uint16_t tls_port() const noexcept { return tls_port_; }
  std::string https_url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(tls_port_) + path;
  }

  /// With tls_files: how many TLS connections carried requests for `uri` (its access log).
  std::size_t tls_connections(const std::string& uri) const {
    std::istringstream log(read_file(dir_ + "/tls_access.log"));
    std::set<std::string> serials;
    std::string serial;
    std::string logged_uri;
    while (log >> serial >> logged_uri) {
      if (logged_uri == uri) serials.insert(serial);
    }
    return serials.size();
  }
  /// With tls_files: requests for `uri` in the TLS server's access log.
  std::size_t tls_requests(const std::string& uri) const {
    std::istringstream log(read_file(dir_ + "/tls_access.log"));
    std::size_t count = 0;
    std::string serial;
    std::string logged_uri;
    while (log >> serial >> logged_uri) count += logged_uri == uri ? 1 : 0;
    return count;
  }
  const std::string& dir() const noexcept { return dir_; }

  /// The content of /1k (size 1024) and /1m (size 1 << 20).
  static std::string content(std::size_t size) {
    std::string text(size, '\0');
    for (std::size_t i = 0; i < size; ++i) text[i] = static_cast<char>((i * 31 + i / 256) & 0xff);
    return text;
  }

  /// GET /status on a connection of its own (blocking, at most 5 s), parsed.
  status stub_status() const {
    const std::string response = raw_get("/status");
    const std::size_t body = response.find("\r\n\r\n");
    if (response.compare(0, 12, "HTTP/1.1 200") != 0 || body == std::string::npos) {
      throw std::runtime_error("nginx_fixture: bad /status response: " + response);
    }
    // Active connections: 1 \nserver accepts handled requests\n 9 9 10 \nReading: ...
    std::istringstream in(response.substr(body + 4));
    std::string word;
    status result;
    in >> word >> word >> result.active >> word >> word >> word >> word >> result.accepts >> result.handled >>
        result.requests;
    if (!in) throw std::runtime_error("nginx_fixture: cannot parse /status: " + response.substr(body + 4));
    return result;
  }

  /// "GET path" with Connection: close on a blocking socket of its own; the whole
  /// response (head and body). Independent of the library under test. At most 5 s.
  std::string raw_get(const std::string& path) const {
    const int fd = connect_blocking(port_, 5);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "nginx_fixture: connect");
    const std::string request =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port_) + "\r\nConnection: close\r\n\r\n";
    std::string response;
    bool ok = send_all(fd, request);
    char chunk[4096];
    for (int i = 0; ok && i < 100000; ++i) {
      const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) ok = false;
      if (got <= 0) break;
      response.append(chunk, static_cast<std::size_t>(got));
    }
    const int saved = errno;
    ::close(fd);
    if (!ok) throw std::system_error(saved, std::generic_category(), "nginx_fixture: GET " + path);
    return response;
  }

  /// nginx's error log and its stderr, for failure messages.
  std::string logs() const { return read_file(dir_ + "/error.log") + read_file(dir_ + "/stderr.log"); }

 private:
  static std::string find_binary() {
    auto executable = [](const std::string& path) { return !path.empty() && ::access(path.c_str(), X_OK) == 0; };
    const char* named = std::getenv("NGINX");
    const std::string name = named != nullptr && *named != '\0' ? named : "nginx";
    if (name.find('/') != std::string::npos) return executable(name) ? name : std::string();
    std::vector<std::string> dirs;
    if (const char* path = std::getenv("PATH"); path != nullptr) {
      std::stringstream in(path);
      for (std::string dir; std::getline(in, dir, ':');) dirs.push_back(dir.empty() ? "." : dir);
    }
    for (const char* dir : {"/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/nginx/sbin", "/opt/homebrew/bin"}) {
      dirs.emplace_back(dir);
    }
    for (const std::string& dir : dirs) {
      if (executable(dir + "/" + name)) return dir + "/" + name;
    }
    return {};
  }

  static std::string make_temp_dir() {
    // Unix socket paths are limited to ~100 bytes: a long $TMPDIR falls back to /tmp.
    std::string base = "/tmp";
    if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp == '/' && std::strlen(tmp) < 60) base = tmp;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    std::string pattern = base + "/coro_loop_nginx.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "nginx_fixture: mkdtemp " + pattern);
    }
    return pattern;
  }

  static std::uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "nginx_fixture: socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      const int saved = errno;
      ::close(fd);
      throw std::system_error(saved, std::generic_category(), "nginx_fixture: bind 127.0.0.1:0");
    }
    ::close(fd);
    return ntohs(address.sin_port);
  }

  // A blocking connection to 127.0.0.1:port with send/receive timeouts; -1 on failure.
  static int connect_blocking(std::uint16_t port, int timeout_seconds) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    timeval limit{};
    limit.tv_sec = timeout_seconds;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      const int saved = errno;
      ::close(fd);
      errno = saved;
      return -1;
    }
    return fd;
  }

  static bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  static std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream all;
    all << in.rdbuf();
    return all.str();
  }

  static void write_file(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw std::runtime_error("nginx_fixture: cannot write " + path);
  }

  void write_files() {
    std::filesystem::create_directories(dir_ + "/html");
    std::filesystem::create_directories(dir_ + "/tmp");
    write_file(dir_ + "/html/1k", content(1024));
    write_file(dir_ + "/html/1m", content(std::size_t{1} << 20));
    if (tls_) write_file(dir_ + "/html/5m", content(std::size_t{5} << 20));
  }

  std::string token() const { return dir_.substr(dir_.rfind('/') + 1); }

  void write_config() const {
    const std::string& d = dir_;
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    const std::string tls_listen = "127.0.0.1:" + std::to_string(tls_port_);
    std::string c;
    c += "# written by tests/nginx_fixture.hpp\n";
    c += "daemon off;\nmaster_process off;\nworker_processes 1;\n";
    c += "pid " + d + "/nginx.pid;\n";
    c += "error_log " + d + "/error.log warn;\n";
    c += "events { worker_connections 512; }\n";
    c += "http {\n";
    c += "  access_log " + d + "/access.log;\n";
    c += "  log_format connection_and_uri '$connection $request_uri';\n";
    for (const char* kind : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
      c += std::string("  ") + kind + "_temp_path " + d + "/tmp/" + kind + ";\n";
    }
    c += "  default_type application/octet-stream;\n";
    c += "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n";
    c += "  client_body_buffer_size 64k;\n  client_body_in_single_buffer on;\n";
    // The inner half of /echo: $request_body only exists where nginx read the body
    // for an upstream, so /echo proxies here with the body in a header.
    c += "  server {\n";
    c += "    listen unix:" + d + "/echo.sock;\n";
    c += "    large_client_header_buffers 4 128k;\n";  // the body arrives as a header
    c += "    location = /echo_inner { return 200 \"$request_method $http_x_echo_length $http_x_echo_body\"; }\n";
    c += "  }\n";
    c += "  server {\n";
    c += "    listen " + listen + ";\n";
    c += locations();
    // Without TLS, /rhttps points at this port (a client without TLS refuses it anyway).
    c += "    location = /rhttps { return 302 https://" + (tls_ ? tls_listen : listen) + "/1k; }\n";
    if (tls_) {
      c += "    location = /to_https/credentials { return 302 https://" + tls_listen + "/credentials; }\n";
    }
    c += "  }\n";
    if (tls_) {
      c += "  server {\n";
      c += "    listen " + tls_listen + " ssl;\n";
      c += "    ssl_certificate " + tls_->certificate + ";\n";
      c += "    ssl_certificate_key " + tls_->key + ";\n";
      c += "    ssl_protocols TLSv1.2 TLSv1.3;\n";
      c += "    access_log " + d + "/tls_access.log connection_and_uri;\n";
      if (!tls_->client_ca.empty()) {
        c += "    ssl_verify_client optional;\n";
        c += "    ssl_client_certificate " + tls_->client_ca + ";\n";
        c += "    location = /client_cert {\n";
        c += "      if ($ssl_client_verify != SUCCESS) { return 403 \"no client certificate\"; }\n";
        c += "      return 200 \"client=$ssl_client_s_dn\";\n";
        c += "    }\n";
      }
      c += locations();
      c += "    location = /to_http/credentials { return 302 http://" + listen + "/credentials; }\n";
      c += "  }\n";
    }
    c += "}\n";
    write_file(d + "/nginx.conf", c);
  }

  // What both server blocks serve.
  std::string locations() const {
    const std::string& d = dir_;
    std::string c;
    c += "    root " + d + "/html;\n";
    c += "    location / { }\n";
    c += "    location /c/ { alias " + d + "/html/; sub_filter_types *; sub_filter '@@never@@' '';"
         " add_trailer X-Trailer \"done\" always; }\n";
    c += "    location = /status { stub_status; }\n";
    c += "    location = /fixture_token { return 200 \"" + token() + "\"; }\n";
    c += "    location = /r301 { return 301 /1k; }\n";
    c += "    location = /r302 { absolute_redirect off; return 302 /1k; }\n";
    c += "    location = /r303 { return 303 /1k; }\n";
    c += "    location = /r307 { return 307 /1k; }\n";
    c += "    location = /r308 { return 308 /1k; }\n";
    c += "    location = /sub/rel { absolute_redirect off; return 302 \"../1k\"; }\n";
    for (const char* code : {"301", "302", "303", "307", "308"}) {
      c += std::string("    location = /r") + code + "m { return " + code + " /echo; }\n";
    }
    c += "    location = /chain1 { return 302 /chain2; }\n";
    c += "    location = /chain2 { return 302 /chain3; }\n";
    c += "    location = /chain3 { return 302 /1k; }\n";
    c += "    location = /loop { return 302 /loop; }\n";
    c += "    location = /close { keepalive_timeout 0; return 200 \"closed\"; }\n";
    c += "    location = /short { keepalive_timeout 200ms; return 200 \"short\"; }\n";
    c += "    location = /method { return 200 \"$request_method\"; }\n";
    c += "    location = /headers { return 200 \"ua=$http_user_agent x=$http_x_test\"; }\n";
    c += "    location = /credentials { return 200 \"auth=$http_authorization cookie=$http_cookie\"; }\n";
    c += "    location = /same/credentials { absolute_redirect off; return 302 /credentials; }\n";
    c += "    location = /echo {\n";
    c += "      proxy_pass http://unix:" + d + "/echo.sock:/echo_inner;\n";
    c += "      proxy_set_header X-Echo-Body $request_body;\n";
    c += "      proxy_set_header X-Echo-Length $content_length;\n";
    c += "    }\n";
    return c;
  }

  // Starts nginx on port_; true once it answers /fixture_token. Otherwise stops
  // it, explains in `why` and returns false.
  bool start(std::string& why) {
    std::error_code ignored;
    std::filesystem::remove(dir_ + "/nginx.pid", ignored);
    std::filesystem::remove(dir_ + "/echo.sock", ignored);
    std::filesystem::remove(dir_ + "/error.log", ignored);
    std::filesystem::remove(dir_ + "/stderr.log", ignored);

    // Everything the child needs is built before fork(): between fork and exec
    // only async-signal-safe calls (the test process has threads).
    const std::string config = dir_ + "/nginx.conf";
    const std::string error_log = dir_ + "/error.log";
    const std::string prefix = dir_ + "/";
    const std::string stderr_path = dir_ + "/stderr.log";
    std::vector<std::string> args = {binary_, "-p", prefix, "-c", config, "-e", error_log};
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);

    [[maybe_unused]] const pid_t parent = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) throw std::system_error(errno, std::generic_category(), "nginx_fixture: fork");
    if (child == 0) {
#if defined(__linux__)
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no nginx behind
      if (::getppid() != parent) _exit(127);
#endif
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);  // the parent may block signals nginx relies on
      for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD}) signal(sig, SIG_DFL);
      const int in = ::open("/dev/null", O_RDONLY);
      const int out = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in >= 0) ::dup2(in, 0);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
#ifdef SYS_close_range
      ::syscall(SYS_close_range, 3u, ~0u, 0u);  // no test socket leaks into nginx
#endif
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    pid_ = child;

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    const std::string expected = token();
    std::string last;
    for (int i = 0; i < 100000; ++i) {
      int wstatus = 0;
      if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
        pid_ = -1;
        why = "nginx exited (" + describe(wstatus) + "): " + logs();
        return false;
      }
      // nginx writes its pid file after it has bound its listening sockets.
      if (std::filesystem::exists(dir_ + "/nginx.pid")) {
        try {
          const std::string response = raw_get("/fixture_token");
          if (response.compare(0, 12, "HTTP/1.1 200") == 0 && response.size() >= expected.size() &&
              response.compare(response.size() - expected.size(), expected.size(), expected) == 0) {
            return true;
          }
          last = "answered: " + response.substr(0, 200);
        } catch (const std::exception& error) {
          last = error.what();
        }
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop();
    why = "not answering /fixture_token within 10 s (" + last + "): " + logs();
    return false;
  }

  static std::string describe(int wstatus) {
    if (WIFEXITED(wstatus)) return "exit status " + std::to_string(WEXITSTATUS(wstatus));
    if (WIFSIGNALED(wstatus)) return "signal " + std::to_string(WTERMSIG(wstatus));
    return "status " + std::to_string(wstatus);
  }

  // Graceful (SIGQUIT, 5 s), then fast (SIGTERM, 2 s), then SIGKILL; always reaped.
  void stop() noexcept {
    if (pid_ <= 0) return;
    struct step {
      int signal;
      int milliseconds;
    };
    for (step s : {step{SIGQUIT, 5000}, step{SIGTERM, 2000}, step{SIGKILL, 5000}}) {
      ::kill(pid_, s.signal);
      for (int waited = 0; waited < s.milliseconds; waited += 2) {
        int wstatus = 0;
        const pid_t done = ::waitpid(pid_, &wstatus, WNOHANG);
        if (done == pid_ || (done < 0 && errno != EINTR)) {
          pid_ = -1;
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    pid_ = -1;  // not reaped after SIGKILL and 5 s: nothing more to do
  }

  std::optional<tls_files> tls_;
  std::string binary_;
  std::string dir_;
  std::uint16_t port_ = 0;
  std::uint16_t tls_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace nginx_test
