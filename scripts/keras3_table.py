"""The Keras 3 table (issue #33): what each pinned Keras 3 accepts, from
its own code, for the rules that make a Keras 3 archive load in every other
Keras 3 (src/passes/keras3/compat.json).

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu $K/bin/python scripts/keras3_table.py probe \
        --out target/keras3-table/probe-K.json
    python3 scripts/keras3_table.py write --probe target/keras3-table/probe-*.json \
        --table src/passes/keras3/compat.json [--check]

`probe` records, in the Keras 3 of the venv it runs in:
- every class of `keras.layers`, `keras.initializers`, `keras.regularizers`
  and `keras.constraints` under each public name: the name resolves when
  Keras's own deserializer (`deserialize_keras_object` for a layer; the
  module's `get` for the others, which is what a layer's `__init__` calls)
  turns `{"module", "class_name", "config": {}}` into that class; the
  config keys its constructor takes (its `__init__` and, through
  `**kwargs`, its bases' up to `Layer`), with their JSON defaults;
- for a layer, the default of `training` in its `call` (a non-None
  default is what Keras writes into a node's `kwargs`);
- whether a layer accepts its `dtype` as a serialized `DTypePolicy`;
- whether a Functional model honours a node's own `training` at
  `predict` (Keras 3.16 does; 3.0 to 3.15 let the outer call decide).

`write` joins the probes into the table; with `--check` it exits 1 when the
committed table differs from what the probes give (one line per version).
"""

import argparse
import inspect
import json
import os
import re
import sys

MODULES = ("keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints")
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return True, v
    if isinstance(v, (list, tuple)):
        out = []
        for x in v:
            ok, j = jsonable(x)
            if not ok:
                return False, None
            out.append(j)
        return True, out
    return False, None


def params(cls, base):
    """The config keys `cls(**config)` takes: {key: {"default": v} |
    {"required": true} | {"object": true}} (a default that is no JSON
    value), following **kwargs up the bases to `base`."""
    out = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            break
        more = False
        for name, p in list(sig.parameters.items())[1:]:
            if p.kind == p.VAR_KEYWORD:
                more = True
                continue
            if p.kind == p.VAR_POSITIONAL or name in out:
                continue
            if p.default is p.empty:
                out[name] = {"required": True}
            else:
                ok, j = jsonable(p.default)
                out[name] = {"default": j} if ok else {"object": True}
        if not more or klass is base:
            break
    return out


# Values for the required arguments of a class made with its defaults, by
# argument name (a class whose required arguments are not all here is not
# made: its keys keep their signature defaults only).
FILL = {
    "units": 2, "filters": 2, "kernel_size": 1, "rate": 0.5, "stddev": 0.1, "pool_size": 2,
    "height": 2, "width": 2, "num_heads": 1, "key_dim": 2, "output_shape": 2, "equation": "ab,bc->ac",
    "target_shape": (2,), "dims": (1,), "n": 2, "input_dim": 2, "output_dim": 2, "factor": 0.1,
    "max_value": 1.0, "l1": 0.0, "l2": 0.0, "value": 0.0, "scale": 1.0, "cropping": 1, "padding": 1,
    "size": 2, "groups": 1, "axis": -1, "max_tokens": 2, "num_tokens": 2, "bin_boundaries": [0.0],
    "mean": 0.0, "variance": 1.0, "depth_multiplier": 1, "l2_norm": None,
}


def written_defaults(cls, p):
    """What `get_config` writes for each argument left unset, in a `cls`
    made with its defaults (FILL for the required ones): {key: value}."""
    need = [k for k, spec in p.items() if spec.get("required")]
    if any(k not in FILL for k in need):
        return {}
    args = {k: FILL[k] for k in need}
    conf = None
    for extra in ({}, {"shape": (1,)}):  # an InputLayer needs a shape
        try:
            conf = cls(**args, **extra).get_config()
            # Made twice: what differs (a seed drawn when none is given)
            # is no value of the class's.
            again = cls(**args, **extra).get_config()
            conf = {k: v for k, v in conf.items() if again.get(k) == v}
            need += list(extra)
            break
        except Exception:  # noqa: BLE001 - not made with these: no record
            continue
    if conf is None:
        return {}
    out = {}
    for k, v in conf.items():
        if k in p and k not in need and "required" not in p[k]:
            ok, j = jsonable(v)
            if ok:
                out[k] = j
    return out


# What Keras says when a serialized object's name does not resolve.
LOOKUP_FAILED = re.compile(r"Could not interpret|Could not deserialize|Could not locate|Unknown|not a KerasSaveable")


def probe_names(keras, module_name):
    import importlib

    from keras.src.saving import serialization_lib

    mod = importlib.import_module(module_name)
    kind = module_name.split(".")[1]
    found = {}
    for name in sorted(dir(mod)):
        if name.startswith("_"):
            continue
        obj = getattr(mod, name)
        cfg = {"module": module_name, "class_name": name, "config": {}, "registered_name": None}
        entry = {}
        cls = None
        try:
            if kind == "layers":
                cls = serialization_lib._retrieve_class_or_fn(name, None, module_name, "class", cfg)
                if not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
                    continue
            else:
                try:
                    cls = type(mod.get(cfg))
                except Exception as e:  # noqa: BLE001
                    # The name resolved when the error is the class's own
                    # (an empty config it cannot be made from: Constant).
                    if LOOKUP_FAILED.search(str(e)) or not isinstance(obj, type):
                        raise
                    cls = obj
        except Exception:  # noqa: BLE001 - the name does not resolve
            cls = None
        if kind != "layers":
            # The name given as a plain string (what "orthogonal" is in a
            # config), to the class.
            try:
                got = type(mod.get(name))
                entry["as_string"] = f"{got.__module__}.{got.__qualname__}"
            except Exception:  # noqa: BLE001
                pass
        if cls is not None:
            entry["class"] = f"{cls.__module__}.{cls.__qualname__}"
            entry["params"] = params(cls, keras.layers.Layer if kind == "layers" else object)
            for k, v in written_defaults(cls, entry["params"]).items():
                spec = entry["params"][k]
                if spec.get("default", object()) != v or type(spec.get("default")) is not type(v):
                    spec["written"] = v
            if kind == "layers":
                call = getattr(cls, "call", None)
                try:
                    t = inspect.signature(call).parameters.get("training") if call else None
                except (TypeError, ValueError):
                    t = None
                if t is not None and t.default is not t.empty and t.default is not None:
                    entry["training_default"] = t.default
                b = builds_from_json(keras, cls, entry["params"])
                if b is False:
                    entry["build_from_json_fails"] = True
                inf = inference(keras, cls, entry["params"])
                if inf is not None:
                    entry["inference"] = inf
        if entry:
            found[name] = entry
    return found


INPUTS = ((2, 6, 6, 3), (2, 5, 4), (2, 5))
# Not run: the audio layers' FFT kills the process with SIGILL in the
# jaxlib of Keras 3.5 and 3.6 on some CPUs ("could not create a
# primitive"), and no zoo case uses them.
NOT_RUN = {"MelSpectrogram", "STFTSpectrogram"}


def sig5(v):
    return float(f"{float(v):.5g}")


def inference(keras, cls, p):
    """What a layer without variables, made with its defaults (FILL for
    the required arguments), computes at inference on a fixed input:
    {"shape", "values": up to 16 sampled outputs, "sum"} (None when it
    cannot be made, has variables, or takes none of INPUTS)."""
    import numpy as np

    need = [k for k, spec in p.items() if spec.get("required")]
    if any(k not in FILL for k in need) or cls.__name__ in NOT_RUN:
        return None
    for shape in INPUTS:
        x = np.linspace(-2.0, 3.0, int(np.prod(shape)), dtype="float32").reshape(shape)
        try:
            layer = cls(**{k: FILL[k] for k in need})
            y = layer(x, training=False) if "training" in inspect.signature(layer.call).parameters else layer(x)
            if layer.weights:
                return None
            y = np.asarray(keras.ops.convert_to_numpy(y), dtype="float64")
        except Exception:  # noqa: BLE001 - not on this input
            continue
        flat = y.reshape(-1)
        pick = flat[np.linspace(0, flat.size - 1, min(16, flat.size)).astype(int)] if flat.size else flat
        # Five significant digits: the same on any CPU (krepair compares
        # them with a relative tolerance of 1e-4).
        return {"input": list(shape), "shape": list(y.shape), "values": [sig5(v) for v in pick], "sum": sig5(flat.sum())}
    return None


def builds_from_json(keras, cls, p):
    """Does a multiple-input layer without variables build from its
    build_config as JSON gives it back (lists, not tuples)? None when the
    class takes no list of inputs or cannot be made with its defaults."""
    need = [k for k, spec in p.items() if spec.get("required")]
    args = {k: FILL.get(k, 1) for k in need}
    if "axes" in need:
        args["axes"] = 1
    try:
        layer = cls(**args)
    except Exception:  # noqa: BLE001
        return None
    if not isinstance(layer, MULTI_INPUT(keras)):
        return None
    try:
        layer.build_from_config({"input_shape": [[None, 4], [None, 4]]})
    except Exception:  # noqa: BLE001 - the build Keras does at load fails
        return False
    return not layer.weights


def MULTI_INPUT(keras):  # noqa: N802 - the classes that take a list of inputs
    from keras.src.layers.merging.base_merge import Merge

    return (Merge, keras.layers.Dot)


def roundtrip_fails(keras):
    """The wrapper classes whose own archive this Keras cannot load back:
    a model with one, saved and loaded in this Keras, must predict the
    same ({class: why})."""
    import tempfile

    import numpy as np

    out = {}
    cases = {
        "Bidirectional": lambda L: L.Bidirectional(L.LSTM(2)),
        "TimeDistributed": lambda L: L.TimeDistributed(L.Dense(2)),
    }
    x = np.linspace(-1, 1, 2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    for name, make in cases.items():
        inp = keras.Input((3, 4))
        model = keras.Model(inp, make(keras.layers)(inp))
        want = model.predict(x, verbose=0)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.keras")
            model.save(path)
            try:
                got = keras.models.load_model(path).predict(x, verbose=0)
                if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                    out[name] = "it loads back and predicts otherwise"
            except Exception as e:  # noqa: BLE001
                out[name] = str(e).rsplit("Exception encountered:", 1)[-1].strip().split("\n")[0][:200]
    return out


def functional_leaf(keras):
    """Does a Functional config whose input_layers and output_layers are
    one bare [layer, node, tensor] (what 3.13 and later write for one
    tensor) load, or must they be lists of them (3.10 writes [[...]])?"""
    inp = keras.Input((2,), name="i")
    out = keras.layers.Dense(1, name="d")(inp)
    cfg = keras.Model(inp, out).get_config()
    cfg["input_layers"] = ["i", 0, 0]
    cfg["output_layers"] = ["d", 0, 0]
    try:
        keras.Model.from_config(cfg)
        return True
    except Exception:  # noqa: BLE001
        return False


def dtype_object(keras):
    cfg = {"units": 1, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}}
    try:
        keras.layers.Dense.from_config(cfg)
        return True
    except Exception:  # noqa: BLE001
        return False


def node_training_honoured(keras):
    import numpy as np

    inp = keras.Input((1000,))
    out = keras.layers.Dropout(0.5)(inp, training=True)
    model = keras.Model(inp, out)
    got = np.asarray(model.predict(np.ones((1, 1000), "float32"), verbose=0))
    return bool((got != 1).any())


def probe(out):
    import keras

    table = {"keras_version": keras.__version__, "modules": {}}
    for m in MODULES:
        table["modules"][m] = probe_names(keras, m)
    table["dtype_object"] = dtype_object(keras)
    table["roundtrip_fails"] = roundtrip_fails(keras)
    table["functional_leaf"] = functional_leaf(keras)
    table["node_training_honoured"] = node_training_honoured(keras)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    print(f"{keras.__version__}: " + ", ".join(f"{m} {len(v)}" for m, v in table["modules"].items()))


def version_key(v):
    return [int(x) if x.isdigit() else -1 for x in re.split(r"[.]|dev", v)]


def merge(versions):
    """The probes as one table: per `module>name`, the versions it resolves
    in (indexes into `versions`), the class it resolves to in each, and per
    config key the versions that take it with the default they give it."""
    names = [v["keras_version"] for v in versions]
    classes = {}
    for i, v in enumerate(versions):
        for m, found in v["modules"].items():
            for name, e in found.items():
                c = classes.setdefault(f"{m}>{name}", {"class": {}, "params": {}})
                if "class" in e:
                    c["class"][str(i)] = e["class"]
                if "as_string" in e:
                    c.setdefault("as_string", {})[str(i)] = e["as_string"]
                if e.get("build_from_json_fails"):
                    c.setdefault("build_from_json_fails", []).append(i)
                if "inference" in e:
                    c.setdefault("inference", {})[str(i)] = e["inference"]
                if "training_default" in e:
                    c.setdefault("training_default", {})[str(i)] = e["training_default"]
                for k, spec in e.get("params", {}).items():
                    variants = c["params"].setdefault(k, [])
                    for var in variants:
                        if var["spec"] == spec:
                            var["in"].append(i)
                            break
                    else:
                        variants.append({"in": [i], "spec": spec})
    return {
        "about": "What each pinned Keras 3 accepts, probed by scripts/keras3_table.py (issue #33); do not edit by hand.",
        "versions": names,
        "dtype_object": [v["dtype_object"] for v in versions],
        "node_training_honoured": [v["node_training_honoured"] for v in versions],
        "roundtrip_fails": [v["roundtrip_fails"] for v in versions],
        "functional_leaf": [v["functional_leaf"] for v in versions],
        "classes": classes,
    }


def write(probes, table_path, check):
    versions = sorted((json.load(open(p)) for p in probes), key=lambda t: version_key(t["keras_version"]))
    text = json.dumps(merge(versions), indent=None, sort_keys=True, separators=(",", ":")) + "\n"
    if check:
        try:
            old = open(table_path).read()
        except FileNotFoundError:
            old = ""
        if old != text:
            print(f"{table_path}: the pinned Keras 3 versions accept otherwise than the table says (run write without --check)")
            return 1
        print(f"{table_path}: matches the probes of " + ", ".join(v["keras_version"] for v in versions))
        return 0
    os.makedirs(os.path.dirname(table_path), exist_ok=True)
    with open(table_path, "w") as f:
        f.write(text)
    print(f"wrote {table_path}: " + ", ".join(v["keras_version"] for v in versions))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--out", required=True)
    w = sub.add_parser("write")
    w.add_argument("--probe", nargs="+", required=True)
    w.add_argument("--table", default=os.path.join(ROOT, "src/passes/keras3/compat.json"))
    w.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.cmd == "probe":
        probe(a.out)
        return 0
    return write(a.probe, a.table, a.check)


if __name__ == "__main__":
    sys.exit(main())
