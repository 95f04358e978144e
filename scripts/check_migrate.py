"""The real-Keras check of `krepair migrate`: migrate every tf.keras 2.15
fixture with the built krepair binary and load each output in the Keras 3
of the venv this script runs in.

    .venvs/keras-3.0/bin/python scripts/check_migrate.py --krepair target/release/krepair \
        --work target/migrate-check testdata/fixtures/keras-tf2.15

For each fixture case (a folder with expected.json, x.npy and the tf.keras
in-memory predictions pred_memory.npy):
- the harness must be able to fail: this Keras must refuse the unmigrated
  archive;
- `krepair migrate` must succeed, report its rewrites, and leave no layer
  depending on finalize_state() (or say why, for layers kept in their
  variables);
- a plain `keras.models.load_model(path)` (compile and safe_mode on) must
  load the output and predict what tf.keras predicted (float32: rtol 1e-4,
  atol 1e-5; mixed precision: 1e-2), also with
  Normalization.finalize_state() disabled for the layers embedded in their
  config;
- a compiled model must come back compiled: the same optimizer class,
  hyperparameters and variables (iterations, learning rate, slots), the
  same loss, and one more training step must predict what the same step
  predicted in tf.keras;
- migrating the output again must change nothing (an exact copy).
Prints one line per check and a closing "N passed, N failed" line.
"""

import argparse
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

# One counter and one finalize_state() switch for both real-Keras checks.
from check_keras import check, config_boundaries, f32, finalize_disabled, load_x, model_input, results  # noqa: E402


def load_predict(path, x):
    if getattr(x, "dtype", None) is not None and x.dtype.kind == "U":
        # Keras 3 takes strings only as TensorFlow tensors (a NumPy str or
        # object array has no Keras dtype): the TensorFlow backend only.
        import tensorflow as tf

        x = tf.constant(x)
    model = keras.models.load_model(path)
    return np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")


# The legacy HDF5 cases whose unmigrated file is given to this Keras's own
# load_model: one it loads, and classes its legacy loader fails on in
# real users' files (time_major, groups, separable convolutions,
# MultiHeadAttention: issue #31).
H5_PROBE = {"Dense", "LSTM", "Conv2DTranspose", "SeparableConv2D", "MultiHeadAttention"}


def loads_in_child(path, timeout=120):
    """Does a plain load_model of `path` succeed, in a child process of
    this Python given at most `timeout` seconds (a hang is a refusal)?"""
    code = "import sys, keras; keras.models.load_model(sys.argv[1])"
    try:
        p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# Behaviour of a pinned pre-release that differs from every release and
# that no config can change: the check asserts the difference is still
# there (so that its end is noticed), instead of the equality.
MASK_DROPPED = ("keras-nightly's Bidirectional drops the mask an Embedding(mask_zero=True) attaches "
                "(\"does not support masking and will therefore destroy the mask information\")")
KNOWN_REGRESSIONS = {
    ("3.16.0.dev2026102704", "model_embedding_lstm"): MASK_DROPPED,
    ("3.16.0.dev2026102704", "text"): MASK_DROPPED,
}


def has_tensorflow():
    try:
        import tensorflow  # noqa: F401
        return True
    except ImportError:
        return False


def run_refused(krepair, src, work, label, expected):
    """A case krepair must refuse: exit 2 (refused), the reason said, no
    output written."""
    out = os.path.join(work, label.replace("/", "-").replace(" ", "-") + ".keras")
    p = subprocess.run([krepair, "migrate", src, out], capture_output=True, text=True)
    check(
        f"{label}: refused, saying {expected['refused']!r}",
        p.returncode == 1 and expected["refused"] in p.stderr and not os.path.exists(out),
        f"exit {p.returncode}: {p.stderr.strip()[:300]}",
    )


# What this Keras does with the unmigrated archives.
# Legacy HDF5 files are counted apart: Keras 3 has a legacy loader that
# loads many of them, so there the harness must see at least one refused.
unmigrated = {"refused": 0, "loaded": []}
unmigrated_h5 = {"refused": 0, "loaded": []}


def run_case(krepair, case_dir, work, tag):
    case = os.path.basename(case_dir)
    label = f"keras {keras.__version__} {tag}/{case}"
    expected = json.load(open(os.path.join(case_dir, "expected.json")))
    src = os.path.join(case_dir, expected.get("archive", "model.keras"))
    if expected.get("refused"):
        run_refused(krepair, src, work, label, expected)
        return
    x = load_x(case_dir)
    want = np.load(os.path.join(case_dir, "pred_memory.npy"))
    tol = 1e-2 if "mixed" in case else None

    # The harness must be able to fail: most unmigrated archives are
    # refused (counted, and required of the whole run in main()); one that
    # loads must then be migrated to the same predictions all the same.
    if expected.get("form") == "hdf5":
        # Keras 3's legacy HDF5 loader can loop forever (3.0.5 on a nested
        # model's node indices): it is tried in a child process, bounded,
        # on the few cases of H5_PROBE (a child is seconds of imports).
        if case not in H5_PROBE or expected["keras_version"].startswith("3."):
            pass  # Keras 3 loads the HDF5 files it wrote
        elif loads_in_child(src):
            unmigrated_h5["loaded"].append(f"{tag}/{case}")
        else:
            unmigrated_h5["refused"] += 1
    else:
        try:
            load_predict(src, x)
            unmigrated["loaded"].append(f"{tag}/{case}")
        except Exception:  # noqa: BLE001 - a refusal is what we want
            unmigrated["refused"] += 1

    out = os.path.join(work, f"{tag}-{case}.keras")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.run(
        [krepair, "migrate", "--report", "-", src, out],
        capture_output=True,
        text=True,
    )
    if not check(f"{label}: krepair migrate", p.returncode == 0, p.stderr.strip()):
        return
    report = json.loads(p.stdout)
    codes = sorted({r["code"] for r in report.get("migration", [])})
    check(f"{label}: rewrites reported", bool(codes), ", ".join(codes))
    in_config = all(
        l["status"] in ("repaired", "already-explicit") and (l.get("embedded") or {}).get("location", "config") == "config"
        for l in report["layers"]
    )

    if expected.get("needs_tensorflow") and not has_tensorflow():
        try:
            keras.models.load_model(out)
            check(f"{label}: without tensorflow installed Keras 3 says it needs it", False, "it loaded")
        except Exception as e:  # noqa: BLE001
            check(f"{label}: without tensorflow installed Keras 3 says it needs it",
                  "requires TensorFlow" in str(e), str(e)[-200:])
        return
    regression = KNOWN_REGRESSIONS.get((keras.__version__, case))
    try:
        got = load_predict(out, x)
        rtol, atol = (tol, tol) if tol else (1e-4, 1e-5)
        ok = got.shape == want.shape and np.allclose(got, want, rtol=rtol, atol=atol)
        detail = f"max |diff| {np.abs(got - want).max():.3g}" if got.shape == want.shape else f"shape {got.shape}"
        if regression:
            check(f"{label}: still differs from tf.keras, a known regression: {regression}", not ok, detail)
            return
        check(f"{label}: load_model + predict equals tf.keras", ok, detail)
    except Exception as e:  # noqa: BLE001
        check(f"{label}: load_model + predict equals tf.keras", False, f"{type(e).__name__}: {str(e)[:300]}")
        return
    if in_config:
        with finalize_disabled():
            got2 = load_predict(out, x)
        check(f"{label}: same without finalize_state()", np.array_equal(got, got2))
    else:
        kept = [l["config_path"] for l in report["layers"] if (l.get("embedded") or {}).get("location") == "variables"]
        check(
            f"{label}: layers kept in their variables are reported",
            bool(kept) and all(
                any(f["code"] == "kept-in-variables" for f in l["findings"])
                for l in report["layers"]
                if l["config_path"] in kept
            ),
            ", ".join(kept),
        )

    discs = expected.get("discretizations") or []
    if discs:
        by_disc = {l["config_path"]: l for l in report.get("discretizations", [])}
        reported = all(
            by_disc.get(d["config_path"], {}).get("status") == "repaired"
            and f32(by_disc[d["config_path"]]["bin_boundaries"]) == f32(d["bin_boundaries"])
            for d in discs
        )
        check(f"{label}: Discretization layers reported with the tf.keras boundaries", reported,
              str({k: v["status"] for k, v in by_disc.items()}))
        want = {d["name"]: (f32(d["bin_boundaries"]), None) for d in discs}
        embedded = {k: v for k, v in config_boundaries(out).items() if k in want}
        check(f"{label}: the migrated config holds the tf.keras boundaries as float32 (num_bins null)",
              embedded == want, str(embedded))

    if os.path.isfile(os.path.join(case_dir, "optimizer.json")):
        if json.load(open(os.path.join(case_dir, "optimizer.json")))["class_name"].startswith("LossScaleOptimizer"):
            check(
                f"{label}: the dropped loss scaling is reported",
                any(f["code"] == "loss-scaling-dropped" for f in report["findings"]),
                ", ".join(f["code"] for f in report["findings"]),
            )
        try:
            check_compiled(label, out, case_dir, x)
        except Exception as e:  # noqa: BLE001 - a failure of the case, not of the run
            check(f"{label}: the compiled model trains", False, f"{type(e).__name__}: {str(e)[:300]}")
    ops = [r for r in report.get("migration", []) if r["code"] == "tf-op-arithmetic"]
    if ops:
        check_tf_ops(label, out, ops)

    again = out + ".again.keras"
    if os.path.exists(again):
        os.remove(again)
    p = subprocess.run([krepair, "migrate", "-q", out, again], capture_output=True, text=True)
    check(
        f"{label}: migrating the output again changes nothing",
        p.returncode == 0 and sha(again) == sha(out),
        p.stderr.strip(),
    )


def check_compiled(label, out, case_dir, x):
    """A compiled model comes back compiled, with tf.keras's optimizer
    (class, hyperparameters, every variable) and loss, and one more
    training step predicts what the same step predicted in tf.keras."""
    want = json.load(open(os.path.join(case_dir, "optimizer.json")))
    tf_vars = np.load(os.path.join(case_dir, "optimizer_vars.npz"))
    tf_vars = [tf_vars[f"arr_{i}"] for i in range(len(tf_vars.files))]
    model = keras.models.load_model(out)
    opt = getattr(model, "optimizer", None)
    if want["class_name"].startswith("LossScaleOptimizer"):
        # tf.keras's mixed-precision wrapper, which the archive records only
        # in its weights: krepair migrates the inner optimizer, its state,
        # and says loss scaling is dropped (finding loss-scaling-dropped).
        want = dict(want, class_name=want["config"]["inner_optimizer"]["class_name"],
                    config=want["config"]["inner_optimizer"]["config"])
    if not check(f"{label}: compiled with {want['class_name']}", type(opt).__name__ == want["class_name"], type(opt).__name__):
        return
    cfg = opt.get_config()
    def same(a, b):
        if isinstance(b, dict):  # a learning-rate schedule
            return isinstance(a, dict) and a.get("class_name") == b.get("class_name") and all(
                same(a["config"].get(k), v) for k, v in b["config"].items()
                # krepair names a schedule tf.keras left unnamed (schedule-name).
                if not (k == "name" and v is None))
        if isinstance(b, float):
            return a is not None and np.float32(a) == np.float32(b)
        return a == b

    mismatched = [
        k for k, v in want["config"].items()
        if k in cfg and k not in ("name",) and not same(cfg[k], v)
    ]
    check(f"{label}: optimizer hyperparameters equal tf.keras's", not mismatched, ", ".join(mismatched))
    loss = model.loss if isinstance(model.loss, str) else type(model.loss).__name__
    check(f"{label}: loss {want['loss']}", loss == want["loss"], str(loss))
    # Keras 3: iterations, the learning rate (none for a schedule), then
    # the slots in tf.keras's order; SGD without momentum keeps none.
    got = [np.asarray(v) for v in opt.variables]
    lr = want["config"]["learning_rate"]
    head = [tf_vars[0]] + ([] if isinstance(lr, dict) else [np.float32(lr)])
    slots = tf_vars[1:] if len(got) > len(head) else []
    expected = head + slots
    writer = json.load(open(os.path.join(case_dir, "expected.json")))["keras_version"]
    if writer.startswith("3."):  # Keras 3's own file: its optimizer.variables, as they are
        expected = tf_vars
    same = len(got) == len(expected) and all(
        np.asarray(g).shape == np.asarray(e).shape and np.array_equal(np.asarray(g, "float64"), np.asarray(e, "float64"))
        for g, e in zip(got, expected)
    )
    whose = "tf.keras's" if want.get("state_saved", True) else "a fresh optimizer's (no state carried over)"
    check(
        f"{label}: optimizer variables equal {whose} ({len(expected)})",
        same,
        f"{len(got)} variables, expected {len(expected)}",
    )
    step = np.load(os.path.join(case_dir, "train_step.npz"))
    pred_step = np.load(os.path.join(case_dir, "pred_step.npy"))
    before = np.load(os.path.join(case_dir, "pred_memory.npy"))
    moved = float(np.abs(before - pred_step).max())
    check(f"{label}: the training step changes the predictions (the check can fail)", moved > 0)
    model.train_on_batch(step["x"], step["y"])
    got = np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")
    tol = (1e-2, 1e-2) if "mixed" in label else (1e-4, 1e-5)
    diff = float(np.abs(got - pred_step).max())
    # Within the tolerance, and ten times closer to the writer's step than
    # the step moved the predictions: a model that skipped the step, or
    # restarted the optimizer, is not.
    check(
        f"{label}: one more training step predicts what the writer's step did",
        np.allclose(got, pred_step, rtol=tol[0], atol=tol[1]) and ("mixed" in label or diff * 10 < moved),
        f"max |diff| {diff:.3g}, the step moved them {moved:.3g}",
    )


def check_tf_ops(label, out, ops):
    """Each layer a TFOpLambda became computes the TensorFlow op exactly:
    its float32 output equals NumPy's for the op, to the bit, on data with
    signs, zeros and large and tiny values. (A whole model may still differ
    by an ulp under JAX: XLA folds chained constants, `(x + 1) - 0.5` into
    `x + 0.5`, as it would for the same Keras 3 code.)"""
    model = keras.models.load_model(out)
    r = np.random.default_rng(20147)
    f32 = np.float32

    def sample(shape):
        t = (r.normal(size=shape) * np.exp(r.uniform(-20, 20, size=shape))).astype("float32")
        t.flat[:3] = [0.0, -0.0, 1.0]
        return t

    numpy_op = {
        "math.multiply": np.multiply, "__operators__.add": np.add, "math.add": np.add,
        "math.subtract": np.subtract, "math.truediv": np.true_divide,
    }
    failed = []
    for rw in ops:
        old = rw["old"]
        fn = old["config"]["function"]
        node = old["inbound_nodes"][0]
        first, kwargs = node[:3], node[-1]
        layer = model.get_layer(old["config"]["name"])
        if fn == "concat":
            # tf.keras 2.12 writes no build_config: any equal shapes do.
            built = (old.get("build_config") or {}).get("input_shape") or [[None, 4]] * len(node)
            shapes = [(64,) + tuple(d or 3 for d in s[1:]) for s in built]
            parts = [sample(s) for s in shapes]
            axis = node[0][3]["axis"]
            got, want = layer(parts), np.concatenate(parts, axis=axis)
            if not np.array_equal(np.asarray(got), want):
                failed.append(f"{old['config']['name']} ({fn})")
            continue
        shape = (64,) + tuple(d or 3 for d in (old.get("build_config") or {}).get("input_shape", [None, 4])[1:])
        t, u = sample(shape), sample(shape)
        y = kwargs.get("y")
        if fn == "math.negative":
            got, want = layer(t), -t
        elif first[0] == "_CONSTANT_VALUE":
            got, want = layer(t), numpy_op[fn](f32(first[2]), t)
        elif isinstance(y, list):
            got, want = layer([t, u]), numpy_op[fn](t, u)
        else:
            got, want = layer(t), numpy_op[fn](t, f32(y))
        if not np.array_equal(np.asarray(got), want.astype("float32")):
            failed.append(f"{old['config']['name']} ({fn})")
    check(f"{label}: each of the {len(ops)} TFOpLambda layers computes its op to the bit", not failed, ", ".join(failed))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--krepair", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("fixtures", nargs="+", help="folders of fixture cases")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    for root in a.fixtures:
        tag = os.path.basename(os.path.normpath(root))
        for case in sorted(os.listdir(root)):
            d = os.path.join(root, case)
            if os.path.isfile(os.path.join(d, "expected.json")) and (
                    os.path.isfile(os.path.join(d, "model.keras")) or os.path.isfile(os.path.join(d, "model.h5"))):
                run_case(a.krepair, d, a.work, tag)
    loaded_h5 = unmigrated_h5["loaded"]
    if loaded_h5 or unmigrated_h5["refused"]:
        check(
            f"keras {keras.__version__}: the harness can fail on legacy HDF5 files: it refuses {unmigrated_h5['refused']}"
            f" unmigrated (its legacy loader loads {len(loaded_h5)})",
            unmigrated_h5["refused"] > 0,
        )
    loaded = unmigrated["loaded"]
    if loaded or unmigrated["refused"]:
        check(
            f"keras {keras.__version__}: the harness can fail: it refuses {unmigrated['refused']} unmigrated archives"
            f" (loads {len(loaded)}: {', '.join(loaded) or 'none'})",
            unmigrated["refused"] > len(loaded),
        )
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
