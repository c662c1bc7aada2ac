// tests/test_http_parser_corpus.cpp - http::response_parser over the fuzz corpus [http]:
// every file of tests/fuzz/http_response_seeds/ (and of tests/fuzz/http_response_crashes/,
// the fuzzer's reproducers kept after a fix) goes through the fuzz target's driver
// (tests/fuzz/http_response_driver.hpp) with each way of its bytes arriving, and must end
// parsed or with protocol_error, every checked promise held. The hand-written seeds also
// have their expected outcome here, where RFC 9112 leaves the client no choice; the
// found_* seeds are small inputs the fuzzer found reaching error paths the others do not.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "fuzz/http_response_driver.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
namespace http = coro_loop::http;

namespace {

// The source tree: $CORO_LOOP_SOURCE_DIR, else found from this file's path as the
// compiler saw it (relative to the Makefile's directory for make, to the build directory
// for meson: where each runs its tests), else the working directory.
fs::path source_dir() {
  std::vector<fs::path> candidates;
  if (const char* dir = std::getenv("CORO_LOOP_SOURCE_DIR")) candidates.emplace_back(dir);
  candidates.push_back(fs::path(__FILE__).parent_path().parent_path());
  candidates.emplace_back(".");
  for (const fs::path& dir : candidates) {
    std::error_code ec;
    if (fs::is_directory((dir.empty() ? fs::path(".") : dir) / "tests" / "fuzz" / "http_response_seeds", ec)) {
      return dir.empty() ? fs::path(".") : dir;
    }
  }
  FAIL("tests/fuzz/http_response_seeds not found from " << fs::current_path()
                                                         << " (set CORO_LOOP_SOURCE_DIR to the source tree)");
  return {};
}

struct corpus_file {
  std::string name;  // "http_response_seeds/content_length"
  std::string bytes;
};

std::vector<corpus_file> corpus() {
  const fs::path fuzz = source_dir() / "tests" / "fuzz";
  std::vector<corpus_file> files;
  for (const char* dir : {"http_response_seeds", "http_response_crashes"}) {
    std::error_code ec;
    if (!fs::is_directory(fuzz / dir, ec)) continue;
    for (const auto& entry : fs::directory_iterator(fuzz / dir)) {
      if (!entry.is_regular_file()) continue;
      std::ifstream in(entry.path(), std::ios::binary);
      files.push_back({std::string(dir) + "/" + entry.path().filename().string(),
                       std::string(std::istreambuf_iterator<char>(in), {})});
    }
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return files;
}

// The driver's result, or a failure naming the broken promise (the caller's INFO names the input).
std::optional<http_fuzz::result> drive(const std::string& input) {
  try {
    return http_fuzz::run(input);
  } catch (const http_fuzz::invariant_violation& e) {
    FAIL_CHECK("invariant violated: " << e.what());
  } catch (const std::exception& e) {
    FAIL_CHECK("unexpected exception " << typeid(e).name() << ": " << e.what());
  }
  return std::nullopt;
}

// The bytes of a hand-written seed (a test failure if it is missing).
std::string seed_bytes(const std::vector<corpus_file>& files, const std::string& seed) {
  const std::string name = "http_response_seeds/" + seed;
  for (const corpus_file& file : files) {
    if (file.name == name) return file.bytes;
  }
  FAIL(name << " is missing");
  return {};
}

std::string with_split(std::string input, unsigned split) {
  if (input.size() < http_fuzz::config_bytes) input.resize(http_fuzz::config_bytes, '0');
  input[2] = static_cast<char>((static_cast<unsigned char>(input[2]) & ~7u) | split);
  return input;
}

}  // namespace

TEST_CASE("http parser corpus: every file ends parsed or with protocol_error, however its bytes arrive", "[http]") {
  const auto files = corpus();
  CHECK(files.size() >= 12);
  for (const corpus_file& file : files) {
    for (unsigned split = 0; split < 8; ++split) {
      INFO(file.name << " arriving as split " << split);
      // run() itself checks the split run against the all-at-once run.
      const auto r = drive(with_split(file.bytes, split));
      if (r) CHECK((r->end == http_fuzz::outcome::parsed || r->end == http_fuzz::outcome::protocol_error));
    }
  }
}

TEST_CASE("http parser corpus: the hand-written seeds end as RFC 9112 requires", "[http]") {
  struct expected {
    http_fuzz::outcome end;
    std::vector<std::string> bodies = {};   // of the complete responses (parsed only)
  };
  using http_fuzz::outcome;
  // Seeds left out here may go either way (a single LF as line end, obs-fold, both
  // Content-Length and chunked, 101 without an upgrade request, gzip transfer coding,
  // whitespace before a colon, HTTP/1.0 keep-alive): only the invariants hold for them.
  const std::map<std::string, expected> table = {
      {"content_length", {outcome::parsed, {"hello"}}},
      {"chunked_extensions_trailers", {outcome::parsed, {"hello world"}}},
      {"chunked_hex_forms", {outcome::parsed, {"0123456789abcdefghijk"}}},
      {"interim_100_103_then_200", {outcome::parsed, {"ok"}}},
      {"head_with_content_length", {outcome::parsed, {""}}},
      {"no_content_204_and_304", {outcome::parsed, {"", ""}}},
      {"close_delimited_http10", {outcome::parsed, {"body until the connection closes\n"}}},
      {"pipelined_keep_alive", {outcome::parsed, {"hi", "", "x", ""}}},
      {"pipelined_get_head_alternating", {outcome::parsed, {"abc", "", "z"}}},
      {"huge_chunk_size", {outcome::protocol_error}},
      {"huge_content_length", {outcome::protocol_error}},
      {"chunk_size_line_over_4096", {outcome::protocol_error}},
      {"truncated_body", {outcome::protocol_error}},
      {"truncated_chunk", {outcome::protocol_error}},
      {"too_many_fields", {outcome::protocol_error}},
      {"long_status_line", {outcome::protocol_error}},
      {"conflicting_content_lengths", {outcome::protocol_error}},
      {"bad_status_code", {outcome::protocol_error}},
      {"nothing_received", {outcome::protocol_error}},
      {"trailers_over_limit", {outcome::protocol_error}},
  };
  const auto files = corpus();
  for (const auto& [seed, want] : table) {
    INFO(seed);
    const auto r = drive(seed_bytes(files, seed));
    if (!r) continue;
    INFO("protocol_error: " << r->error);
    CHECK(http_fuzz::to_string(r->end) == std::string(http_fuzz::to_string(want.end)));
    if (want.end == outcome::parsed && r->end == outcome::parsed) {
      std::vector<std::string> bodies;
      for (const auto& response : r->responses) bodies.push_back(response.body);
      CHECK(bodies == want.bodies);
    }
  }
  // Details of two seeds: the interim heads are seen, the trailers kept.
  const auto interim = drive(seed_bytes(files, "interim_100_103_then_200"));
  if (interim && interim->end == outcome::parsed) {
    REQUIRE(interim->responses.size() == 1);
    CHECK(interim->responses[0].interim_statuses == std::vector<int>{100, 103});
    CHECK(interim->responses[0].status == 200);
  }
  const auto chunked = drive(seed_bytes(files, "chunked_extensions_trailers"));
  if (chunked && chunked->end == outcome::parsed) {
    REQUIRE(chunked->responses.size() == 1);
    CHECK(chunked->responses[0].framing == http::response_parser::framing::chunked);
    CHECK(chunked->responses[0].trailers ==
          std::vector<std::pair<std::string, std::string>>{{"X-Checksum", "abc"}, {"X-Other", "1"}});
  }
}
