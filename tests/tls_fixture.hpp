// tests/tls_fixture.hpp - TLS peers nobody here wrote, for tests/test_tls.cpp (POSIX):
// openssl s_server and s_client, and Python's ssl module, with certificates the
// `openssl` command makes at test time.
//
//   if (!tls_test::tools_present()) return;           // WARNs and skips when openssl or python3 is missing
//   const tls_test::certificates& certs = tls_test::certificates::shared();
//   certs.file("ca.pem")                               // a path in their temporary directory
//   tls_test::process server = tls_test::s_server({"-cert", certs.file("server.pem"), ...});
//   tls_test::process python = tls_test::python_server({"echo", ...});
//   server.port()                                      // 127.0.0.1:port, listening when started
//
// The certificates (EC P-256 keys: cheap handshakes, under valgrind too) are made
// once per test binary in a fresh temporary directory, removed at exit:
//   ca.pem             a CA ("coro_loop test CA"), trusted by the tests' clients and servers
//   server.pem         for localhost, 127.0.0.1 and ::1, issued by the CA; server.key
//   expired.pem        the same, expired yesterday
//   wrong_host.pem     for wrong.example and 10.255.255.1 only, issued by the CA
//   self_signed.pem    for localhost and 127.0.0.1, signed by its own key
//   unknown_ca.pem     for localhost and 127.0.0.1, issued by another CA nobody trusts
//   client.pem         a client certificate (clientAuth), issued by the CA; client.key
// All server certificates share server.key.
//
// A process runs a program with its stdout and stderr in a file of that
// directory (output()), stdin from /dev/null or a pipe (send_input()); it is
// stopped (SIGTERM, then SIGKILL, each bounded) and reaped by its destructor, and
// killed with the test binary on Linux (PR_SET_PDEATHSIG). Every wait is bounded.
// A server is started on 127.0.0.1 and a port bound to 0 and released, tried
// again on another (up to 5) if something took it meanwhile; it is ready once it
// said so ("ACCEPT" from s_server, "PORT n" from the Python script).
//
// The tools are required: `make test` runs scripts/install-deps.sh test, which
// installs them (Debian: openssl, python3, libssl-dev), and CI installs them the
// same way. Only when the openssl or python3 command is missing does a test WARN
// and return.
#pragma once

#include "catch.hpp"
#include "coro_loop.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
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
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace tls_test {

// The program `name` on PATH, or "".
inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// The openssl and python3 commands, found once.
inline const std::string& openssl_program() {
  static const std::string found = find_program("openssl");
  return found;
}
inline const std::string& python_program() {
  static const std::string found = find_program("python3");
  return found;
}

// "" when both tools are there, else what is missing.
inline std::string missing_tools() {
  std::string missing;
  if (openssl_program().empty()) missing += " openssl";
  if (python_program().empty()) missing += " python3";
  return missing;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream all;
  all << in.rdbuf();
  return all.str();
}

inline void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) throw std::runtime_error("tls_fixture: cannot write " + path);
}

// Bytes of every value (CR, LF and NUL too), the same from C++ and from the
// Python script: byte i of a transfer is (i * 31 + i / 256) mod 256.
inline std::string content(std::size_t offset, std::size_t size) {
  std::string text(size, '\0');
  for (std::size_t i = 0; i < size; ++i) {
    const std::size_t at = offset + i;
    text[i] = static_cast<char>((at * 31 + at / 256) & 0xff);
  }
  return text;
}

// A temporary directory, removed with everything in it.
class temp_dir {
 public:
  temp_dir() {
    std::string base = "/tmp";
    if (const char* tmp = std::getenv("TMPDIR"); tmp != nullptr && *tmp == '/') base = tmp;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    std::string pattern = base + "/coro_loop_tls.XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), "tls_fixture: mkdtemp " + pattern);
    }
    path_ = pattern;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// A child process (see the top of the file). Loop-free: its waits block the
// calling thread, so a test that must keep its loop running polls exited().
class process {
 public:
  // Starts argv[0] (a path) with `args`; its output goes to `output_path`. With
  // `piped_input` its stdin is a pipe send_input() writes to, else /dev/null.
  process(std::vector<std::string> argv, std::string output_path, bool piped_input = false)
      : output_path_(std::move(output_path)) {
    std::vector<char*> raw;
    for (std::string& arg : argv) raw.push_back(arg.data());
    raw.push_back(nullptr);
    int input[2] = {-1, -1};
    if (piped_input && ::pipe2(input, O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::generic_category(), "tls_fixture: pipe2");
    }
    [[maybe_unused]] const pid_t parent = ::getpid();
    const char* output = output_path_.c_str();
    // Between fork and exec only async-signal-safe calls: the test process has threads.
    const pid_t child = ::fork();
    if (child < 0) throw std::system_error(errno, std::generic_category(), "tls_fixture: fork");
    if (child == 0) {
#if defined(__linux__)
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no server behind
      if (::getppid() != parent) _exit(127);
#endif
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD}) signal(sig, SIG_DFL);
      const int in = piped_input ? input[0] : ::open("/dev/null", O_RDONLY);
      const int out = ::open(output, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in >= 0) ::dup2(in, 0);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
#ifdef SYS_close_range
      ::syscall(SYS_close_range, 3u, ~0u, 0u);  // no test socket leaks into the child
#endif
      ::execv(raw[0], raw.data());
      _exit(127);
    }
    pid_ = child;
    if (piped_input) {
      ::close(input[0]);
      input_ = input[1];
    }
  }
  process(process&& other) noexcept
      : output_path_(std::move(other.output_path_)),
        pid_(std::exchange(other.pid_, -1)),
        input_(std::exchange(other.input_, -1)),
        port_(other.port_),
        status_(other.status_) {}
  process& operator=(process&&) = delete;
  ~process() {
    stop();
    if (input_ >= 0) ::close(input_);
  }

  std::uint16_t port() const noexcept { return port_; }
  void set_port(std::uint16_t port) noexcept { port_ = port; }
  std::string output() const { return read_file(output_path_); }

  // Writes to the child's stdin (piped_input); false when it could not.
  bool send_input(std::string_view text) const {
    while (!text.empty()) {
      const ssize_t written = ::write(input_, text.data(), text.size());
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) return false;
      text.remove_prefix(static_cast<std::size_t>(written));
    }
    return true;
  }

  // Whether it has exited (reaped then: exit_status() holds its status).
  bool exited() {
    if (pid_ <= 0) return true;
    int wstatus = 0;
    const pid_t done = ::waitpid(pid_, &wstatus, WNOHANG);
    if (done == pid_ || (done < 0 && errno != EINTR)) {
      pid_ = -1;
      status_ = wstatus;
      return true;
    }
    return false;
  }
  // Waits up to `limit` for the exit; false if it still runs.
  bool wait_exit(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!exited()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }
  // The exit code once exited() (-1 when killed by a signal).
  int exit_code() const noexcept { return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1; }

  // SIGTERM (2 s), then SIGKILL (5 s); always reaped unless the kernel refuses.
  void stop() noexcept {
    for (int sig : {SIGTERM, SIGKILL}) {
      if (pid_ <= 0) return;
      ::kill(pid_, sig);
      (void)wait_exit(std::chrono::milliseconds(sig == SIGTERM ? 2000 : 5000));
    }
    pid_ = -1;
  }

 private:
  std::string output_path_;
  pid_t pid_ = -1;
  int input_ = -1;
  std::uint16_t port_ = 0;
  int status_ = 0;
};

// Runs a command to its end (at most 20 s); throws with its output if it fails.
inline void run(std::vector<std::string> argv, const std::string& log_path) {
  const std::string command = [&] {
    std::string joined;
    for (const std::string& arg : argv) joined += (joined.empty() ? "" : " ") + arg;
    return joined;
  }();
  process child(std::move(argv), log_path);
  if (!child.wait_exit(std::chrono::seconds(20))) {
    throw std::runtime_error("tls_fixture: still running after 20 s: " + command);
  }
  if (child.exit_code() != 0) {
    throw std::runtime_error("tls_fixture: failed (" + std::to_string(child.exit_code()) + "): " + command + "\n" +
                             child.output());
  }
}

// The certificates listed at the top, made once.
class certificates {
 public:
  static const certificates& shared() {
    static const certificates made;
    return made;
  }
  std::string file(const std::string& name) const { return dir_.path() + "/" + name; }
  const std::string& dir() const noexcept { return dir_.path(); }

 private:
  certificates() {
    write_file(file("openssl.cnf"), config());
    const std::string log = file("openssl.log");
    auto openssl = [&](std::initializer_list<std::string> args) {
      std::vector<std::string> argv = {openssl_program()};
      argv.insert(argv.end(), args);
      run(std::move(argv), log);
    };
    auto new_key = [&](const std::string& name) {
      openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file(name)});
    };
    auto new_ca = [&](const std::string& name, const std::string& subject) {
      new_key(name + ".key");
      openssl({"req", "-config", file("openssl.cnf"), "-x509", "-new", "-key", file(name + ".key"), "-subj", subject,
               "-days", "30", "-extensions", "ca_ext", "-out", file(name + ".pem")});
    };
    // A certificate for `key` issued by `issuer` (or self-signed when "").
    int serial = 1;
    auto issue = [&](const std::string& name, const std::string& key, const std::string& subject,
                     const std::string& extensions, const std::string& issuer, const std::string& days) {
      if (issuer.empty()) {
        openssl({"req", "-config", file("openssl.cnf"), "-x509", "-new", "-key", file(key), "-subj", subject, "-days",
                 days, "-extensions", extensions, "-out", file(name)});
        return;
      }
      openssl({"req", "-config", file("openssl.cnf"), "-new", "-key", file(key), "-subj", subject, "-out",
               file(name + ".csr")});
      openssl({"x509", "-req", "-in", file(name + ".csr"), "-CA", file(issuer + ".pem"), "-CAkey",
               file(issuer + ".key"), "-set_serial", std::to_string(++serial), "-days", days, "-extfile",
               file("openssl.cnf"), "-extensions", extensions, "-out", file(name)});
    };
    new_ca("ca", "/CN=coro_loop test CA");
    new_ca("other_ca", "/CN=coro_loop untrusted CA");
    new_key("server.key");
    new_key("client.key");
    issue("server.pem", "server.key", "/CN=localhost", "server_ext", "ca", "30");
    // -days -1: valid until yesterday (the oldest end openssl x509 accepts).
    issue("expired.pem", "server.key", "/CN=localhost", "server_ext", "ca", "-1");
    issue("wrong_host.pem", "server.key", "/CN=wrong.example", "wrong_host_ext", "ca", "30");
    issue("self_signed.pem", "server.key", "/CN=localhost", "server_ext", "", "30");
    issue("unknown_ca.pem", "server.key", "/CN=localhost", "server_ext", "other_ca", "30");
    issue("client.pem", "client.key", "/CN=coro_loop test client", "client_ext", "ca", "30");
  }

  static std::string config() {
    return "# written by tests/tls_fixture.hpp: independent of the system's openssl.cnf\n"
           "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
           "[ca_ext]\nbasicConstraints = critical, CA:true\nkeyUsage = critical, keyCertSign, cRLSign\n"
           "subjectKeyIdentifier = hash\n"
           "[server_ext]\nbasicConstraints = CA:false\nkeyUsage = critical, digitalSignature\n"
           "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n"
           "[wrong_host_ext]\nbasicConstraints = CA:false\nkeyUsage = critical, digitalSignature\n"
           "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:wrong.example, IP:10.255.255.1\n"
           "[client_ext]\nbasicConstraints = CA:false\nkeyUsage = critical, digitalSignature\n"
           "extendedKeyUsage = clientAuth\n";
  }

  temp_dir dir_;
};

// A TCP port on 127.0.0.1 nothing listens on now.
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "tls_fixture: socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int saved = errno;
    ::close(fd);
    throw std::system_error(saved, std::generic_category(), "tls_fixture: bind 127.0.0.1:0");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// A file name of its own in the certificates' directory, for a process's output.
inline std::string output_file(const std::string& what) {
  static int counter = 0;
  return certificates::shared().file(what + "." + std::to_string(++counter) + ".out");
}

// Waits (at most 10 s) until `ready` finds what it looks for in the output, or
// the process exits. True when ready.
template <class Ready>
bool wait_ready(process& child, Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready(child.output())) return true;
    if (child.exited()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// `openssl s_server -accept 127.0.0.1:PORT` with `args` added (certificates,
// -rev, -tls1_2, -Verify, ...): listening when it returns. With `piped_input`
// its stdin is a pipe (its interactive commands, data to send).
inline process s_server(const std::vector<std::string>& args, bool piped_input = false) {
  std::string failures;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const std::uint16_t port = free_port();
    std::vector<std::string> argv = {openssl_program(), "s_server", "-accept", "127.0.0.1:" + std::to_string(port)};
    argv.insert(argv.end(), args.begin(), args.end());
    process server(std::move(argv), output_file("s_server"), piped_input);
    // s_server says ACCEPT once it listens.
    if (wait_ready(server, [](const std::string& out) { return out.find("ACCEPT") != std::string::npos; })) {
      server.set_port(port);
      return server;
    }
    failures += "\n  port " + std::to_string(port) + ": " + server.output();
    if (failures.find("in use") == std::string::npos) break;
  }
  throw std::runtime_error("tls_fixture: openssl s_server did not start:" + failures);
}

// The Python side: servers and clients over Python's ssl module (the mode is
// the first argument). Written to the certificates' directory once.
inline const std::string& python_script() {
  static const std::string path = [] {
    const std::string script = certificates::shared().file("tls_peer.py");
    write_file(script, R"PY(# written by tests/tls_fixture.hpp: TLS peers over Python's ssl module.
#   tls_peer.py SERVER_MODE [options]   listens on 127.0.0.1 (port 0), prints "PORT n", serves until killed
#     echo          echoes every byte until the client's end, then close_notify (unwrap)
#     send --size N sends N content bytes, then close_notify
#     cut --size N  sends N content bytes, then closes TCP without close_notify
#     expect_end    reads until the end; prints "clean end" or "ragged end" (no close_notify)
#     starttls      reads a plain "STARTTLS\n", answers "GO\n", then echoes over TLS
#   tls_peer.py clients --port P --count N   N concurrent asyncio clients, each sends a line and
#                                            waits for its echo; all stay open until all have it
import argparse, asyncio, socket, ssl, sys, threading

def content(offset, size):
    return bytes(((i * 31 + i // 256) & 0xff) for i in range(offset, offset + size))

def context(args, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
        if server:
            ctx.verify_mode = ssl.CERT_REQUIRED
    if args.min_version:
        ctx.minimum_version = getattr(ssl.TLSVersion, args.min_version)
    if args.max_version:
        ctx.maximum_version = getattr(ssl.TLSVersion, args.max_version)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(','))
    return ctx

def serve_one(args, ctx, raw):
    try:
        raw.settimeout(60)
        if args.mode == 'starttls':
            line = b''
            while not line.endswith(b'\n'):
                byte = raw.recv(1)
                if not byte:
                    return
                line += byte
            if line != b'STARTTLS\n':
                return
            raw.sendall(b'GO\n')
        conn = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        if args.mode in ('echo', 'starttls'):
            while True:
                try:
                    data = conn.recv(65536)
                except ssl.SSLEOFError:
                    return
                if not data:
                    break
                conn.sendall(data)
            conn.unwrap()
        elif args.mode in ('send', 'cut'):
            conn.sendall(content(0, args.size))
            if args.mode == 'send':
                conn.unwrap()
        elif args.mode == 'expect_end':
            try:
                while conn.recv(65536):
                    pass
                print('clean end', flush=True)
            except (ssl.SSLEOFError, ConnectionResetError):
                # Without close_notify: a FIN, or a reset when the client closed with
                # bytes unread (the session tickets sent after the handshake).
                print('ragged end', flush=True)
    except (OSError, ValueError) as error:
        print('connection failed:', error, flush=True)
    finally:
        raw.close()

def serve(args):
    ctx = context(args, True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(('127.0.0.1', 0))
    listener.listen(128)
    print('PORT', listener.getsockname()[1], flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve_one, args=(args, ctx, raw), daemon=True).start()

async def clients(args):
    ctx = context(args, False)
    everyone = asyncio.Event()
    answered = 0
    async def one(i):
        nonlocal answered
        reader, writer = await asyncio.open_connection('127.0.0.1', args.port, ssl=ctx,
                                                       server_hostname=args.hostname)
        line = b'hello %d\n' % i
        writer.write(line)
        reply = await reader.readline()
        if reply != b'echo:' + line:
            raise RuntimeError('client %d: got %r' % (i, reply))
        answered += 1
        if answered == args.count:
            everyone.set()
        await everyone.wait()
        writer.close()
        await writer.wait_closed()
    results = await asyncio.gather(*(one(i) for i in range(args.count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[:5]:
        print('failed:', repr(failure), flush=True)
    print('OK %d' % (len(results) - len(failures)), flush=True)
    return 1 if failures else 0

parser = argparse.ArgumentParser()
parser.add_argument('mode')
parser.add_argument('--size', type=int, default=0)
parser.add_argument('--cert')
parser.add_argument('--key')
parser.add_argument('--cafile')
parser.add_argument('--min-version')
parser.add_argument('--max-version')
parser.add_argument('--alpn')
parser.add_argument('--port', type=int)
parser.add_argument('--count', type=int, default=1)
parser.add_argument('--hostname', default='localhost')
parser.add_argument('--timeout', type=float, default=60)
args = parser.parse_args()
if args.mode == 'clients':
    sys.exit(asyncio.run(asyncio.wait_for(clients(args), args.timeout)))
serve(args)
)PY");
    return script;
  }();
  return path;
}

// tls_peer.py as a server (see its modes above), on 127.0.0.1: listening when it returns.
inline process python_server(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {python_program(), python_script()};
  argv.insert(argv.end(), args.begin(), args.end());
  process server(std::move(argv), output_file("python_server"));
  std::uint16_t port = 0;
  const bool ready = wait_ready(server, [&](const std::string& out) {
    const std::size_t at = out.find("PORT ");
    if (at == std::string::npos || out.find('\n', at) == std::string::npos) return false;
    port = static_cast<std::uint16_t>(std::stoi(out.substr(at + 5)));
    return true;
  });
  if (!ready) throw std::runtime_error("tls_fixture: the Python TLS server did not start: " + server.output());
  server.set_port(port);
  return server;
}

// tls_peer.py clients (or any other argv) started, not waited for: the test's
// loop must keep running while they talk to its server.
inline process python_clients(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {python_program(), python_script(), "clients"};
  argv.insert(argv.end(), args.begin(), args.end());
  return process(std::move(argv), output_file("python_clients"));
}

// A file in the certificates' directory.
inline std::string file(const std::string& name) { return certificates::shared().file(name); }

// A client context trusting the test CA only.
inline coro_loop::tls_context trusting_client() {
  coro_loop::tls_context context = coro_loop::tls_context::client();
  context.load_verify_locations(file("ca.pem"));
  return context;
}

// The openssl and python3 commands are required (scripts/install-deps.sh test); only when one
// is missing does a test say so (`suite`: which tests) and pass.
inline bool tools_present(const char* suite) {
  const std::string missing = missing_tools();
  if (missing.empty()) return true;
  WARN(suite << " test skipped: missing" << missing << " (scripts/install-deps.sh test installs them)");
  return false;
}

}  // namespace tls_test
