#!/usr/bin/python3
"""bench/run.py - runs the benchmarks listed in bench/manifest.txt and prints one table.

Run by `make bench` (bench/bench.mk), which builds the programs first; by hand:

    /usr/bin/python3 bench/run.py [--only W1,W2] [--repeats 5] [--timeout 120]

Each workload's implementations run interleaved (coro_loop, peer, peer, ..., then
again), so a slow drift of the machine (another job, the CPU's clock) touches every
implementation alike. Every run is bounded by --timeout and killed with its whole
process group past it; Ctrl+C or SIGTERM stops the current run and the nginx this
runner started.

The manifest (whitespace separated, `#` starts a comment):

    run     <WORKLOAD> <impl> <needs> <command ...>
    metric  <WORKLOAD> <key> <lower|higher> <label for the table ...>
    repeats <WORKLOAD> <impl> <at most this many runs>      (optional)

`<needs>` is `-` or `nginx`. In the command, {bin} is the benchmark build directory,
{python} Debian's /usr/bin/python3, {root} the repository root, {port} the port of
the private nginx (bench/nginx.sh, pinned to CPU 0; needs=nginx commands then run
under `taskset -c 1`), {tls_port} its TLS port and {ca} the CA file that verifies it.
A program prints one stdout line `RESULT key=value ...`; a non-zero exit (its own check
failed), a missing RESULT line, a program that cannot start or a timeout counts as a
failed run.

Each `metric` line is one row of the table: coro_loop's median and min-max, the best
peer (lowest or highest median, as the line says) and the ratio coro_loop / best peer.
Medians are of the successful runs only. A failed run is never a figure: the row's last
column names each implementation of the workload with failed runs ("libuv 1/3 [2]"), the
note it points to gives the reasons, and an implementation without one successful run
shows "fail" in the table of every implementation (and is no candidate for best peer).

Exit status: 0 when every coro_loop run succeeded, whatever the peers did (a peer's
failure is the table's news, not the run's); 1 when a coro_loop run failed (its own
check, a timeout, a program that did not build, nginx not starting for its rows);
2 for a bad manifest or option; 130 when interrupted.
"""

import argparse
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

PYTHON = "/usr/bin/python3"
OUR_IMPL = "coro_loop"


def log(message):
    print(message, file=sys.stderr, flush=True)


class ManifestError(Exception):
    pass


class Run:
    def __init__(self, workload, impl, needs, command, line_number):
        self.workload = workload
        self.impl = impl
        self.needs = needs
        self.command = command
        self.line_number = line_number
        self.max_repeats = None
        self.results = []  # one dict of metrics per successful run
        self.failures = []  # one short reason per failed run


class Metric:
    def __init__(self, workload, key, better, label):
        self.workload = workload
        self.key = key
        self.better = better
        self.label = label


def read_manifest(path):
    runs, metrics, repeat_limits = [], [], []
    with open(path, encoding="utf-8") as manifest:
        for line_number, raw_line in enumerate(manifest, 1):
            line = raw_line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            kind = fields[0]
            where = f"{path}:{line_number}"
            if kind == "run":
                if len(fields) < 5:
                    raise ManifestError(f"{where}: run <WORKLOAD> <impl> <needs> <command ...>")
                if fields[3] not in ("-", "nginx"):
                    raise ManifestError(f"{where}: needs is '-' or 'nginx', not {fields[3]!r}")
                command = line.split(None, 4)[4]
                runs.append(Run(fields[1], fields[2], fields[3], command, line_number))
            elif kind == "metric":
                if len(fields) < 5 or fields[3] not in ("lower", "higher"):
                    raise ManifestError(f"{where}: metric <WORKLOAD> <key> <lower|higher> <label ...>")
                metrics.append(Metric(fields[1], fields[2], fields[3], " ".join(fields[4:])))
            elif kind == "repeats":
                if len(fields) != 4 or not fields[3].isdigit() or int(fields[3]) < 1:
                    raise ManifestError(f"{where}: repeats <WORKLOAD> <impl> <count >= 1>")
                repeat_limits.append((fields[1], fields[2], int(fields[3]), where))
            else:
                raise ManifestError(f"{where}: unknown line kind {kind!r} (run, metric, repeats)")
    for workload, impl, count, where in repeat_limits:
        matching = [run for run in runs if run.workload == workload and run.impl == impl]
        if not matching:
            raise ManifestError(f"{where}: no run line for {workload} {impl}")
        for run in matching:
            run.max_repeats = count
    return runs, metrics


RESULT_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)$")


def parse_result(stdout):
    """The key=value pairs of the single RESULT line, or None and the reason."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if len(lines) != 1:
        return None, f"{len(lines)} RESULT lines on stdout (want exactly 1)"
    values = {}
    for pair in lines[0].split()[1:]:
        match = RESULT_PAIR.match(pair)
        if not match:
            return None, f"not a key=number pair: {pair!r}"
        values[match.group(1)] = float(match.group(2))
    return values, None


class Runner:
    """Starts and stops processes so that nothing outlives the runner."""

    def __init__(self, args):
        self.args = args
        self.current = None
        self.nginx_dir = None

    def kill_current(self):
        process = self.current
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"run.py: process {process.pid} did not exit after SIGKILL")

    def run_once(self, run, ports):
        port, tls_port = ports if ports is not None else (None, None)
        substitutions = {"bin": self.args.bin, "python": PYTHON, "root": self.args.root,
                         "port": str(port) if port is not None else "{port}",
                         "tls_port": str(tls_port) if tls_port is not None else "{tls_port}",
                         "ca": os.path.join(self.nginx_dir, "tls", "ca.pem") if self.nginx_dir else "{ca}"}
        command_text = run.command
        for name, value in substitutions.items():
            command_text = command_text.replace("{" + name + "}", value)
        command = shlex.split(command_text)
        if run.needs == "nginx":
            command = ["taskset", "-c", "1"] + command
        started = time.monotonic()
        try:
            self.current = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            cwd=self.args.root, start_new_session=True, text=True)
        except OSError as error:
            return None, f"cannot start: {error}", 0.0
        try:
            stdout, stderr = self.current.communicate(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            self.kill_current()
            self.current.communicate()
            return None, f"killed after {self.args.timeout} s", time.monotonic() - started
        finally:
            elapsed = time.monotonic() - started
        status = self.current.returncode
        self.current = None
        if status != 0:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            return None, f"exit status {status}" + (f": {tail}" if tail else ""), elapsed
        values, problem = parse_result(stdout)
        if values is None:
            return None, problem, elapsed
        return values, None, elapsed

    def start_nginx(self):
        self.nginx_dir = os.path.join(self.args.bin, "nginx")
        os.makedirs(self.nginx_dir, exist_ok=True)
        script = os.path.join(self.args.root, "bench", "nginx.sh")
        result = subprocess.run([script, "start", self.nginx_dir], stdout=subprocess.PIPE,
                                text=True, timeout=60, check=False)
        ports = result.stdout.split()
        if result.returncode != 0 or len(ports) != 2 or not all(p.isdigit() for p in ports):
            self.nginx_dir = None
            raise RuntimeError(f"bench/nginx.sh start failed (status {result.returncode})")
        return int(ports[0]), int(ports[1])

    def stop_nginx(self):
        if self.nginx_dir is None:
            return
        script = os.path.join(self.args.root, "bench", "nginx.sh")
        try:
            subprocess.run([script, "stop", self.nginx_dir], timeout=60, check=False)
        except subprocess.TimeoutExpired:
            log("run.py: bench/nginx.sh stop did not finish in 60 s")
        self.nginx_dir = None


def format_number(value):
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def median_of(run, key):
    values = [result[key] for result in run.results if key in result]
    return (statistics.median(values), min(values), max(values), len(values)) if values else None


def runs_text(run, repeats):
    """"3", or "2 of 3" when fewer runs succeeded than were asked of this implementation."""
    wanted = min(repeats, run.max_repeats) if run.max_repeats else repeats
    succeeded = len(run.results)
    return str(succeeded) if succeeded >= wanted else f"{succeeded} of {wanted}"


def build_tables(runs, metrics, repeats):
    """The summary table (one row per metric), the table of every implementation, the notes."""
    # One numbered note per implementation with failed runs, in the order of the manifest.
    failure_note = {}
    notes = []
    for run in runs:
        if run.failures:
            failure_note[id(run)] = len(failure_note) + 1
            attempted = len(run.results) + len(run.failures)
            reasons = "; ".join(sorted(set(run.failures)))
            notes.append(f"[{failure_note[id(run)]}] {run.workload} {run.impl}: {len(run.failures)} of {attempted} "
                         f"runs failed: {reasons}")
    for run in runs:
        if run.max_repeats and run.max_repeats < repeats:
            notes.append(f"{run.workload} {run.impl}: at most {run.max_repeats} runs (slow).")

    summary = ["| Workload | Metric | coro_loop median | coro_loop min–max | best peer | peer median | "
               "ratio coro_loop/peer | failed runs |",
               "|---|---|---:|---:|---|---:|---:|---|"]
    detail = ["| Workload | Metric | Implementation | median | min–max | runs |", "|---|---|---|---:|---:|---:|"]
    for metric in metrics:
        workload_runs = [run for run in runs if run.workload == metric.workload]
        if not workload_runs:
            continue
        ours = next((run for run in workload_runs if run.impl == OUR_IMPL), None)
        our_figures = median_of(ours, metric.key) if ours else None
        best_peer, best_figures = None, None
        failed_cells = []
        for run in workload_runs:
            figures = median_of(run, metric.key)
            text = runs_text(run, repeats)
            if run.failures:
                marker = f"[{failure_note[id(run)]}]"
                text += f" ({len(run.failures)} failed {marker})"
                failed_cells.append(f"{run.impl} {len(run.failures)}/{len(run.failures) + len(run.results)} {marker}")
            detail.append(f"| {metric.workload} | {metric.label} | {run.impl} | "
                          f"{format_number(figures[0]) if figures else 'fail'} | "
                          f"{format_number(figures[1]) + '–' + format_number(figures[2]) if figures else '-'} | "
                          f"{text} |")
            if run.impl == OUR_IMPL or figures is None:
                continue
            better = (best_figures is None or
                      (figures[0] < best_figures[0] if metric.better == "lower" else figures[0] > best_figures[0]))
            if better:
                best_peer, best_figures = run, figures
        ratio = None
        if our_figures and best_figures and best_figures[0] != 0:
            ratio = our_figures[0] / best_figures[0]
        peer_name = best_peer.impl if best_peer else "-"
        if best_peer and best_peer.max_repeats and best_figures[3] < repeats:
            peer_name += f" ({best_figures[3]} runs)"
        summary.append(
            f"| {metric.workload} | {metric.label} ({metric.better} is better) | "
            f"{format_number(our_figures[0]) if our_figures else 'fail'} | "
            f"{format_number(our_figures[1]) + '–' + format_number(our_figures[2]) if our_figures else '-'} | "
            f"{peer_name} | {format_number(best_figures[0]) if best_figures else '-'} | "
            f"{f'{ratio:.2f}' if ratio is not None else '-'} | {', '.join(failed_cells) or '-'} |")
    return summary, detail, notes


def load_average():
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


def machine_description():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    def first_line(command):
        try:
            output = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, timeout=10, check=False).stdout
            return output.splitlines()[0] if output else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
            f"{first_line(['g++', '--version'])}; Python {first_line([PYTHON, '-c', 'import sys; print(sys.version.split()[0])'])}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="repository root [.]")
    parser.add_argument("--bin", default="build/bench", help="benchmark build directory [build/bench]")
    parser.add_argument("--manifest", default="bench/manifest.txt")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each implementation [5]")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per run [120]")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W2 [all]")
    parser.add_argument("--impl", default="", help="comma-separated implementations [all]")
    parser.add_argument("--results", default="", help="also write the tables here (markdown)")
    args = parser.parse_args()
    args.root = os.path.abspath(args.root)
    args.bin = os.path.abspath(args.bin)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    try:
        runs, metrics = read_manifest(args.manifest)
    except (OSError, ManifestError) as error:
        log(f"run.py: {error}")
        return 2
    workload_order = list(dict.fromkeys(run.workload for run in runs))
    if args.only:
        wanted = [name.strip().upper() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in (w.upper() for w in workload_order)]
        if unknown:
            log(f"run.py: unknown workloads {', '.join(unknown)} (known: {', '.join(workload_order)})")
            return 2
        runs = [run for run in runs if run.workload.upper() in wanted]
        metrics = [metric for metric in metrics if metric.workload.upper() in wanted]
        workload_order = [w for w in workload_order if w.upper() in wanted]
    if args.impl:
        wanted_impls = {name.strip() for name in args.impl.split(",") if name.strip()}
        runs = [run for run in runs if run.impl in wanted_impls]

    runner = Runner(args)

    def on_terminate(signal_number, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_terminate)

    started = time.monotonic()
    load_before = load_average()
    interrupted = False
    try:
        port = None
        if any(run.needs == "nginx" for run in runs):
            try:
                port = runner.start_nginx()
                log(f"run.py: nginx on 127.0.0.1:{port[0]} (TLS: {port[1]}), pinned to CPU 0; its clients on CPU 1")
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                log(f"run.py: {error}; the needs=nginx rows are skipped")
                for run in runs:
                    if run.needs == "nginx":
                        run.failures.append("nginx did not start")
                runs_to_do = [run for run in runs if run.needs != "nginx"]
            else:
                runs_to_do = runs
        else:
            runs_to_do = runs
        if port is None:
            runs_to_do = [run for run in runs if run.needs != "nginx"]
        for repeat in range(1, args.repeats + 1):
            for workload in workload_order:
                for run in runs_to_do:
                    if run.workload != workload:
                        continue
                    if run.max_repeats is not None and repeat > run.max_repeats:
                        continue
                    values, problem, elapsed = runner.run_once(run, port)
                    if values is None:
                        run.failures.append(problem)
                        log(f"[{repeat}/{args.repeats}] {workload} {run.impl}: FAILED ({problem})")
                    else:
                        run.results.append(values)
                        shown = " ".join(f"{key}={format_number(value)}" for key, value in values.items())
                        log(f"[{repeat}/{args.repeats}] {workload} {run.impl}: {shown} ({elapsed:.1f} s)")
    except KeyboardInterrupt:
        interrupted = True
        log("run.py: interrupted; stopping what was started")
    finally:
        runner.kill_current()
        runner.stop_nginx()

    summary, detail, notes = build_tables(runs, metrics, args.repeats)
    command = "make bench" + (f" BENCH_ONLY={args.only}" if args.only else "") + f" BENCH_REPEATS={args.repeats}"
    if args.impl:
        command += f" BENCH_ARGS='--impl {args.impl}'"
    text = [f"Machine: {machine_description()}.",
            f"Load average (1, 5, 15 min): {load_before} before, {load_average()} after; "
            f"{time.strftime('%Y-%m-%d')}.",
            f"Command: `{command}` ({time.monotonic() - started:.0f} s). "
            f"Median of {args.repeats} interleaved runs unless said otherwise; ratio = coro_loop / best peer.",
            "", *summary, "", "Every implementation:", "", *detail]
    if notes:
        text += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    output = "\n".join(text) + "\n"
    print(output)
    if args.results:
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        with open(args.results, "w", encoding="utf-8") as results:
            results.write(output)
        log(f"run.py: written to {args.results}")
    if interrupted:
        return 130
    # Only coro_loop's own failures fail the run: a peer that fails its check is
    # reported above (and in the notes), and the other rows stand.
    our_failures = [run for run in runs if run.impl == OUR_IMPL and run.failures]
    for run in our_failures:
        log(f"run.py: {run.workload} coro_loop failed {len(run.failures)} time(s)")
    peer_failures = [run for run in runs if run.impl != OUR_IMPL and run.failures]
    if peer_failures:
        log("run.py: peers with failed runs (see the notes): "
            + ", ".join(f"{run.workload} {run.impl}" for run in peer_failures))
    return 1 if our_failures else 0


if __name__ == "__main__":
    sys.exit(main())
