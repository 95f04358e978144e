"""The real-Keras check: repair every fixture with the built krepair binary
and load each output in the Keras of the venv this script runs in.

    .venvs/keras-3.5/bin/python scripts/check_keras.py --krepair target/release/krepair \
        --work target/keras-check testdata/fixtures/keras-3.5 testdata/fixtures/keras-3.15

For each fixture case (a folder with expected.json) and each policy
(adapted, identity, auto):
- krepair must succeed and its report must map every layer to the weights
  group real Keras used (found by value when the fixture was made);
- if this Keras loads the input, it must load the output, and the output's
  predictions must equal the expected ones (rtol = atol = 1e-6);
- the same must hold with Normalization.finalize_state() disabled in the
  loader, for every layer embedded in its config (a layer kept in its
  variables, see docs/version-matrix.md, needs finalize_state() by design;
  the check asserts that krepair reported it so);
- the harness must be able to fail: with finalize_state() disabled the
  unrepaired input must NOT reproduce its adapted predictions.
For a fixture with adapted Discretization layers (tf.keras 2.12-2.15), in
the tf.keras that made it: the unrepaired reload must differ from the
in-memory model or fail to load (the bug), the output must predict what
the in-memory model did, and the report and the output's config must hold
the in-memory boundaries as float32, bit for bit.
For the reporter's EfficientNet model, the reporter's own assertion
(assert_allclose against the in-memory model's predictions) must pass.
Prints one line per check and a closing "N passed, N failed" line.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import traceback
import zipfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "testdata"))
import fixture_layers  # noqa: E402,F401

TOL = 1e-6
results = {"passed": 0, "failed": 0}


def check(label, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {label}{(': ' + detail) if detail else ''}", flush=True)
    return ok


@contextlib.contextmanager
def finalize_disabled():
    cls = keras.layers.Normalization
    real = cls.finalize_state
    cls.finalize_state = lambda self: None
    try:
        yield
    finally:
        cls.finalize_state = real


def model_input(model, x):
    """A model with several inputs takes x (their stack, or a list of
    arrays of different shapes) as a list."""
    if isinstance(x, list):
        return x
    return list(x) if len(model.inputs) > 1 else x


def load_x(case_dir):
    """A case's model input: x.npy, or x.npz with one array per input."""
    path = os.path.join(case_dir, "x.npy")
    if os.path.isfile(path):
        return np.load(path)
    z = np.load(os.path.join(case_dir, "x.npz"))
    return [z[f"arr_{i}"] for i in range(len(z.files))]


def load_predict(path, x):
    model = keras.models.load_model(path, compile=False)
    return np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")


def try_load_predict(path, x):
    try:
        return load_predict(path, x), None
    except Exception as e:  # noqa: BLE001 - any load failure is data here
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def close(a, b, tol=TOL):
    return a is not None and a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol)


def close_recorded(a, b, tol=TOL):
    """`close` against predictions recorded when the fixture was made, on
    another machine: its CPU (AVX-512 or not, FMA, oneDNN's kernels)
    rounds the intermediate sums differently, and that error scales with
    the largest values of the computation, not with each output. Seen:
    tf.keras 2.15 on an AVX-512 EPYC differs from the recorded identity
    predictions of multi_axis_inner by 1.38e-05, where the outputs reach
    69.6 (two float32 ulps there) and the differing one is small."""
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    return a is not None and a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol * scale)


def maxdiff(a, b):
    if a is None:
        return "no prediction"
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    return f"max |diff| {float(np.max(np.abs(a - b))):.3g}"


def predict_fresh(model, x):
    # A compiled predict function captures the statistics as constants.
    model.predict_function = None
    return np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")


def in_version_references(path, x):
    """What this Keras computes for the unrepaired input: as loaded (the
    stored statistics, finalized by the .keras loader) and with every
    adapt-mode layer set to identity."""
    model = keras.models.load_model(path, compile=False)
    refs = {"adapted": predict_fresh(model, x)}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
            layer.adapt_mean.assign(np.zeros(layer.adapt_mean.shape, "float32"))
            layer.adapt_variance.assign(np.ones(layer.adapt_variance.shape, "float32"))
            layer.finalize_state()
    refs["identity"] = predict_fresh(model, x)
    return refs


def f32(values):
    """Values as their float32 bit patterns."""
    return np.asarray(values, dtype="float32").view("uint32").tolist()


def config_boundaries(archive):
    """{layer name: (bin_boundaries as float32 bits, num_bins)} of every
    Discretization in the archive's config.json."""
    if os.path.isdir(archive):
        config = json.load(open(os.path.join(archive, "config.json")))
    else:
        with zipfile.ZipFile(archive) as z:
            config = json.loads(z.read("config.json"))
    out = {}

    def visit(v):
        if isinstance(v, dict):
            if v.get("class_name") == "Discretization" and isinstance(v.get("config"), dict):
                c = v["config"]
                b = c.get("bin_boundaries")
                out[c.get("name")] = (None if b is None else f32(b), c.get("num_bins"))
            for x in v.values():
                visit(x)
        elif isinstance(v, list):
            for x in v:
                visit(x)

    visit(config)
    return out


def run_case(krepair, case_dir, work, tag):
    exp = json.load(open(os.path.join(case_dir, "expected.json")))
    src = os.path.join(case_dir, exp["archive"])
    x = np.load(os.path.join(case_dir, "x.npy"))
    made = {
        "adapted": np.load(os.path.join(case_dir, "pred_adapted.npy")),
        "identity": np.load(os.path.join(case_dir, "pred_identity.npy")),
    }
    memory = np.load(os.path.join(case_dir, "pred_memory.npy"))
    same_version = exp["keras_version"] == keras.__version__
    # Across versions, float16 arithmetic differs in the last bits.
    cross_tol = TOL if same_version or exp["case"] != "mixed_float16" else 4e-3
    adapt_layers = [l for l in exp["layers"] if l["mode"] == "adapt"]
    discs = exp.get("discretizations") or []
    if discs:
        refs = None
        if same_version:
            # The bug: reloaded, the layer has lost its boundaries (every
            # input in bin 0), or the archive does not load at all
            # (one-hot).
            p, err = try_load_predict(src, x)
            check(f"{tag}: unrepaired reload loses the Discretization boundaries",
                  not close(p, memory), err or maxdiff(p, memory))
            # The output must compute what the saved model computed.
            refs = {"adapted": made["adapted"], "identity": made["identity"]}
    else:
        try:
            refs = in_version_references(src, x)
            input_err = None
        except Exception as e:  # noqa: BLE001 - a load failure is data here
            refs, input_err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"note {tag}: keras {keras.__version__} cannot load the input either ({input_err}), "
                  "so the output is not required to load")

    if refs is not None and not discs:
        for which in ("adapted", "identity"):
            check(f"{tag}: this Keras agrees with the fixture on {which} predictions",
                  close_recorded(refs[which], made[which], cross_tol), maxdiff(refs[which], made[which]))
        if exp["legacy_signature"] and same_version:
            # The bug itself: reloading the unrepaired archive does not give
            # the predictions of the model that was saved.
            check(f"{tag}: unrepaired reload differs from the saved in-memory model (keras #20147)",
                  not close(refs["adapted"], memory), maxdiff(refs["adapted"], memory))
        # The harness bites: without finalize_state() the unrepaired input
        # does not compute its adapted statistics.
        if adapt_layers and not close(made["adapted"], made["identity"]):
            with finalize_disabled():
                p, err = try_load_predict(src, x)
            check(f"{tag}: input without finalize_state() does not predict adapted",
                  not close(p, refs["adapted"]), err or maxdiff(p, refs["adapted"]))

    for policy in ("adapted", "identity", "auto"):
        label = f"{tag} --stats {policy}"
        out_dir = os.path.join(work, tag, policy)
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, exp["archive"])
        report_path = os.path.join(out_dir, "report.json")
        subprocess.run(["rm", "-rf", out, report_path], check=True)
        proc = subprocess.run(
            [krepair, "--quiet", "--stats", policy, "--report", report_path, src, out],
            capture_output=True, text=True,
        )
        # tf.keras 2.12 and 2.13 number layers with weights by twos: krepair
        # refuses to embed statistics that would renumber a second
        # Normalization of the same model (it says to migrate instead).
        # Such a refusal must name the reason and write nothing.
        renumbers = exp["keras_version"].startswith(("2.12.", "2.13.")) and sum(
            1 for l in exp["layers"] if "/" not in l["config_path"]) > 1
        if renumbers:
            check(
                f"{label}: refused (a repair would renumber tf.keras 2.13's weights)",
                proc.returncode == 1 and "numbers layers with weights by twos" in proc.stderr
                and not os.path.exists(out),
                proc.stderr.strip(),
            )
            continue
        if not check(f"{label}: krepair exits 0", proc.returncode == 0, proc.stderr.strip()):
            continue
        report = json.load(open(report_path))
        by_path = {l["config_path"]: l for l in report["layers"]}
        check(f"{label}: report lists every Normalization layer",
              sorted(by_path) == sorted(l["config_path"] for l in exp["layers"]), str(sorted(by_path)))
        for l in adapt_layers:
            r = by_path.get(l["config_path"])
            check(f"{label}: {l['config_path']} mapped to {l['weights_group']}",
                  r is not None and r["weights_group"] == l["weights_group"],
                  f"report says {r and r['weights_group']}")
            where = r and r["embedded"] and r["embedded"]["location"]
            check(f"{label}: {l['config_path']} embedded in {l['storage']}", where == l["storage"],
                  f"report says {where}")
        chosen = exp["auto"] if policy == "auto" else policy
        by_disc = {l["config_path"]: l for l in report.get("discretizations", [])}
        for d in discs:
            r = by_disc.get(d["config_path"])
            check(f"{label}: {d['config_path']} reported with the in-memory boundaries",
                  r is not None and r["status"] == "repaired" and f32(r["bin_boundaries"]) == f32(d["bin_boundaries"]),
                  f"report says {r and r['status']} {r and r['bin_boundaries']}")
        if discs:
            want = {d["name"]: f32(d["bin_boundaries"]) for d in discs}
            embedded = {k: v for k, v in config_boundaries(out).items() if k in want}
            check(f"{label}: the output's config holds the in-memory boundaries as float32 (num_bins null)",
                  embedded == {k: (v, None) for k, v in want.items()}, str(embedded))
        if refs is None:
            continue
        got, err = try_load_predict(out, x)
        check(f"{label}: output predicts {chosen} as this Keras computes it", close(got, refs[chosen]),
              err or maxdiff(got, refs[chosen]))
        check(f"{label}: output predicts {chosen} as the fixture recorded",
              close_recorded(got, made[chosen], cross_tol), err or maxdiff(got, made[chosen]))
        if policy == "auto" and exp["case"] == "efficientnet" and same_version:
            try:
                np.testing.assert_allclose(memory, got)
                check(f"{label}: reporter's assertion assert_allclose(model.predict(x), revived.predict(x))", True)
            except AssertionError as e:
                check(f"{label}: reporter's assertion", False, " ".join(str(e).split())[:300])
        in_vars = [l for l in adapt_layers if l["storage"] == "variables"]
        if in_vars:
            names = [l["config_path"] for l in in_vars]
            flagged = all(
                any(f["code"] == "kept-in-variables" for f in by_path[n]["findings"]) for n in names
            )
            check(f"{label}: {names} reported kept-in-variables (needs finalize_state() by design)", flagged)
        else:
            with finalize_disabled():
                got, err = try_load_predict(out, x)
            check(f"{label}: output without finalize_state() predicts {chosen}", close(got, refs[chosen]),
                  err or maxdiff(got, refs[chosen]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--krepair", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("fixtures", nargs="+", help="folders of fixture cases")
    args = p.parse_args()
    krepair = os.path.abspath(args.krepair)
    print(f"loader: keras {keras.__version__} ({keras.backend.backend()})")
    work = os.path.join(os.path.abspath(args.work), f"loader-keras-{keras.__version__}")
    for root in args.fixtures:
        for case in sorted(os.listdir(root)):
            case_dir = os.path.join(root, case)
            if not os.path.isfile(os.path.join(case_dir, "expected.json")):
                continue
            tag = f"{os.path.basename(os.path.normpath(root))}/{case}"
            try:
                run_case(krepair, case_dir, work, tag)
            except Exception:  # noqa: BLE001
                check(f"{tag}: check crashed", False, traceback.format_exc().splitlines()[-1])
    print(f"keras-{keras.__version__}: {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
