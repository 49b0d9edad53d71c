#!/usr/bin/env python3
"""Timing and reporting for bench/*.sh (see bench/lib.sh).

  bench.py time  [--runs N] [--warmup N] [--prepare SHELL-CMD] CMD...
      Runs the commands in alternating order (A B C, A B C, ...) so that load from other
      processes hits each alike, each without a shell (shlex-split, stdout/stderr to /dev/null);
      PREPARE runs through sh before every run, untimed. Prints one line per command:
      "median-wall-ms median-cpu-ms min-wall-ms" (cpu = user + system of the process and its
      threads, from wait4).
  bench.py ready [--runs N] [--warmup N] SOCKET CMD...
      Start-up time of daemons: spawns CMD, waits until SOCKET accepts a connection and sends the
      NBD greeting (the server is up and serving), then ends the daemon with SIGTERM. Same
      alternation and output as "time".
  bench.py fio FIO-JSON...
      Prints the median over the files of the read+write IOPS and of the bandwidth in MiB/s.
  bench.py evict FILE...
      Writes the files' dirty pages back and drops their pages from the page cache
      (fsync, posix_fadvise DONTNEED), so that the next writes into them start from fresh pages.
  bench.py qmp-fill SOCKET COUNT IMAGE-DIR
      Adds COUNT raw nodes (IMAGE-DIR/i.raw) and writable NBD exports over QMP.
  bench.py table ROWS-FILE
      Prints the table of rows written by bench_row (lib.sh).
"""
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time


def parse_options(args, defaults):
    options = dict(defaults)
    while args and args[0].startswith("--"):
        name = args.pop(0)[2:]
        if name not in options:
            sys.exit(f"bench.py: unknown option --{name}")
        options[name] = args.pop(0)
    return options, args


def spawn(command):
    argv = shlex.split(command)
    path = shutil.which(argv[0])
    if path is None:
        sys.exit(f"bench.py: {argv[0]}: not found")
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    return os.posix_spawn(path, argv, os.environ, file_actions=devnull)


def timed_run(command):
    start = time.perf_counter_ns()
    pid = spawn(command)
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter_ns() - start) / 1e6
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, status


def wait_ready(path, pid, deadline_s=30.0):
    """Polls until the NBD server on the unix socket PATH sends its greeting."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] != 0:
            sys.exit(f"bench.py: the daemon exited before {path} was ready")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                greeting = b""
                while len(greeting) < 8:
                    chunk = s.recv(8 - len(greeting))
                    if not chunk:
                        break
                    greeting += chunk
                if greeting == b"NBDMAGIC":
                    return
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        time.sleep(0.0002)
    sys.exit(f"bench.py: {path} not ready after {deadline_s} s")


def ready_run(path, command):
    if os.path.exists(path):
        os.unlink(path)
    start = time.perf_counter_ns()
    pid = spawn(command)
    wait_ready(path, pid)
    wall = (time.perf_counter_ns() - start) / 1e6
    os.kill(pid, signal.SIGTERM)
    _, status, usage = os.wait4(pid, 0)
    return wall, (usage.ru_utime + usage.ru_stime) * 1000, status


def alternate(commands, runs, warmup, prepare, run_one):
    walls = [[] for _ in commands]
    cpus = [[] for _ in commands]
    for round_ in range(warmup + runs):
        for i, command in enumerate(commands):
            if prepare:
                subprocess.run(["sh", "-c", prepare], check=True)
            wall, cpu, _ = run_one(command)
            if round_ >= warmup:
                walls[i].append(wall)
                cpus[i].append(cpu)
    for wall, cpu in zip(walls, cpus):
        print(f"{statistics.median(wall):.3f} {statistics.median(cpu):.3f} {min(wall):.3f}")


def cmd_time(args):
    options, commands = parse_options(args, {"runs": "20", "warmup": "2", "prepare": ""})
    alternate(commands, int(options["runs"]), int(options["warmup"]), options["prepare"], timed_run)


def cmd_ready(args):
    options, rest = parse_options(args, {"runs": "20", "warmup": "2"})
    path, commands = rest[0], rest[1:]
    alternate(commands, int(options["runs"]), int(options["warmup"]), "", lambda c: ready_run(path, c))


def cmd_fio(args):
    iops, mibs = [], []
    for name in args:
        with open(name) as f:
            text = f.read()
        job = json.loads(text[text.index("{"):])["jobs"][0]
        iops.append(job["read"]["iops"] + job["write"]["iops"])
        mibs.append((job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / (1 << 20))
    print(f"{statistics.median(iops):.0f} {statistics.median(mibs):.1f}")


def cmd_evict(args):
    for name in args:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cmd_qmp_fill(args):
    path, count, images = args[0], int(args[1]), args[2]
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("rwb", buffering=0)
    f.readline()

    def run(command):
        f.write(json.dumps(command).encode() + b"\n")
        while True:
            line = f.readline().decode()
            if '"event"' in line:
                continue
            if '"error"' in line:
                sys.exit("QMP error: " + line)
            return

    run({"execute": "qmp_capabilities"})
    for i in range(count):
        run({"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": f"n{i}",
             "file": {"driver": "file", "filename": f"{images}/{i}.raw"}}})
        run({"execute": "block-export-add", "arguments": {"type": "nbd", "id": f"e{i}", "node-name": f"n{i}", "writable": True}})


def cmd_table(args):
    rows = []
    with open(args[0]) as f:
        for line in f:
            rows.append(line.rstrip("\n").split("\t"))
    headers = ["row", "vdisk", "peer", "ratio", "floor", "vdisk/floor"]
    table = [headers]
    for label, vdisk, peer, unit, floor, inverse, peer_name in rows:
        v, p = float(vdisk), float(peer) if peer else None
        cells = [label, f"{fmt(v)} {unit}", f"{fmt(p)} {unit} ({peer_name})" if p is not None else "-"]
        if p:
            cells.append(f"{(p / v if inverse == '1' else v / p):.2f}")
        else:
            cells.append("-")
        if floor:
            fl = float(floor)
            cells += [f"{fmt(fl)} {unit}", f"{(fl / v if inverse == '1' else v / fl):.2f}"]
        else:
            cells += ["", ""]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for n, r in enumerate(table):
        print("  ".join(c.ljust(w) if i == 0 or i == 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


if __name__ == "__main__":
    verb, rest = sys.argv[1], sys.argv[2:]
    {"time": cmd_time, "ready": cmd_ready, "fio": cmd_fio, "evict": cmd_evict, "qmp-fill": cmd_qmp_fill, "table": cmd_table}[verb](rest)
