"""The real-Keras check of `krepair inspect`: for every fixture archive,
what krepair lists must be what this Keras builds and loads.

    .venvs/keras-3.15/bin/python scripts/check_inspect.py --krepair target/release/krepair \
        testdata/fixtures/keras-3.15 testdata/fixtures/keras-3.5

Keras is the judge. The archive is loaded with plain `load_model`, with
`saving_lib._load_state` wrapped to record every object Keras loads and
the path it loads it from; each object's `save_own_variables` then says,
into a plain dict, what Keras writes for it (`<path>/vars/<i>`, shape and
dtype). For each archive:
- every variable Keras writes is in the manifest, with its shape and dtype;
- every layer of the model (recursively through nested models) is in the
  manifest's tree with its class and name, in `model.layers` order, and
  its weights group is the path Keras loaded it from;
- the variables the manifest gives a layer are exactly those Keras writes
  for it and for the objects it holds (a model: only its own);
- the manifest's parameter total is `model.count_params()`;
- a bare weights file (`model.weights.h5` extracted from the archive) lists
  the same variables.
An archive this Keras cannot load (tf.keras's one-hot Discretization) is
judged by its repair. With --migrate (in Keras 3), each tf.keras fixture is
migrated first and the output judged. With --diff WORK, each fixture's model
is also trained one step, saved, trained another step and saved again:
`krepair diff` of the two checkpoints must name exactly the variables whose
values changed (model weights and optimizer state, as Keras writes them),
each with the largest absolute difference numpy computes, and a checkpoint
diffed with itself must be the same.
Run it in the Keras (or tf.keras) that made the fixtures. Prints one line
per check and a closing "N passed, N failed" line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

try:
    from keras.src.saving import saving_lib  # Keras 3, tf.keras 2.13-2.15
except ImportError:  # tf.keras 2.12
    from keras.saving import saving_lib

results = {"passed": 0, "failed": 0}


def check(label, ok, detail=""):
    results["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {label}{(': ' + detail) if detail else ''}", flush=True)
    return ok


def join(a, b):
    return f"{a}/{b}" if a else b


def load_recording(path):
    """Load the archive; return the model and [(inner_path, object)] in
    the order Keras loaded them (each object once)."""
    seen = {}
    order = []
    real = saving_lib._load_state

    def wrapper(obj, weights_store, assets_store, inner_path, *args, **kwargs):
        if id(obj) not in seen:
            seen[id(obj)] = inner_path
            order.append((inner_path, obj))
        return real(obj, weights_store, assets_store, inner_path, *args, **kwargs)

    saving_lib._load_state = wrapper
    try:
        model = keras.models.load_model(path, compile=False)
    finally:
        saving_lib._load_state = real
    return model, order


def written_values(obj):
    """{index: array} of what Keras writes for obj's own variables."""
    store = {}
    save = getattr(obj, "save_own_variables", None) or getattr(obj, "_save_own_variables", None)
    if save is not None:
        save(store)
    return {str(k): np.asarray(v) for k, v in store.items()}


def written(obj):
    """{index: (shape, dtype)} of what Keras writes for obj's own variables."""
    store = {}
    # tf.keras 2.12 spells it with a leading underscore.
    save = getattr(obj, "save_own_variables", None) or getattr(obj, "_save_own_variables", None)
    if save is not None:
        save(store)
    out = {}
    for k, v in store.items():
        a = np.asarray(v)
        out[str(k)] = (list(a.shape), a.dtype.name)
    return out


def keras_layers(model):
    """[(path of names, depth, class, name, object)] of the model and its
    layers, depth first through nested Functional and Sequential models."""
    out = [("", 0, type(model).__name__, model.name, model)]

    def visit(m, path, depth):
        for layer in m.layers:
            p = join(path, layer.name)
            out.append((p, depth, type(layer).__name__, layer.name, layer))
            if type(layer).__name__ in ("Functional", "Sequential"):
                visit(layer, p, depth + 1)

    visit(model, "", 1)
    return out


def inspect(krepair, path):
    r = subprocess.run([krepair, "inspect", "--json", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"krepair inspect exited {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def run_case(krepair, archive, tag, migrated=False):
    model, order = load_recording(archive)
    m = inspect(krepair, archive)
    listed = {v["path"]: v for l in m["layers"] for v in l["variables"]}
    listed.update({v["path"]: v for v in m["other_variables"]})
    # What Keras writes, by path.
    expected = {}
    for inner, obj in order:
        for k, (shape, dtype) in written(obj).items():
            expected[f"{join(inner, 'vars')}/{k}"] = (shape, dtype)
    def same(v, e):
        shape, dtype = e
        if v["shape"] != shape:
            return False
        # A migrated file keeps tf.keras's int64 counts where Keras 3 on
        # JAX writes int32 (it casts on assignment): the file's type is
        # what the manifest reports.
        ints = v["dtype"].startswith(("int", "uint")) and dtype.startswith(("int", "uint"))
        return v["dtype"] == dtype or (migrated and ints)

    bad = [f"{p}: keras {e}, krepair {[listed[p]['shape'], listed[p]['dtype']] if p in listed else 'absent'}"
           for p, e in sorted(expected.items()) if p not in listed or not same(listed[p], e)]
    extra = sorted(set(listed) - set(expected)) if not expected else []
    check(f"{tag}: the manifest lists every variable Keras writes ({len(expected)}), shape and dtype",
          not bad and not extra, "; ".join(bad[:3]) or f"Keras writes none, krepair lists {extra[:3]}")

    # The tree: every Keras layer, in order, with its class, name and group.
    path_of = {id(obj): inner for inner, obj in order}
    ours = {l["path"]: l for l in m["layers"]}
    problems = []
    for path, depth, cls, name, obj in keras_layers(model):
        l = ours.get(path)
        if l is None:
            problems.append(f"`{path}` ({cls}) is not in the tree")
            continue
        if (l["class_name"], l["name"], l["depth"]) != (cls, name, depth):
            problems.append(f"`{path}`: keras {cls} `{name}` at depth {depth}, krepair {l['class_name']} "
                            f"`{l['name']}` at {l['depth']}")
        inner = path_of.get(id(obj))
        if inner is None:
            continue
        if l["weights_group"] != inner:
            if not any(p.startswith(inner + "/") or p.startswith(join(inner, "vars") + "/")
                       for p in expected):
                # A layer without variables: its path is only a name, and
                # the file may not even hold it (a migrated TFOpLambda).
                # Keras 3 numbers model.layers by graph depth, which a
                # migration's inserted layer can change (docs/inspect.md).
                print(f"note {tag}: `{path}` has no variables; keras names its group `{inner}`, "
                      f"krepair `{l['weights_group']}`")
                continue
            problems.append(f"`{path}`: keras loads it from `{inner}`, krepair says `{l['weights_group']}`")
            continue
        container = depth == 0 or (type(obj).__name__ in ("Functional", "Sequential"))
        want = sorted(p for p in expected
                      if p.startswith(join(inner, "vars") + "/")
                      or (not container and p.startswith(inner + "/")))
        got = sorted(v["path"] for v in l["variables"])
        if want != got:
            problems.append(f"`{path}`: keras writes {want[:4]}, krepair gives it {got[:4]}")
    # model.layers order within each model.
    by_parent = {}
    for path, depth, cls, name, obj in keras_layers(model)[1:]:
        by_parent.setdefault(path.rsplit("/", 1)[0] if "/" in path else "", []).append(path)
    for parent, kids in by_parent.items():
        ours_kids = [l["path"] for l in m["layers"] if l["depth"] >= 1
                     and (l["path"].rsplit("/", 1)[0] if "/" in l["path"] else "") == parent
                     and l["path"] in kids]
        if ours_kids != kids and migrated:
            # The manifest lists config order; Keras 3 orders a Functional
            # model's layers by graph depth, which the migration's
            # inserted CategoryEncoding can change (docs/inspect.md).
            print(f"note {tag}: layers of `{parent}` in another order: keras {kids[:5]}, "
                  f"config {ours_kids[:5]}")
        elif ours_kids != kids:
            problems.append(f"layers of `{parent}` in another order: keras {kids[:5]}, krepair {ours_kids[:5]}")
    n = len(keras_layers(model))
    check(f"{tag}: the tree holds the {n} layers Keras builds, in order, each with its class, name, "
          "weights group and variables", not problems, "; ".join(problems[:3]))
    # count_params() counts a dimension unknown at build time (tf.keras
    # Discretization's summary) as 0: count the values themselves.
    params = sum(int(np.asarray(w).size) for w in model.weights)
    check(f"{tag}: parameters {m['totals']['parameters']} = the values of model.weights ({params})",
          m["totals"]["parameters"] == params)

    # The bare weights file lists the same variables.
    if not os.path.isdir(archive):
        with tempfile.TemporaryDirectory() as d:
            with zipfile.ZipFile(archive) as z:
                z.extract("model.weights.h5", d)
            w = inspect(krepair, os.path.join(d, "model.weights.h5"))
            same = {v["path"]: [v["shape"], v["dtype"]] for v in w["other_variables"]} == \
                {p: [v["shape"], v["dtype"]] for p, v in listed.items()}
            check(f"{tag}: the bare weights file lists the same {len(listed)} variables",
                  same and w["file"]["form"] == "weights" and not w["layers"])


def saved_values(path, compile):
    """{path in the weights file: array} of everything Keras writes for
    the archive at `path`, as loaded."""
    seen = {}
    real = saving_lib._load_state

    def wrapper(obj, weights_store, assets_store, inner_path, *args, **kwargs):
        out = real(obj, weights_store, assets_store, inner_path, *args, **kwargs)
        if id(obj) not in seen:
            seen[id(obj)] = (inner_path, obj)
        return out

    saving_lib._load_state = wrapper
    try:
        keras.models.load_model(path, compile=compile)
    finally:
        saving_lib._load_state = real
    values = {}
    for inner, obj in seen.values():
        for k, a in written_values(obj).items():
            values[f"{join(inner, 'vars')}/{k}"] = a
    return values


def run_diff_case(krepair, archive, tag, work):
    """Two fine-tuning checkpoints of the fixture's model: `krepair diff`
    must name exactly the variables whose values changed, each with the
    largest absolute difference numpy finds."""
    case_dir = os.path.dirname(archive)
    x = np.load(os.path.join(case_dir, "x.npy"))
    model = keras.models.load_model(archive, compile=False)
    inputs = list(x) if len(model.inputs) > 1 else x
    pred = model.predict(inputs, verbose=0)
    y = [np.zeros_like(p) for p in pred] if isinstance(pred, list) else np.zeros_like(pred)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    os.makedirs(work, exist_ok=True)
    a, b = os.path.join(work, "step1.keras"), os.path.join(work, "step2.keras")
    model.fit(inputs, y, epochs=1, batch_size=len(x), verbose=0)
    model.save(a)
    model.fit(inputs, y, epochs=1, batch_size=len(x), verbose=0)
    model.save(b)
    va, vb = saved_values(a, True), saved_values(b, True)
    r = subprocess.run([krepair, "diff", "--json", a, b], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"krepair diff exited {r.returncode}: {r.stderr.strip()}")
    d = json.loads(r.stdout)
    want = {}
    for p in va.keys() & vb.keys():
        if va[p].shape == vb[p].shape and va[p].size:
            delta = np.abs(vb[p].astype("float64") - va[p].astype("float64"))
            if np.any(delta > 0):
                want[p] = float(np.max(delta))
    got = {v["new"]["path"]: v["values"]["max_abs_diff"] for v in d["variables"]
           if v["change"] == "values"}
    others = [v for v in d["variables"] if v["change"] != "values"]
    check(f"{tag}: diff of two fine-tuning checkpoints names the {len(want)} changed variables "
          "with numpy's max |diff|",
          want == got and not others and (r.returncode == 1 or not want),
          f"keras {sorted(want.items())[:3]}, krepair {sorted(got.items())[:3]}, other {others[:1]}")
    check(f"{tag}: diff of a checkpoint with itself is the same (exit 0)",
          subprocess.run([krepair, "diff", a, a], capture_output=True).returncode == 0)


def cases(roots):
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root):
            dirnames.sort()
            if os.path.exists(os.path.join(dirpath, "expected.json")):
                exp = json.load(open(os.path.join(dirpath, "expected.json")))
                yield dirpath, os.path.join(dirpath, exp["archive"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--krepair", required=True)
    ap.add_argument("--migrate", action="store_true",
                    help="judge `krepair migrate` of each (tf.keras) fixture, in this Keras 3")
    ap.add_argument("--diff", metavar="WORK",
                    help="also diff two fine-tuning checkpoints of each fixture, made in WORK")
    ap.add_argument("roots", nargs="+")
    a = ap.parse_args()
    for case_dir, archive in cases(a.roots):
        tag = os.path.relpath(case_dir)
        try:
            if a.migrate:
                with tempfile.TemporaryDirectory() as d:
                    out = os.path.join(d, "migrated.keras")
                    subprocess.run([a.krepair, "migrate", "-q", archive, out], check=True)
                    run_case(a.krepair, out, tag + " (migrated)", migrated=True)
                continue
            try:
                keras.models.load_model(archive, compile=False)
            except Exception as e:  # noqa: BLE001 - the bug some fixtures hold
                # This Keras cannot load the input (a one-hot
                # Discretization in tf.keras): inspect must still read it,
                # and the judge looks at its repair.
                check(f"{tag}: inspect reads an archive this Keras cannot load",
                      bool(inspect(a.krepair, archive)["layers"]), f"{type(e).__name__}")
                with tempfile.TemporaryDirectory() as d:
                    out = os.path.join(d, "repaired.keras")
                    subprocess.run([a.krepair, "-q", archive, out], check=True)
                    try:
                        keras.models.load_model(out, compile=False)
                    except Exception as e2:  # noqa: BLE001
                        print(f"note {tag}: keras {keras.__version__} loads neither the input nor its "
                              f"repair ({type(e2).__name__}); --migrate judges it in Keras 3")
                        continue
                    run_case(a.krepair, out, tag + " (repaired)")
                continue
            run_case(a.krepair, archive, tag)
            if a.diff:
                run_diff_case(a.krepair, archive, tag, os.path.join(a.diff, tag.replace("/", "_")))
        except Exception as e:  # noqa: BLE001 - every failure is one line
            check(f"{tag}: inspect and load", False, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    print(f"check_inspect (keras {keras.__version__}): {results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
