// tests/test_task_tree.cpp - the task tree: capture_task_tree, print_task_tree, the
// SIGQUIT dump and run()'s shutdown report in debug mode [task_tree].
//
// Reference: Python 3.14's asyncio.capture_call_graph / print_call_graph, Go's
// goroutine dump on SIGQUIT. Each task says where it was created (the caller's
// line of create_task, run, gather(range), task_group::create_task), what it
// is suspended on in words, and who awaits it; the tree nests the tasks each
// waits for under it. Lines are recorded with __LINE__ on the line of the call.
// No co_await inside CHECK/REQUIRE (GCC 12); lambdas are bound to locals
// before being awaited.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "task_helpers.hpp"
#include "test_support.hpp"

#include <atomic>
#include <cstdlib>
#include <optional>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>
#include <vector>


namespace cl = coro_loop;
using namespace std::chrono_literals;
using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;
using task_test::forever;
using task_test::get_one;

namespace {

// The node of the task named `name`, anywhere in the trees; null when absent.
const cl::task_tree_node* find_task(const std::vector<cl::task_tree_node>& nodes, std::string_view name) {
  for (const cl::task_tree_node& node : nodes) {
    if (node.name == name) return &node;
    if (const cl::task_tree_node* found = find_task(node.children, name)) return found;
  }
  return nullptr;
}

// "test_task_tree.cpp:<line>", as created_at ends.
std::string this_file_at(int line) { return "test_task_tree.cpp:" + std::to_string(line); }

cl::task<void> sleep_forever() { co_await cl::sleep(forever); }

// Enough iterations for new tasks to take their first step and suspend.
cl::task<void> let_tasks_settle() {
  for (int i = 0; i < 4; ++i) co_await cl::sleep(0ms);
}

// --- what one task says ---

cl::task<void> a_sleeping_task() {
  auto sleeper = cl::create_task(sleep_forever(), "sleeper"); const int line = __LINE__;
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "sleeper");
  REQUIRE(node != nullptr);
  CHECK(node->state == "suspended");
  CHECK_THAT(node->created_at, EndsWith(this_file_at(line)));
  CHECK_THAT(node->waiting_on, StartsWith("sleep until +"));
  CHECK(node->awaited_by.empty());  // nobody awaits it: a root
  CHECK(node->children.empty());
  // The task capturing the tree is running; run() recorded its caller's line.
  const cl::task_tree_node* self = find_task(roots, cl::current_task().name());
  REQUIRE(self != nullptr);
  CHECK(self->state == "running");
  CHECK(self->waiting_on.empty());
  CHECK_THAT(self->created_at, ContainsSubstring("test_task_tree.cpp:"));
  sleeper.cancel();
}

TEST_CASE("task tree: a task says where it was created and what it waits on", "[task_tree]") {
  cl::run(a_sleeping_task());
}

cl::task<void> a_task_not_started() {
  auto later = cl::create_task(sleep_forever(), "later");
  const cl::task_tree_node node = cl::capture_task_tree(later);
  CHECK(node.name == "later");
  CHECK(node.state == "not started");
  CHECK(node.waiting_on.empty());
  later.cancel();
  co_await task_test::finished(later);
  const cl::task_tree_node done = cl::capture_task_tree(later);
  CHECK(done.state == "done, cancelled");
}

TEST_CASE("task tree: one task's tree; a task not started yet, and one done", "[task_tree]") {
  cl::run(a_task_not_started());
}

// --- who awaits whom ---

cl::task<void> gathers_a_range(int& line) {
  std::vector<cl::task<void>> children;
  children.push_back(sleep_forever());
  children.push_back(sleep_forever());
  line = __LINE__; co_await cl::gather(std::move(children));
}

cl::task<void> gathers_two(cl::task_handle<void>& first, cl::task_handle<void>& second) {
  co_await cl::gather(first, second, sleep_forever());
}

cl::task<void> gather_children_nest_under_their_gather() {
  int line = 0;
  auto parent = cl::create_task(gathers_a_range(line), "parent");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "parent");
  REQUIRE(node != nullptr);
  CHECK(node->waiting_on == "gather of 2 tasks (2 running)");
  REQUIRE(node->children.size() == 2);
  for (const cl::task_tree_node& child : node->children) {
    CHECK(child.awaited_by == "gather in 'parent'");
    CHECK_THAT(child.created_at, EndsWith(this_file_at(line)));  // gather(range) passes its caller's line
    CHECK_THAT(child.waiting_on, StartsWith("sleep until"));
  }
  // The children are not roots of their own.
  std::size_t root_sleepers = 0;
  for (const cl::task_tree_node& root : roots) {
    if (root.name != "parent" && root.name != cl::current_task().name()) ++root_sleepers;
  }
  CHECK(root_sleepers == 0);
  parent.cancel();
  co_await task_test::finished(parent);
}

cl::task<void> handles_in_a_gather() {
  auto first = cl::create_task(sleep_forever(), "first");
  auto second = cl::create_task(sleep_forever(), "second");
  auto gathering = cl::create_task(gathers_two(first, second), "gathering");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "gathering");
  REQUIRE(node != nullptr);
  CHECK(node->waiting_on == "gather of 3 tasks (3 running)");
  REQUIRE(node->children.size() == 3);
  CHECK(find_task(node->children, "first") != nullptr);
  CHECK(find_task(node->children, "second") != nullptr);
  const cl::task_tree_node* handle_child = find_task(node->children, "first");
  REQUIRE(handle_child != nullptr);
  CHECK(handle_child->awaited_by == "gather in 'gathering'");
  CHECK_THAT(handle_child->created_at, ContainsSubstring("test_task_tree.cpp:"));
  gathering.cancel();
  co_await task_test::finished(gathering);
}

TEST_CASE("task tree: a gather's children sit under the task that awaits the gather", "[task_tree]") {
  SECTION("gather(range): each child created at the gather's line") { cl::run(gather_children_nest_under_their_gather()); }
  SECTION("gather(a, b, c) of handles and a task") { cl::run(handles_in_a_gather()); }
}

cl::task<void> awaits_handle(cl::task_handle<void>& target) { co_await target; }

cl::task<void> awaited_handles_nest() {
  auto target = cl::create_task(sleep_forever(), "target");
  auto waiter = cl::create_task(awaits_handle(target), "waiter");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "waiter");
  REQUIRE(node != nullptr);
  CHECK(node->waiting_on == "awaiting task 'target'");
  REQUIRE(node->children.size() == 1);
  CHECK(node->children[0].name == "target");
  CHECK(node->children[0].awaited_by == "co_await in 'waiter'");
  target.cancel();
  co_await task_test::finished(waiter);
}

TEST_CASE("task tree: a task awaited through its handle sits under the awaiting task", "[task_tree]") {
  cl::run(awaited_handles_nest());
}

cl::task<void> group_body_still_running(int& line) {
  auto body = [&line](cl::task_group& group) -> cl::task<void> {
    group.create_task(sleep_forever(), "child-1");
    line = __LINE__; group.create_task(sleep_forever(), "child-2");
    co_await cl::sleep(forever);
  };
  co_await cl::with_task_group(body);
}

cl::task<void> group_joining() {
  auto body = [](cl::task_group& group) -> cl::task<void> {
    group.create_task(sleep_forever(), "joined-child");
    co_return;
  };
  co_await cl::with_task_group(body);
}

cl::task<void> group_children_nest_under_the_group() {
  int line = 0;
  auto grouper = cl::create_task(group_body_still_running(line), "grouper");
  auto joiner = cl::create_task(group_joining(), "joiner");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  // The body still runs: the children hang under the task that opened the group.
  const cl::task_tree_node* node = find_task(roots, "grouper");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("sleep until"));
  REQUIRE(node->children.size() == 2);
  const cl::task_tree_node* second = find_task(node->children, "child-2");
  REQUIRE(second != nullptr);
  CHECK_THAT(second->awaited_by, StartsWith("task_group "));
  CHECK_THAT(second->awaited_by, ContainsSubstring("(opened at "));
  CHECK_THAT(second->awaited_by, EndsWith(" in 'grouper'"));
  CHECK_THAT(second->created_at, EndsWith(this_file_at(line)));
  // In join: the join names the group and its children.
  const cl::task_tree_node* joining = find_task(roots, "joiner");
  REQUIRE(joining != nullptr);
  CHECK_THAT(joining->waiting_on, StartsWith("task_group::join on task_group "));
  CHECK_THAT(joining->waiting_on, EndsWith("(1 child running)"));
  REQUIRE(joining->children.size() == 1);
  CHECK(joining->children[0].awaited_by == "task_group::join in 'joiner'");
  grouper.cancel();
  joiner.cancel();
  co_await task_test::finished(grouper);
  co_await task_test::finished(joiner);
}

TEST_CASE("task tree: a task_group's children sit under the task that opened it", "[task_tree]") {
  cl::run(group_children_nest_under_the_group());
}

// --- what each wait says ---

cl::task<void> acquire_and_release(cl::lock& guard) {
  co_await guard.acquire();
  guard.release();
}
cl::task<void> sleep_within_a_timeout() { co_await cl::timeout(forever, sleep_forever()); }
cl::task<void> wait_for_event(cl::event& flag) { co_await flag.wait(); }

cl::task<void> waits_in_words() {
  cl::queue<int> items;
  cl::lock guard;
  cl::event flag;
  co_await guard.acquire();
  auto getter = cl::create_task(get_one(items), "getter");
  auto locker = cl::create_task(acquire_and_release(guard), "locker");
  auto bounded = cl::create_task(sleep_within_a_timeout(), "bounded");
  auto flagged = cl::create_task(wait_for_event(flag), "flagged");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "getter");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("queue::get on queue "));
  CHECK_THAT(node->waiting_on, EndsWith("(0 items, 1 getter)"));
  node = find_task(roots, "locker");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("lock::acquire on lock "));
  CHECK_THAT(node->waiting_on, EndsWith("(held, 1 waiting)"));
  node = find_task(roots, "bounded");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("sleep until +"));
  CHECK_THAT(node->waiting_on, ContainsSubstring(", timeout in "));
  node = find_task(roots, "flagged");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("event::wait on event "));
  CHECK_THAT(node->waiting_on, EndsWith("(1 waiting)"));
  guard.release();
  flag.set();
  items.put_nowait(1);
  bounded.cancel();
  co_await task_test::finished(bounded);
  co_await getter;
  co_await locker;
  co_await flagged;
}

TEST_CASE("task tree: queue, lock, event and timeout waits say what they wait on", "[task_tree]") {
  cl::run(waits_in_words());
}

cl::task<void> a_job_on_a_thread(std::atomic<bool>& started, std::atomic<bool>& release) {
  auto job = [&started, &release] {
    started = true;
    while (!release) std::this_thread::sleep_for(1ms);
  };
  co_await cl::to_thread(job);
}

cl::task<void> executor_jobs_in_words() {
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  auto worker = cl::create_task(a_job_on_a_thread(started, release), "worker");
  for (int i = 0; i < 5000 && !started; ++i) co_await cl::sleep(1ms);
  REQUIRE(started);
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  release = true;
  const cl::task_tree_node* node = find_task(roots, "worker");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->waiting_on, StartsWith("to_thread job running for "));
  co_await worker;
}

TEST_CASE("task tree: a to_thread job says how long it has run", "[task_tree]") {
  cl::run(executor_jobs_in_words());
}

// --- printing ---

cl::task<void> prints_the_tree() {
  int line = 0;
  auto parent = cl::create_task(gathers_a_range(line), "parent");
  co_await let_tasks_settle();
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  cl::print_task_tree(file);
  std::string printed;
  std::fseek(file, 0, SEEK_SET);
  char buffer[4096];
  std::size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) printed.append(buffer, got);
  std::fclose(file);
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  const cl::task_tree_node* node = find_task(roots, "parent");
  REQUIRE(node != nullptr);
  const std::string text = node->to_string();
  // The same lines (a sleep's deadline, read twice, may round differently).
  CHECK_THAT(printed, ContainsSubstring(text.substr(0, text.find("|- "))));
  CHECK_THAT(text, StartsWith("Task 'parent' (suspended) created at "));
  CHECK_THAT(text, ContainsSubstring("\n|  waiting on: gather of 2 tasks (2 running)\n"));
  CHECK_THAT(text, ContainsSubstring("\n|- Task '"));
  CHECK_THAT(text, ContainsSubstring("\n`- Task '"));
  CHECK_THAT(text, ContainsSubstring(", awaited by gather in 'parent'\n"));
  CHECK_THAT(text, ContainsSubstring("\n|     waiting on: sleep until +"));
  CHECK_THAT(text, ContainsSubstring("\n      waiting on: sleep until +"));
  parent.cancel();
  co_await task_test::finished(parent);
}

TEST_CASE("task tree: print_task_tree prints each task, its wait below it, children indented", "[task_tree]") {
  cl::run(prints_the_tree());
}

TEST_CASE("task tree: capture_task_tree needs a running loop", "[task_tree]") {
  CHECK_THROWS_AS(cl::capture_task_tree(), cl::invalid_state_error);
}

cl::task<void> await_other(std::optional<cl::task_handle<void>>& other) { co_await *other; }

cl::task<void> tasks_awaiting_each_other() {
  std::optional<cl::task_handle<void>> first;
  std::optional<cl::task_handle<void>> second;
  first = cl::create_task(await_other(second), "first");
  second = cl::create_task(await_other(first), "second");
  co_await let_tasks_settle();
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree();
  // Neither is a root by the rule; the tree still shows both, once, and says why.
  const cl::task_tree_node* node = find_task(roots, "first");
  REQUIRE(node != nullptr);
  CHECK_THAT(node->awaited_by, EndsWith("(tasks awaiting each other in a cycle)"));
  REQUIRE(node->children.size() == 1);
  CHECK(node->children[0].name == "second");
  CHECK(node->children[0].children.empty());
  // Cancelling one ends both: the cancel goes round the cycle once, and the
  // wait it comes back to stops (it recursed without end before).
  first->cancel();
  co_await task_test::finished(*first);
  co_await task_test::finished(*second);
  CHECK(first->cancelled());
  CHECK(second->cancelled());
}

TEST_CASE("task tree: tasks awaiting each other (a deadlock) appear once, marked as a cycle; a cancel ends both", "[task_tree]") {
  cl::run(tasks_awaiting_each_other());
}

cl::task<void> leave_a_sleeper(std::optional<cl::task_handle<void>>& sleeper) {
  sleeper = cl::create_task(sleep_forever(), "left sleeping");
  co_await let_tasks_settle();
}

TEST_CASE("task tree: a loop's tree from its thread between runs", "[task_tree]") {
  cl::event_loop loop;
  std::optional<cl::task_handle<void>> sleeper;
  loop.run_until_complete(leave_a_sleeper(sleeper));
  const std::vector<cl::task_tree_node> roots = cl::capture_task_tree(loop);
  REQUIRE(roots.size() == 1);
  CHECK(roots[0].name == "left sleeping");
  CHECK_THAT(roots[0].waiting_on, StartsWith("sleep until +"));
  sleeper->cancel();
  loop.run_until_complete(task_test::finished(*sleeper));
}

// --- debug mode ---

// A task that takes its time to finish once cancelled: the shutdown waits for it.
cl::task<void> slow_to_finish() {
  try {
    co_await cl::sleep(forever);
  } catch (const cl::cancelled_error&) {
  }
  co_await cl::sleep(3500ms);
}

cl::task<void> leaves_a_slow_task() {
  cl::create_task(slow_to_finish(), "slow to finish");
  co_await let_tasks_settle();
}

TEST_CASE("task tree: in debug mode, a slow shutdown of run() prints the tasks it waits for", "[task_tree]") {
  test_support::stderr_capture captured;
  cl::run(leaves_a_slow_task(), {.debug = true});
  const std::string text = captured.text();
  CHECK_THAT(text, ContainsSubstring("coro_loop: run() is still waiting for its tasks to finish: 1 task on event loop"));
  CHECK_THAT(text, ContainsSubstring("Task 'slow to finish' (suspended, cancelling) created at "));
  CHECK_THAT(text, ContainsSubstring("waiting on: sleep until +"));
}

#if defined(CORO_LOOP_POSIX)
using test_support::current_handler;
using test_support::disposition_guard;

cl::task<void> dumps_on_sigquit(test_support::stderr_capture& captured, bool& printed) {
  auto sleeper = cl::create_task(sleep_forever(), "sleeper");
  co_await let_tasks_settle();
  // run() must have claimed SIGQUIT, or raising it would end the test binary.
  REQUIRE(current_handler(SIGQUIT) != SIG_DFL);
  ::raise(SIGQUIT);
  for (int i = 0; i < 2000 && !printed; ++i) {
    co_await cl::sleep(1ms);
    printed = captured.text_so_far().find("coro_loop: SIGQUIT") != std::string::npos;
  }
  sleeper.cancel();
}

cl::task<bool> sigquit_claimed() { co_return current_handler(SIGQUIT) != SIG_DFL; }

TEST_CASE("task tree: in debug mode, SIGQUIT prints the tree and the program goes on", "[task_tree][signals]") {
  disposition_guard default_sigquit{SIGQUIT, SIG_DFL};
  bool printed = false;
  test_support::stderr_capture captured;
  cl::run(dumps_on_sigquit(captured, printed), {.debug = true});
  const std::string text = captured.text();
  CHECK(printed);
  CHECK_THAT(text, ContainsSubstring("coro_loop: SIGQUIT: 2 tasks on event loop "));
  CHECK_THAT(text, ContainsSubstring("Task 'sleeper' (suspended) created at "));
  CHECK(current_handler(SIGQUIT) == SIG_DFL);  // given back when run() ended
}

TEST_CASE("task tree: outside debug mode, run() leaves SIGQUIT alone", "[task_tree][signals]") {
  const char* debug = std::getenv("CORO_LOOP_DEBUG");
  if (debug != nullptr && debug[0] != '\0' && debug[0] != '0') {
    WARN("CORO_LOOP_DEBUG turns debug mode on: not checked");
    return;
  }
  disposition_guard default_sigquit{SIGQUIT, SIG_DFL};
  CHECK_FALSE(cl::run(sigquit_claimed()));
}
#endif

}  // namespace
