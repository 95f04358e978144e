"""The real-Keras check of issue #33: archives written by one Keras 3,
repaired by krepair, loaded in another.

    .venvs/keras-3.0/bin/python scripts/check_cross.py --krepair target/release/krepair \
        --work target/cross-check/3.0 --matrix target/cross-check/matrix-3.0.json \
        target/zoo/zoo-keras3.15 ...

Each fixture folder is a zoo written by a Keras 3 (testdata/zoo.py in its
venv: model.keras, x.npy, pred_memory.npy). For each case, in the Keras of
the venv this runs in:
- before (unless --after-only): a plain `load_model` of the archive as
  written, and its predictions against the writer's in-memory model
  (recorded for the matrix, not checked: this is what users get without
  krepair);
- `krepair IN OUT` must succeed and report `load-in`;
- the output must load and predict what the writer's model predicted
  (float32: rtol 1e-4, atol 1e-5; mixed precision 1e-2), unless the report
  names this Keras in a `not-loadable-in` finding, which must then be
  true (the output does not load, or predicts otherwise);
- a case the writer's own Keras cannot reload (a bug of that Keras, seen
  in the matrix's diagonal) is recorded, not checked;
- repairing the output again must change nothing.
Prints one line per check and a closing "N passed, N failed" line.
"""

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "testdata"))
import fixture_layers  # noqa: E402,F401

from check_keras import check, load_x, model_input, results  # noqa: E402


def predict(path, x, case):
    """("ok" | "differs" | "refused", detail)."""
    try:
        model = keras.models.load_model(path)
        got = np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")
    except Exception as e:  # noqa: BLE001 - a refusal is a result here
        inner = str(e).rsplit("Exception encountered:", 1)[-1].strip()
        return "refused", f"{type(e).__name__}: {inner[:200]}"
    finally:
        keras.backend.clear_session()
    return got, ""


def compare(got, want, case):
    if isinstance(got, str):
        return got
    tol = 1e-2 if "mixed" in case else None
    rtol, atol = (tol, tol) if tol else (1e-4, 1e-5)
    ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol)
    return "ok" if ok else "differs"


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_case(krepair, case_dir, work, writer, matrix, before_too):
    case = os.path.basename(case_dir.rstrip("/"))
    expected = json.load(open(os.path.join(case_dir, "expected.json")))
    if expected.get("refused") or not os.path.exists(os.path.join(case_dir, "pred_memory.npy")):
        return
    version = keras.__version__
    label = f"keras {version} {writer}/{case}"
    src = os.path.join(case_dir, "model.keras")
    x = load_x(case_dir)
    want = np.load(os.path.join(case_dir, "pred_memory.npy"))
    row = matrix.setdefault(writer, {"cases": 0, "before": {}, "after": {}, "named": 0, "writer_bug": []})
    row["cases"] += 1
    before = None
    if before_too:
        got, detail = predict(src, x, case)
        before = compare(got, want, case)
        row["before"][before] = row["before"].get(before, 0) + 1

    out = os.path.join(work, f"{writer}-{case}.keras")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.run([krepair, "--report", "-", "-q", src, out], capture_output=True, text=True)
    if not check(f"{label}: krepair repairs it", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    report = json.loads(p.stdout)
    codes = {f["code"]: f["message"] for f in report["findings"]}
    check(f"{label}: the report says which Keras the output was made for", "load-in" in codes,
          ", ".join(codes))
    named = [f["message"] for f in report["findings"]
             if f["code"] == "not-loadable-in" and f["message"].startswith(f"Keras {version} ")]
    got, detail = predict(out, x, case)
    after = compare(got, want, case)
    row["after"][after] = row["after"].get(after, 0) + 1
    if detail == "" and after == "differs":
        detail = f"max |diff| {np.abs(got - want).max():.3g}" if got.shape == want.shape else f"shape {got.shape}"
    if named:
        row["named"] += 1
        check(f"{label}: the report names this Keras, and it indeed cannot load the output as it should",
              after != "ok", named[0][:300])
    elif writer.endswith(version_tag(version)) and before not in (None, "ok") and after != "ok":
        row["writer_bug"].append(case)
        print(f"NOTE  {label}: the writer's own Keras cannot reload it either ({detail[:200]})")
    else:
        check(f"{label}: the repaired archive loads and predicts what the writer's model did",
              after == "ok", detail[:300])
    again = out + ".again.keras"
    if os.path.exists(again):
        os.remove(again)
    p = subprocess.run([krepair, "-q", out, again], capture_output=True, text=True)
    check(f"{label}: repairing the output again changes nothing",
          p.returncode == 0 and sha(again) == sha(out), p.stderr.strip()[-300:])
    os.remove(again)


def version_tag(version):
    """`keras3.15` for 3.15.1 (the zoo folders' names)."""
    major, minor = version.split(".")[:2]
    return f"keras{major}.{minor}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--krepair", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--matrix", required=True, help="JSON file for docs/version-matrix.md")
    ap.add_argument("--after-only", action="store_true",
                    help="do not load the archives as written (the matrix's before column stays empty)")
    ap.add_argument("--cases", help="comma-separated case names: only these (default: every case)")
    ap.add_argument("zoos", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    only = set(a.cases.split(",")) if a.cases else None
    matrix = {}
    for zoo in a.zoos:
        writer = os.path.basename(zoo.rstrip("/"))
        for case_dir in sorted(glob.glob(os.path.join(zoo, "*/"))):
            if only and os.path.basename(case_dir.rstrip("/")) not in only:
                continue
            run_case(a.krepair, case_dir, a.work, writer, matrix, not a.after_only)
    with open(a.matrix, "w") as f:
        json.dump({"loader": keras.__version__, "writers": matrix}, f, indent=1, sort_keys=True)
    print(f"keras-{keras.__version__}: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
