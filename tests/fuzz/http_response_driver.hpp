// tests/fuzz/http_response_driver.hpp - feeds a server's bytes to http::response_parser
// the way the client does, and checks the parser's promises on the way. Shared by the
// libFuzzer target (tests/fuzz/http_response_fuzz.cpp) and the corpus regression test
// (tests/test_http_parser_corpus.cpp). Include after coro_loop.hpp.
//
// Input: three configuration bytes, then the bytes the server sent.
//   byte 0, low 3 bits: bit 0 set: the first request is HEAD (else GET);
//                       bit 1 set: keep-alive: after a complete response that allows it,
//                              parse the next one from the bytes left (pipelining);
//                       bit 2 set: the later requests alternate between GET and HEAD;
//                       bits 3-4: parse_body's max_payload: 1, 3, unlimited, 64 (as the
//                              client's read_chunk(max_bytes) passes it).
//   byte 1, low 3 bits: the limits (0 the defaults, 1-7 small ones: limits_profile()).
//   byte 2, low 3 bits: how the bytes arrive: 0 all at once, 1 one byte at a time,
//                       2 two, 3 seven, 4-7 pieces of 1..64 bytes (pseudo-random, seeded
//                       by the high bits of the three bytes).
// The digits '0'-'7' are the values 0-7 (and an unlimited max_payload): a seed reads
// "000HTTP/1.1 200 OK\r\n...".
//
// The client's way: the received bytes grow in pieces; parse_head() gets every unconsumed
// byte until it returns > 0, again after each 1xx head; parse_body() then gets every
// unconsumed byte, the consumed ones are dropped, more arrive when it returns 0 with an
// empty payload; when no more arrive, end_of_input(). Each run is done twice, with the
// chosen pieces and all at once, and the two must agree.
//
// Outcome: parsed, or protocol_error (the expected answer to bad input). A broken promise
// throws invariant_violation (not a protocol_error); any other exception escapes as is.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace http_fuzz {

namespace http = coro_loop::http;

// A promise of the parser (or of this driver's use of it) that did not hold: a finding.
class invariant_violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

struct config {
  bool first_head = false;
  bool keep_alive = false;
  bool alternate = false;
  unsigned limits_index = 0;
  unsigned split = 0;
  std::size_t max_payload = static_cast<std::size_t>(-1);
  std::uint32_t seed = 0;
};

inline constexpr std::size_t config_bytes = 3;

inline config read_config(std::string_view input) {
  unsigned char b[config_bytes] = {0, 0, 0};
  for (std::size_t i = 0; i < config_bytes && i < input.size(); ++i) b[i] = static_cast<unsigned char>(input[i]);
  config c;
  c.first_head = (b[0] & 1) != 0;
  c.keep_alive = (b[0] & 2) != 0;
  c.alternate = (b[0] & 4) != 0;
  static constexpr std::size_t max_payloads[4] = {1, 3, static_cast<std::size_t>(-1), 64};
  c.max_payload = max_payloads[(b[0] >> 3) & 3];
  c.limits_index = b[1] & 7;
  c.split = b[2] & 7;
  c.seed = ((std::uint32_t(b[0]) >> 3) | (std::uint32_t(b[1] >> 3) << 5) | (std::uint32_t(b[2] >> 3) << 10)) * 2654435761u + 1;
  return c;
}

// Small limits, so that every limit's path is reached by short inputs.
inline http::limits limits_profile(unsigned index) {
  http::limits l;
  switch (index & 7) {
    case 0: break;
    case 1: l.max_status_line = 16; break;
    case 2: l.max_header_bytes = 64; break;
    case 3: l.max_header_count = 2; break;
    case 4: l.max_status_line = 24; l.max_header_bytes = 96; l.max_header_count = 4; break;
    case 5: l.max_status_line = 12; l.max_header_bytes = 32; l.max_header_count = 1; break;
    case 6: l.max_status_line = 64; l.max_header_bytes = 16; l.max_header_count = 0; break;
    case 7: l.max_header_bytes = 200; l.max_header_count = 8; l.max_body = 8; break;
  }
  return l;
}

// What one response looked like, compared between the two runs.
struct response_record {
  std::vector<int> interim_statuses;
  int status = 0;
  int version_minor = 0;
  std::string reason;
  http::response_parser::framing framing = http::response_parser::framing::none;
  std::optional<std::uint64_t> content_length;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::pair<std::string, std::string>> trailers;
  std::string body;
  bool keep_alive = false;
  bool operator==(const response_record&) const = default;
};

enum class outcome { parsed, protocol_error };

struct result {
  outcome end = outcome::parsed;
  std::string error;                         // protocol_error's what()
  std::vector<response_record> responses;    // the complete ones
  std::size_t consumed = 0;                  // bytes of the server's input consumed
};

inline const char* to_string(outcome o) { return o == outcome::parsed ? "parsed" : "protocol_error"; }

namespace detail {

inline void require(bool condition, const char* what) {
  if (!condition) throw invariant_violation(what);
}

// The bytes that have arrived so far: [0, available) of the server's input.
class arrivals {
 public:
  arrivals(std::string_view input, const config& c) : input_(input), split_(c.split), state_(c.seed | 1) {}
  std::size_t available() const { return available_; }
  bool all_arrived() const { return available_ == input_.size(); }
  bool arrive() {  // the next piece; false when the server has nothing more
    if (all_arrived()) return false;
    std::size_t piece = input_.size();
    switch (split_) {
      case 0: break;
      case 1: piece = 1; break;
      case 2: piece = 2; break;
      case 3: piece = 7; break;
      default:  // xorshift32
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        piece = 1 + state_ % 64;
    }
    available_ += std::min(piece, input_.size() - available_);
    return true;
  }

 private:
  std::string_view input_;
  unsigned split_;
  std::uint32_t state_;
  std::size_t available_ = 0;
};

inline void check_fields(const http::header_list& fields, const http::limits& l) {
  std::size_t bytes = 0;
  for (const auto& [name, value] : fields) {
    require(!name.empty(), "a field with an empty name");
    require(name.find_first_of(std::string_view(":\r\n \t\0", 6)) == std::string::npos,
            "a field name with ':', whitespace, CR, LF or NUL");
    require(value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos,
            "a field value with CR, LF or NUL");
    bytes += name.size() + value.size();
  }
  require(bytes <= l.max_header_bytes, "fields larger than limits.max_header_bytes");
}

inline void check_head(http::response_parser& parser, const http::limits& l, bool head_request) {
  using framing = http::response_parser::framing;
  require(parser.status() >= 100 && parser.status() <= 999, "status outside 100..999");
  require(parser.version_minor() == 0 || parser.version_minor() == 1, "version_minor is neither 0 nor 1");
  require(parser.reason().find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos,
          "reason with CR, LF or NUL");
  require(parser.headers().size() <= l.max_header_count, "more fields than limits.max_header_count");
  check_fields(parser.headers(), l);
  if (parser.interim()) {
    require(parser.status() >= 100 && parser.status() <= 199, "interim() for a status outside 1xx");
    return;
  }
  require(parser.status() >= 200 || parser.status() == 101, "a final head with a 1xx status other than 101");
  if (parser.body_framing() == framing::length) {
    require(parser.content_length().has_value(), "length framing without content_length()");
  }
  if (head_request || parser.status() == 204 || parser.status() == 304 || parser.status() < 200) {
    require(parser.body_framing() == framing::none, "a body for HEAD, 1xx, 204 or 304");
  }
  require(parser.body_framing() != framing::until_close || !parser.keep_alive(),
          "keep_alive() with a body delimited by the end of the connection");
}

// One run over `input` (the server's bytes, without the configuration bytes).
inline result run_once(std::string_view input, const config& c) {
  using framing = http::response_parser::framing;
  const http::limits l = limits_profile(c.limits_index);
  http::response_parser parser(l);
  arrivals net(input, c);
  result r;
  std::size_t consumed = 0;
  // Every call either consumes a byte or is answered by the arrival of one (or by the
  // end), so this bounds a parser that neither progresses nor asks for more.
  std::size_t calls_left = 4 * input.size() + 64;
  auto call = [&] {
    require(calls_left-- > 0, "no progress: parser calls exceed 4 per input byte");
  };
  auto unconsumed = [&] { return input.substr(consumed, net.available() - consumed); };
  bool head_request = c.first_head;
  try {
    for (std::size_t index = 0;; ++index) {
      if (index > 0 && c.alternate) head_request = !head_request;
      parser.start(head_request ? "HEAD" : "GET");
      response_record rec;
      // --- the head, after any 1xx heads
      for (;;) {
        call();
        const std::string_view data = unconsumed();
        const std::size_t n = parser.parse_head(data);
        require(n <= data.size(), "parse_head consumed more than it was given");
        if (n == 0) {
          if (!net.arrive()) {
            parser.end_of_input();
            throw invariant_violation("end_of_input() within a head did not throw protocol_error");
          }
          continue;
        }
        consumed += n;
        check_head(parser, l, head_request);
        if (!parser.interim()) break;
        rec.interim_statuses.push_back(parser.status());
      }
      rec.status = parser.status();
      rec.version_minor = parser.version_minor();
      rec.reason = parser.reason();
      rec.framing = parser.body_framing();
      rec.content_length = parser.content_length();
      for (const auto& [name, value] : parser.headers()) rec.headers.emplace_back(name, value);
      // --- the body
      while (!parser.done()) {
        call();
        const std::string_view data = unconsumed();
        std::string_view payload;
        const std::size_t n = parser.parse_body(data, payload, c.max_payload);
        require(n <= data.size(), "parse_body consumed more than it was given");
        require(payload.size() <= c.max_payload, "parse_body's payload is larger than max_payload");
        if (!payload.empty()) {
          require(payload.data() >= data.data() && payload.data() + payload.size() <= data.data() + n,
                  "parse_body's payload is not within the consumed bytes");
        }
        if (rec.framing == framing::until_close) {
          require(payload.size() == n, "until_close: a consumed byte that is not payload");
        }
        rec.body.append(payload);
        consumed += n;
        if (parser.done()) break;
        if (n == 0) {
          require(payload.empty(), "payload from zero consumed bytes");
          if (!net.arrive()) {
            parser.end_of_input();
            require(parser.done(), "end_of_input() returned without done() or protocol_error");
          }
        }
      }
      if (rec.framing == framing::length) {
        require(rec.content_length && rec.body.size() == *rec.content_length,
                "length framing: payload bytes differ from content_length()");
      }
      if (rec.framing == framing::none) require(rec.body.empty(), "payload without a body");
      if (rec.framing != framing::chunked) require(parser.trailers().empty(), "trailers without chunked framing");
      check_fields(parser.trailers(), l);
      for (const auto& [name, value] : parser.trailers()) rec.trailers.emplace_back(name, value);
      rec.keep_alive = parser.keep_alive();
      r.responses.push_back(std::move(rec));
      // --- pipelining: the next response from what is left, as on a reused connection
      if (!c.keep_alive || !r.responses.back().keep_alive || consumed == input.size()) break;
    }
  } catch (const http::protocol_error& e) {
    r.end = outcome::protocol_error;
    r.error = e.what();
  }
  require(consumed <= input.size(), "consumed more than the input");
  r.consumed = consumed;
  return r;
}

}  // namespace detail

// Runs `input` (configuration bytes included) as configured and all at once; checks the
// promises, and that both runs agree. Returns the configured run's result.
inline result run(std::string_view input) {
  const config c = read_config(input);
  const std::string_view server = input.substr(std::min(input.size(), config_bytes));
  result r = detail::run_once(server, c);
  if (c.split != 0) {
    config whole = c;
    whole.split = 0;
    const result w = detail::run_once(server, whole);
    detail::require(r.end == w.end, "the outcome depends on how the bytes arrive");
    if (r.end == outcome::parsed) {
      detail::require(r.consumed == w.consumed, "the bytes consumed depend on how the bytes arrive");
    }
    detail::require(r.responses == w.responses, "a parsed response depends on how the bytes arrive");
  }
  return r;
}

}  // namespace http_fuzz
