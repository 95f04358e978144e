"""Benchmark krepair against a plain copy and the Python route, in one run.

    python3 scripts/bench.py --krepair default=target/release/krepair \
        [--krepair static=target/static/dist/krepair] --work target/bench \
        [--keras-python .venvs/keras-3.5/bin/python] [--header] INPUT.keras [INPUT.keras ...]

For each input: the median wall time and peak memory (max RSS, from GNU
time) of `cp`, `cp` followed by `sync` of the copy (krepair syncs its
output before renaming it into place), `krepair IN OUT`, `krepair --dry-run IN`, and, when a Keras
venv is given, the Python route (scripts/python_route.py). Caches are warm
(every command reads the same file from the page cache). Prints a Markdown
table (one row per input and build) and the ratios; medians of --runs
(7) runs, process start included, the floor and every build's commands
interleaved run by run.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(cmd, out=None, runs=5):
    times, mems = [], []
    for _ in range(runs):
        remove(out)
        p = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        last = p.stderr.strip().splitlines()[-1]
        if p.returncode not in (0, 3):
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        e, m = last.split()
        times.append(float(e))
        mems.append(int(m) / 1024)
    return statistics.median(times), max(mems)


def remove(out):
    if out and os.path.isdir(out):
        shutil.rmtree(out)
    elif out and os.path.exists(out):
        os.remove(out)


def timed_together(cmds, runs, pause):
    """Median wall time of each (cmd, out) in `cmds`, the commands taken in
    turn, round after round: the VM's speed drifts by tens of percent from
    one minute to the next, and a drift then weighs on every command alike
    instead of on whichever ran during it. After each command its output
    is removed (a `cp`'s copy before it is ever written), the rest synced,
    and the disk left `pause` seconds to settle: this VM's disk is mounted
    with `discard` and is slow for a while after a gigabyte is written or
    freed (a `cp` of 1 GiB right after the removal of a synced krepair
    output took 0.40 s against 0.27 s; a second 1 GiB repair right after
    a first, twice as long). GNU time reports only 10 ms, so the time is
    taken here (process start included)."""
    import time
    ts = [[] for _ in cmds]
    for _ in range(runs):
        for i, (cmd, out) in enumerate(cmds):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            ts[i].append(time.perf_counter() - t)
            remove(out)
            subprocess.run(["sync"], check=True)
            time.sleep(pause)
    return [statistics.median(t) for t in ts]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--krepair", required=True, action="append",
                   help="LABEL=PATH of a krepair binary (repeat: one row per build and input)")
    p.add_argument("--work", required=True)
    p.add_argument("--keras-python")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--python-runs", type=int, default=3)
    p.add_argument("--header", action="store_true", help="print the table's header")
    p.add_argument("--migrate", action="store_true",
                   help="time `krepair migrate` (tf.keras 2.x inputs; there is no Python route)")
    p.add_argument("inputs", nargs="+")
    a = p.parse_args()
    builds = [k.split("=", 1) if "=" in k else (os.path.basename(k), k) for k in a.krepair]
    os.makedirs(a.work, exist_ok=True)
    if a.header:
        print("| input | build | size MiB | cp s | cp+sync s | krepair s | dry run s | Python route s | krepair / cp | krepair / cp+sync | Python / krepair | dry run / repair | peak MiB cp / krepair / dry run / Python |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for inp in a.inputs:
        size = os.path.getsize(inp) / 2**20
        out = os.path.join(a.work, "out.keras")
        runs = a.runs
        # The floor and every build's repair and dry run, interleaved. The
        # durable floor: krepair syncs its output before the rename.
        outs = [os.path.join(a.work, f"out-{i}.keras") for i in range(2 + len(builds))]
        for o in outs:
            remove(o)
        cmds = [(["cp", inp, outs[0]], outs[0]),
                (["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", inp, outs[1]], outs[1])]
        for j, (label, binary) in enumerate(builds):
            kr = [binary, "migrate"] if a.migrate else [binary]
            o = outs[2 + j]
            cmds += [(kr + ["-q", inp, o], o), (kr + ["-q", "--dry-run", inp], None)]
        # A second to settle after a GiB written, at least a tenth.
        t = timed_together(cmds, runs, max(0.1, size / 1024))
        cp_t, sync_t = t[0], t[1]
        _, cp_m = measure(["cp", inp, out], out, 1)
        py = None
        if a.keras_python:
            py = measure([a.keras_python, os.path.join(HERE, "python_route.py"), inp, out],
                         out, a.python_runs)
        name = os.path.basename(os.path.dirname(inp)) + "/" + os.path.basename(inp)
        name = f"migrate {name}" if a.migrate else name
        for j, (label, binary) in enumerate(builds):
            kr = [binary, "migrate"] if a.migrate else [binary]
            kr_t, dr_t = t[2 + 2 * j], t[3 + 2 * j]
            _, kr_m = measure(kr + ["-q", inp, out], out, 1)
            _, dr_m = measure(kr + ["-q", "--dry-run", inp], None, 1)
            py_t = f"{py[0]:.2f}" if py else "-"
            py_ratio = f"{py[0] / kr_t:.0f}x" if py else "-"
            py_m = f"{py[1]:.0f}" if py else "-"
            print(f"| {name} | {label} | {size:.1f} | {cp_t:.4f} | {sync_t:.4f} | {kr_t:.4f} | {dr_t:.4f} | {py_t} | {kr_t / cp_t:.2f}x | {kr_t / sync_t:.2f}x | {py_ratio} | {dr_t / kr_t:.1%} | {cp_m:.0f} / {kr_m:.0f} / {dr_m:.0f} / {py_m} |", flush=True)


if __name__ == "__main__":
    main()
