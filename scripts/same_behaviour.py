#!/usr/bin/env python3
"""Run two krepair binaries over the same inputs and compare everything
they do: stdout, stderr, exit status, the bytes of every file they write
(outputs and reports). For refactors that must not change behaviour
(issue #29): `scripts/same_behaviour.py OLD_BINARY NEW_BINARY`.

Inputs: every committed archive under testdata/ (zip files and unzipped
directories), and hostile ones derived from them here with a fixed seed
(truncations, flipped bytes, junk, an empty file, a bare HDF5 file, a
directory without config.json). Each binary runs in a folder of its own
holding the same relative paths, so every path it prints is the same text.

Prints one line per difference and a closing `N passed, N failed`; exits 1
if anything differs.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def committed_inputs():
    """Every archive under testdata/: (relative name, path)."""
    found = []
    for p in sorted((ROOT / "testdata").rglob("*.keras")):
        found.append(p)
    for p in sorted((ROOT / "testdata").rglob("config.json")):
        if p.parent.suffix != ".keras" and (p.parent / "model.weights.h5").exists():
            found.append(p.parent)
    return found


def derive_hostile(src_files, dest, seed=29):
    """Hostile variants of a few committed archives, written into dest."""
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    out = []

    def put(name, data):
        p = dest / name
        p.write_bytes(data)
        out.append(p)

    put("empty.keras", b"")
    put("junk.keras", bytes(rng.randrange(256) for _ in range(4096)))
    put("hdf5.keras", b"\x89HDF\r\n\x1a\n" + bytes(504))
    nodir = dest / "no_config.keras"
    nodir.mkdir(exist_ok=True)
    (nodir / "metadata.json").write_text('{"keras_version": "3.6.0"}')
    out.append(nodir)
    for i, src in enumerate(src_files):
        data = src.read_bytes()
        for cut in (22, len(data) // 3, len(data) // 2, len(data) - 23, len(data) - 1):
            put(f"cut{i}_{cut}.keras", data[:cut])
        for j in range(12):
            b = bytearray(data)
            for _ in range(rng.choice((1, 4, 16))):
                k = rng.randrange(len(b))
                b[k] = rng.randrange(256)
            put(f"flip{i}_{j}.keras", bytes(b))
        # Members edited inside a valid zip: config.json cut short, the
        # weights replaced by junk, a member named ../escape.
        with zipfile.ZipFile(src) as z:
            members = {n: z.read(n) for n in z.namelist()}
        for what in ("config", "weights", "escape", "nometa"):
            p = dest / f"{what}{i}.keras"
            with zipfile.ZipFile(p, "w") as z:
                for n, d in members.items():
                    if what == "config" and n == "config.json":
                        d = d[: len(d) // 2]
                    if what == "weights" and n == "model.weights.h5":
                        d = d[:64] + bytes(len(d) - 64)
                    if what == "nometa" and n == "metadata.json":
                        continue
                    z.writestr(n, d)
                if what == "escape":
                    z.writestr("../escape.txt", b"x")
            out.append(p)
    return out


def commands(rel, is_dir):
    """The command lines run on one input (paths relative to the work folder)."""
    out_name = "out/" + rel.replace("/", "_") + ("" if is_dir else ".keras")
    mig_name = "mig/" + rel.replace("/", "_") + ("" if is_dir else ".keras")
    rep = "rep/" + rel.replace("/", "_")
    return [
        ["in/" + rel, out_name, "--report", rep + ".repair.json"],
        ["--dry-run", "in/" + rel, "--report", "-"],
        ["migrate", "in/" + rel, mig_name, "--report", rep + ".migrate.json"],
        ["migrate", "--dry-run", "in/" + rel],
        ["inspect", "in/" + rel],
        ["inspect", "--json", "in/" + rel],
        ["diff", "in/" + rel, out_name],
        ["diff", "--json", "in/" + rel, mig_name],
    ]


def run_all(binary, inputs, work):
    """Run every command with `binary` in `work`; return {key: result}."""
    results = {}
    for d in ("out", "mig", "rep", "batch"):
        (work / d).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("KREPAIR_TIMINGS", None)
    env["NO_COLOR"] = "1"

    def go(key, argv):
        p = subprocess.run(
            [binary] + argv + ["--timeout", "5"], cwd=work, env=env, capture_output=True, timeout=300,
            stdin=subprocess.DEVNULL,
        )
        results[key] = (p.returncode, p.stdout, p.stderr)

    for rel, is_dir in inputs:
        for n, argv in enumerate(commands(rel, is_dir)):
            go(f"{rel} #{n} {' '.join(argv)}", argv)
    # Each command gets --timeout 5: one committed fuzz regression hangs
    # HDF5, and the worker's limit ends it the same way in both.
    go("batch out", ["batch", "in", "--out", "batch/out", "--report", "batch/run.json", "--jobs", "1"])
    go("batch md", ["batch", "in", "--dry-run", "--report", "batch/run.md", "--report-format", "md", "--jobs", "1"])
    go("batch migrate", ["batch", "in", "--migrate", "--out", "batch/mig", "--report", "-", "--jobs", "1"])
    go("batch jsonl", ["batch", "in", "--dry-run", "--report", "batch/run.jsonl", "--report-format", "jsonl", "--jobs", "1"])
    return results


def tree_bytes(root):
    """{relative path: bytes} of every file below root (outputs, reports)."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not str(p.relative_to(root)).startswith("in/"):
            found[str(p.relative_to(root))] = p.read_bytes()
    return found


def scrub(b):
    """Wall-clock values a report may carry (the batch report's timings)."""
    import re
    b = re.sub(rb'"(elapsed|duration|seconds|wall)[a-z_]*": [0-9.e+-]+', rb'"\1": 0', b)
    b = re.sub(rb'"mtime_ns": ?[0-9]+', b'"mtime_ns": 0', b)
    b = re.sub(rb"\b[0-9]+\.[0-9]+ ?s\b", b"T s", b)
    b = re.sub(rb"\b[0-9]+ ?ms\b", b"T ms", b)
    return b


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--keep", help="keep the work folders here")
    a = ap.parse_args()
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="same-behaviour-"))
    if base.exists():
        shutil.rmtree(base)
    staging = base / "inputs"
    committed = committed_inputs()
    zips = [p for p in committed if p.is_file()]
    hostile = derive_hostile(zips[:: max(1, len(zips) // 6)][:6], staging / "hostile")
    inputs = []
    for p in committed + hostile:
        rel = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else "hostile/" + p.name
        inputs.append((rel, p))
    passed = failed = 0
    results = {}
    trees = {}
    for side, binary in (("old", a.old), ("new", a.new)):
        work = base / side
        for rel, p in inputs:
            dst = work / "in" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir():
                shutil.copytree(p, dst)
            else:
                shutil.copyfile(p, dst)
        results[side] = run_all(str(Path(binary).resolve()), [(r, p.is_dir()) for r, p in inputs], work)
        trees[side] = tree_bytes(work)
    for key in results["old"]:
        o, n = results["old"][key], results["new"].get(key)
        if n is None or o[0] != n[0] or scrub(o[1]) != scrub(n[1]) or scrub(o[2]) != scrub(n[2]):
            failed += 1
            print(f"DIFF {key}")
            if n is not None:
                for what, x, y in (("exit", o[0], n[0]), ("stdout", o[1], n[1]), ("stderr", o[2], n[2])):
                    if (x if what == "exit" else scrub(x)) != (y if what == "exit" else scrub(y)):
                        print(f"  {what}: old {x!r:.400}\n  {what}: new {y!r:.400}")
        else:
            passed += 1
    for path in sorted(set(trees["old"]) | set(trees["new"])):
        o, n = trees["old"].get(path), trees["new"].get(path)
        if o is None or n is None or scrub(o) != scrub(n):
            failed += 1
            print(f"DIFF file {path}: {'missing in old' if o is None else 'missing in new' if n is None else 'bytes differ'}")
        else:
            passed += 1
    print(f"{len(inputs)} inputs ({len(hostile)} hostile), {len(results['old'])} commands, {len(trees['old'])} files written")
    print(f"{passed} passed, {failed} failed")
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
