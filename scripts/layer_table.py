"""The layer table's check and page: compares src/passes/migrate/layers.json
with what each pinned tf.keras writes and each pinned Keras 3 accepts, and
writes docs/layers.md from the three.

CI runs it in three steps (W: every writer venv, tf.keras 2.12 to 2.15 and
tf_keras 2.21; K: every Keras 3 venv, one at a time, on JAX; and Keras 3.15
on TensorFlow, with the tf_keras 2.21 venv, which has both):

    $W/bin/python scripts/layer_table.py dump --out target/layer-table/dump-W.json
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu $K/bin/python scripts/layer_table.py probe \
        --dump target/layer-table/dump-*.json --out target/layer-table/probe-K.json
    KERAS_BACKEND=tensorflow .venvs/keras-tfk2.21/bin/python scripts/layer_table.py probe \
        --dump target/layer-table/dump-*.json --out target/layer-table/probe-3.15-tensorflow.json
    python3 scripts/layer_table.py write --dump target/layer-table/dump-*.json \
        --probe target/layer-table/probe-*.json --table src/passes/migrate/layers.json \
        --out docs/layers.md --check

`dump` builds every model of testdata/zoo.py in memory and records, per
layer class (nested models, wrapped layers and cells included), the configs
the writer serializes, how each layer was called or built, and its
variables; and every Layer class of the writer's `keras.layers`.
`probe` hands each recorded config to this Keras 3's `from_config`, takes
out the keys its error names until it constructs (when an error names no
key, it tries krepair's rewrites of values), then builds the layer as
Keras 3 loads it (the writer's build_config, then the model's call) and
records its variables, and its backend and whether TensorFlow is
installed (Keras 3 computes the classes the table says `needs`
tensorflow with TensorFlow whatever its backend). `write` joins dumps,
probes and table into the page;
with `--check` it exits 1 when the page is stale or when the table misses
what the probes found (one line per problem), and prints notes that do not
fail it.
"""

import argparse
import copy
import difflib
import importlib.util
import json
import os
import re
import sys
from contextlib import redirect_stdout

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
NESTED = ("layer", "backward_layer", "cell", "cells")


# ---------------------------------------------------------------- dump


def jsonable(v):
    """`v` as JSON: tuples and TensorShapes become lists, numpy scalars
    numbers, anything else its repr; run-specific shared_object_ids go."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items() if k != "shared_object_id"}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "as_list"):  # TensorShape
        return v.as_list() if v.rank is not None else None
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return repr(v)


def call_spec(v):
    """A layer call's arguments with each KerasTensor as its shape and dtype."""
    if type(v).__name__ == "KerasTensor":
        return {"__tensor__": v.shape.as_list(), "dtype": v.dtype.name}
    if isinstance(v, dict):
        return {k: call_spec(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [call_spec(x) for x in v]
    return jsonable(v)


def instance(layer, entry, case):
    """One layer: its entry as the archive holds it (config, build_config),
    how the model first called it (or the shape it was built for), its
    variables."""
    node = layer._inbound_nodes[0] if getattr(layer, "_inbound_nodes", None) else None
    call = {"args": call_spec(node.call_args), "kwargs": call_spec(node.call_kwargs)} if node else None
    # A lookup's vocabulary handle is in `weights` but is no variable.
    variables = [[w.name.split("/")[-1].split(":")[0], w.shape.as_list(), bool(w.trainable)]
                 for w in layer.weights if hasattr(w, "shape") and hasattr(w, "name")]
    return {"case": case, "config": jsonable(entry["config"]), "build_config": jsonable(entry.get("build_config")),
            "call": call, "input_shape": jsonable(getattr(layer, "_build_input_shape", None)), "variables": variables}


def walk(layer, entry, keras):
    """(layer object, its entry) for every layer under `layer` that the
    archive holds an entry of: a model's layers and the layers nested in
    their configs, each entry as the parent serializes it (a Sequential's
    InputLayer entry has no layer object: skipped)."""
    if isinstance(layer, keras.Model):
        by_name = {sub.name: sub for sub in layer.layers}
        for e in entry["config"]["layers"]:
            if e["config"]["name"] in by_name:
                yield from walk(by_name[e["config"]["name"]], e, keras)
        return
    yield layer, entry
    for key in NESTED:
        if key in entry["config"]:  # the attribute of that name holds the layer object(s)
            subs, entries = getattr(layer, key), entry["config"][key]
            pairs = zip(subs, entries) if isinstance(subs, (list, tuple)) else [(subs, entries)]
            for sub, e in pairs:
                yield from walk(sub, e, keras)


def priority(cls, case):
    """The zoo case named after the class first: its instance is the one
    the page shows."""
    return 0 if case == cls else 1 if case.startswith(cls + "_") else 2


def zoo_classes(zoo, serialize):
    """Per class, one instance per distinct set of config keys, and the
    cases the writer could not build."""
    found, skipped = [], {}
    for n, case in enumerate(zoo.CASES):
        zoo.keras.utils.set_random_seed(zoo.SEED)
        try:
            model, _ = zoo.CASES[case]()
        except (AttributeError, TypeError, ValueError, ImportError) as e:  # as zoo.record() skips
            skipped[case] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        for layer, entry in walk(model, serialize(model), zoo.keras):  # what the archive's config.json holds
            name = entry["class_name"]
            found.append((priority(name, case), n, name, instance(layer, entry, case)))
    classes = {}
    for _, _, name, inst in sorted(found, key=lambda f: f[:2]):
        entry = classes.setdefault(name, {"keys": {}, "instances": []})
        keysets = [set(i["config"]) for i in entry["instances"]]
        if set(inst["config"]) not in keysets:
            entry["instances"].append(inst)
        for k, v in inst["config"].items():
            entry["keys"].setdefault(k, v)
    return classes, skipped


def dump(args):
    """The `dump` command: run in a tf.keras (or tf_keras) venv."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, os.path.join(ROOT, "testdata"))
    with redirect_stdout(sys.stderr):  # TensorFlow's noise
        import zoo

        keras = zoo.keras
        serialize = getattr(keras.saving, "serialize_keras_object", None)
        if serialize is None:  # tf.keras 2.12 keeps it internal
            from keras.saving.serialization_lib import serialize_keras_object as serialize
        classes, skipped = zoo_classes(zoo, serialize)
    namespace = sorted({obj.__name__ for obj in vars(keras.layers).values()
                        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)})
    package = "tf_keras" if keras.__name__.startswith("tf_keras") else "tf.keras"
    out = {"writer": {"package": package, "version": zoo.VERSION}, "namespace": namespace,
           "classes": classes, "skipped": skipped}
    write_json(args.out, out)
    print(f"{package} {zoo.VERSION}: {len(classes)} classes from the zoo, {len(namespace)} in keras.layers,"
          f" {len(skipped)} cases skipped -> {args.out}")


def write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


# ---------------------------------------------------------------- probe


def error_text(e):
    """The first sentence of what Keras says, without the config it echoes
    and without object addresses."""
    text = str(e).split("Exception encountered:")[-1].strip() or type(e).__name__
    text = re.sub(r" at 0x[0-9a-f]+", "", text.splitlines()[0])
    text = re.split(r"(?<=\.)\s", text)[0]
    return f"{type(e).__name__}: {text}"[:200]


def dict_keys(text):
    """The top-level keys of the Python dict literal that starts `text`."""
    keys, depth = [], 0
    for m in re.finditer(r"'((?:[^'\\]|\\.)*)'(\s*:)?|[{\[(]|[}\])]", text):
        tok = m.group(0)
        if tok in "{[(":
            depth += 1
        elif tok in "}])":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and m.group(2):
            keys.append(m.group(1))
    return keys


REJECTIONS = (
    (r"Unrecognized keyword argument(?:s|\(s\))(?: passed to \w+)?: (\{.*)", dict_keys),
    (r"Argument\(s\) not recognized: (\{.*)", dict_keys),
    (r"unexpected keyword argument '(\w+)'", lambda s: [s]),
    (r"Keyword argument not understood:',? '(\w+)'", lambda s: [s]),
)


def rejected_keys(text):
    for pattern, keys in REJECTIONS:
        m = re.search(pattern, text, re.S)
        if m:
            return keys(m.group(1))
    return []


def objects(config):
    """The objects ({"class_name": ...}) among a layer config's values."""
    return [(k, v) for k, v in config.items() if isinstance(v, dict) and "class_name" in v]


def numpy_scalar(config):
    """krepair's numpy-scalar rule (tf.keras 2.12's `__numpy__` values);
    True if it changed `config`."""
    hits = [k for k, v in objects(config) if v["class_name"] == "__numpy__"]
    for k in hits:
        config[k] = config[k]["config"]["value"]
    return bool(hits)


def orthogonal_initializer(config):
    """krepair's orthogonal-initializer rule (either form of tf.keras)."""
    hits = [v for _, v in objects(config) if v["class_name"] == "Orthogonal"
            and v.get("module", "keras.initializers") == "keras.initializers"]
    for v in hits:
        v["class_name"] = "OrthogonalInitializer"
    return bool(hits)


def one_element_axis(config):
    """krepair's one-element-axis rule (BatchNormalization's code rule)."""
    axis = config.get("axis")
    if isinstance(axis, list) and len(axis) == 1:
        config["axis"] = axis[0]
        return True
    return False


def legacy_module(config):
    """krepair's legacy-module rule: tf.keras 2.12's objects without a
    module get the one tf.keras 2.13 writes, by the key's kind; nested
    layers (`cells`: a list of them) get keras.layers."""
    kinds = {"_initializer": "keras.initializers", "_regularizer": "keras.regularizers",
             "_constraint": "keras.constraints"}
    cells = [("cells", c) for c in config.get("cells", []) if isinstance(c, dict)]
    modules = [(v, "keras.layers" if k in NESTED else next((m for x, m in kinds.items() if k.endswith(x)), None))
               for k, v in objects(config) + cells if "module" not in v]
    hits = [(v, m) for v, m in modules if m]
    for v, m in hits:
        v["module"] = m
    return bool(hits)


# krepair's rewrites of values (not keys), tried in this order when Keras 3
# fails on a config without naming a key; the check wants each one a
# class needs in GENERIC_RULES or in the class's code_rules.
REWRITES = {"numpy-scalar": numpy_scalar, "orthogonal-initializer": orthogonal_initializer,
            "one-element-axis": one_element_axis, "legacy-module": legacy_module}
GENERIC_RULES = {"batch-input-shape", "orthogonal-initializer", "dtype-policy", "legacy-module", "numpy-scalar"}
# The keys a rule written in Rust takes out of a class's config (the
# table's code_rules name rules, not keys).
CODE_RULE_KEYS = {"attention-build-shapes": {"query_shape", "key_shape", "value_shape"}}
# The rules written in Rust that replace a class Keras 3 lacks, by what
# the layer computes, with the Keras 3 classes it may become.
CODE_RULE_CLASSES = {"tf-op-arithmetic": ("Rescaling", "Add", "Subtract", "Multiply", "Concatenate")}
# Renames of a key Keras 3 still takes, through a deprecation warning
# only: that every Keras 3 takes the old key is no news.
DEPRECATION_RENAMES = {"renamed-argument"}


def nested_accepted(keras, config):
    """`config` with each nested layer config replaced by what this Keras
    accepts of it (the nested class is probed as a class of its own)."""
    config = copy.deepcopy(config)
    for key in NESTED:
        entries = config.get(key)
        for e in entries if isinstance(entries, list) else [entries]:
            if isinstance(e, dict) and hasattr(keras.layers, e.get("class_name", "")):
                e["config"] = accept(keras, e["class_name"], e["config"])[1]
    return config


def accept(keras, name, config):
    """Construct `name` from `config`, removing each key an error names and
    applying one of krepair's REWRITES when an error names none. Returns
    (layer or None, the config, removed keys, rewrites needed, the last
    error)."""
    config, removed, rewrites = nested_accepted(keras, config), [], []
    while True:
        try:
            return getattr(keras.layers, name).from_config(copy.deepcopy(config)), config, removed, rewrites, None
        except Exception as e:  # noqa: BLE001 -- any error is a result
            keys = [k for k in rejected_keys(str(e)) if k in config]
            if keys:
                removed += keys
                config = {k: v for k, v in config.items() if k not in keys}
                continue
            rule = next((r for r, rewrite in REWRITES.items() if r not in rewrites and rewrite(config)), None)
            if rule is None:
                return None, config, removed, rewrites, error_text(e)
            rewrites.append(rule)


def tensors(keras, spec):
    """The call arguments of a dump, KerasTensors made again as inputs."""
    if isinstance(spec, dict) and "__tensor__" in spec:
        return keras.Input(batch_shape=tuple(spec["__tensor__"]), dtype=spec["dtype"])
    if isinstance(spec, dict):
        return {k: tensors(keras, v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [tensors(keras, v) for v in spec]
    return spec


def attention_build_shapes(inst):
    """krepair's attention-build-shapes rule: a MultiHeadAttention's shapes
    move from its config into its build_config (None: nothing to move)."""
    shapes = {k: inst["config"][k] for k in ("query_shape", "value_shape", "key_shape") if inst["config"].get(k)}
    return {"shapes_dict": shapes} if shapes else None


# krepair's rewrites of a build_config, tried in this order when Keras 3
# cannot build a layer from the writer's: each gives the new build_config
# ({}: none) or None where it does not apply.
BUILD_REWRITES = {"attention-build-shapes": attention_build_shapes,
                  "dot-build-config": lambda inst: {} if inst["build_config"] else None}


def build(keras, layer, inst, build_config):
    """Build `layer` as Keras 3 loads it: from the build_config, then the
    call the model makes (a nested layer: the shape tf.keras built it for)."""
    if build_config:
        layer.build_from_config(build_config)
    if inst["call"] and inst["call"]["args"]:
        layer(*tensors(keras, inst["call"]["args"]), **tensors(keras, inst["call"]["kwargs"]))
    elif not layer.built and inst["input_shape"] is not None:
        shape = inst["input_shape"]
        layer.build(tuple(shape) if shape and not isinstance(shape[0], list) else shape)


def variables(keras, name, config, inst):
    """The variables of `name` made from the accepted `config` and built as
    Keras 3 loads it, trying BUILD_REWRITES if that fails. Returns (the
    variables, or None if it cannot be built or tf.keras left no shape to
    build it from; the rewrites needed; the first build error)."""
    error = None
    for rule, build_config in [(None, inst["build_config"])] + [(r, f(inst)) for r, f in BUILD_REWRITES.items()]:
        if rule and build_config is None:
            continue
        layer = getattr(keras.layers, name).from_config(copy.deepcopy(config))
        try:
            build(keras, layer, inst, build_config)
        except Exception as e:  # noqa: BLE001 -- any error is a result
            error = error or error_text(e)
            continue
        if not layer.built and inst["variables"]:  # StackedRNNCells of tf.keras <= 2.15: no shape
            return None, [], None
        return [[getattr(w, "path", w.name).split("/")[-1].split(":")[0], list(w.shape), bool(w.trainable)]
                for w in layer.weights], [rule] if rule else [], None
    return None, [], error


def probe_class(keras, name, dumps):
    result = {"exists": isinstance(getattr(keras.layers, name, None), type), "writers": {}}
    if not result["exists"]:
        return result
    for d in dumps:
        for inst in d["classes"].get(name, {}).get("instances", []):
            layer, config, removed, rewrites, error = accept(keras, name, inst["config"])
            built = variables(keras, name, config, inst) if layer is not None else (None, [], None)
            found, built_by, build_error = built
            result["writers"].setdefault(writer_label(d, full=True), []).append(
                {"case": inst["case"], "rejected": removed, "rewrites": rewrites + built_by, "error": error,
                 "variables": found, "build_error": build_error})
    return result


def keras3_namespace(keras):
    """What this Keras 3 has that its legacy HDF5 files name without a
    module: the Layer classes of keras.layers, and each operation class of
    the keras.src.ops modules with its module (src/passes/migrate/keras3_classes.json)."""
    import importlib
    import pkgutil

    import keras.src.ops as ops
    from keras.src.ops.operation import Operation

    layers = sorted({o.__name__ for o in vars(keras.layers).values()
                     if isinstance(o, type) and issubclass(o, keras.layers.Layer)})
    op_modules = {}
    for m in pkgutil.iter_modules(ops.__path__):
        if m.name.endswith("_test") or m.name in ("function", "operation", "node", "symbolic_arguments",
                                                   "operation_utils"):
            continue
        mod = importlib.import_module(f"keras.src.ops.{m.name}")
        for name, o in vars(mod).items():
            if (isinstance(o, type) and issubclass(o, Operation) and not issubclass(o, keras.layers.Layer)
                    and o.__module__ == mod.__name__ and o is not Operation):
                op_modules[name] = mod.__name__
    return {"layers": layers, "ops": dict(sorted(op_modules.items()))}


def keras3_class_problems(probes, path):
    """The Keras 3 classes file against what the probed Keras 3 versions have."""
    if not os.path.exists(path):
        return [f"{path}: missing"]
    listed = load_json(path)
    out = []
    seen_layers, seen_ops = set(), {}
    for p in probes:
        ns = p.get("namespace")
        if ns is None:
            continue
        seen_layers |= set(ns["layers"])
        for name, module in ns["ops"].items():
            if seen_ops.setdefault(name, module) != module:
                out.append(f"{path}: operation {name} is in {seen_ops[name]} in one Keras 3 and {module} in another")
            if listed["ops"].get(name) != module:
                out.append(f"{path}: Keras {reader_label(p)} has operation {name} in {module}, the file says"
                           f" {listed['ops'].get(name)}")
        out += [f"{path}: Keras {reader_label(p)} exports layer {n}, which the file misses"
                for n in ns["layers"] if n not in listed["layers"]]
    if seen_layers:
        out += [f"{path}: no probed Keras 3 has layer {n}" for n in listed["layers"] if n not in seen_layers]
        out += [f"{path}: no probed Keras 3 has operation {n}" for n in listed["ops"] if n not in seen_ops]
    return sorted(set(out))


def probe(args):
    """The `probe` command: run in a Keras 3 venv (JAX backend unless
    KERAS_BACKEND says otherwise)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with redirect_stdout(sys.stderr):  # TensorFlow's noise, on its backend
        import keras

        dumps = [load_json(p) for p in args.dump]
        names = sorted({n for d in dumps for n in d["namespace"]} | {n for d in dumps for n in d["classes"]})
        classes = {n: probe_class(keras, n, dumps) for n in names}
    out = {"keras": keras.__version__, "backend": keras.backend.backend(),
           "tensorflow": importlib.util.find_spec("tensorflow") is not None, "classes": classes,
           "namespace": keras3_namespace(keras)}
    write_json(args.out, out)
    rejecting = sorted(n for n, c in classes.items() if any(r["rejected"] for rs in c["writers"].values() for r in rs))
    print(f"Keras {reader_label(out)}: {len(names)} classes, {sum(not c['exists'] for c in classes.values())} missing,"
          f" {len(rejecting)} rejecting keys -> {args.out}")


def load_json(path):
    return json.loads(load_text(path))


def load_text(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------- write


def version_key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v))


def short_version(v):
    """A nightly's date goes: the page must not change with every build."""
    return re.sub(r"\.dev\d+$", ".dev…", v)


def reader_label(p):
    """A probe's Keras 3: its version, and its backend unless JAX."""
    backend = p.get("backend", "jax")
    return short_version(p["keras"]) + ("" if backend == "jax" else f" ({backend})")


def reader_order(p):
    """The JAX probes by version, then the others (whose runs are apart)."""
    return p.get("backend", "jax") != "jax", version_key(p["keras"])


def writer_label(d, full=False):
    w = d["writer"]
    return f"{w['package']} {w['version'] if full else '.'.join(w['version'].split('.')[:2])}"


VERSION = re.compile(r"\d+(?:\.[\w…]+)*")


def runs(labels, present):
    """The `present` ones of the ordered `labels` as runs "first–last" of
    adjacent labels of the same package ("tf.keras 2.12–2.15")."""
    out, run = [], []
    for label in labels + [None]:
        if label in present and run and package(label) == package(run[-1]):
            run.append(label)
            continue
        if run:
            last = VERSION.search(run[-1]).group(0)
            out.append(run[0] if len(run) == 1 else VERSION.sub(lambda m: f"{m.group(0)}–{last}", run[0], count=1))
        run = [label] if label in present else []
    return ", ".join(out)


def package(label):
    """A label without its version: "tf.keras #", "Keras # (tensorflow)"."""
    return VERSION.sub("#", label, count=1)


def grouped(pairs):
    """(label, text) pairs collapsed by text: "a–b: text; c: other"."""
    order, by_text = [], {}
    for label, text in pairs:
        if text not in by_text:
            order.append(text)
        by_text.setdefault(text, []).append(label)
    if len(order) == 1:
        return order[0]
    labels = [label for label, _ in pairs]
    return "; ".join(f"{runs(labels, set(by_text[t]))}: {t}" for t in order)


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def rules_text(entry):
    """The table's rules of one class: "`rule` (key value, …); …"."""
    parts = {}
    for key, d in entry.get("drop", {}).items():
        when = "" if d["when"] == "any" else " " + " or ".join(json.dumps(v) for v in d["when"])
        parts.setdefault(d["rule"], []).append(key + when)
    for key, r in entry.get("rename", {}).items():
        parts.setdefault(r["rule"], []).append(f"{key} → {r['to']}")
    if "become" in entry:
        parts.setdefault(entry["become"]["rule"], []).append(f"becomes `{entry['become']['class']}`")
    for rule in entry.get("code_rules", []):
        targets = [f"`{c}`" for c in CODE_RULE_CLASSES.get(rule, ())]
        text = f"by the function it calls: {', '.join(targets[:-1])} or {targets[-1]}" if targets else None
        parts.setdefault(rule, []).extend([text] if text else [])
    return "; ".join(f"`{r}`" + (f" ({', '.join(keys)})" if keys else "") for r, keys in parts.items())


def status(entry):
    if entry is None:
        return "refused: no rule yet"
    rules = rules_text(entry)
    text = f"refused: {entry['refuse']}" if "refuse" in entry else f"migrated: {rules}" if rules else "identical"
    text += f"; needs `{entry['needs']}`" if "needs" in entry else ""
    return text + (f" ({entry['note']})" if "note" in entry else "")


def without_tensorflow(probe, error):
    """`error` is Keras 3 saying the class needs TensorFlow, in a probe
    whose venv has none."""
    return bool(error) and "requires TensorFlow" in error and not probe.get("tensorflow")


def accepted_text(probe, name):
    """What one Keras 3 made of one class: the keys it rejected."""
    c = probe["classes"][name]
    if not c["exists"]:
        return "no such class"
    results = [r for rs in c["writers"].values() for r in rs]
    if not results:
        return "not probed (no zoo case)"
    if all(without_tensorflow(probe, r["error"]) for r in results):
        return "cannot construct without TensorFlow"
    keys = sorted({k for r in results for k in r["rejected"]})
    text = ", ".join(keys) or "none"
    rewrites = sorted({g for r in results for g in r["rewrites"]})
    text += "".join(f" (and `{g}`)" for g in rewrites)
    errors = sorted({"cannot construct without TensorFlow" if without_tensorflow(probe, r["error"])
                     else f"cannot construct: {r['error']}" for r in results if r["error"]})
    return text + "".join(f"; {e}" for e in errors)


def variables_text(vs):
    return ", ".join(f"{n} {tuple(s)}" for n, s, _ in vs) or "none"


def variables_cell(name, dumps, probes):
    """The variables of the class's first zoo instance on each side, once
    if all agree."""
    pairs, first = [], None
    for d in dumps:
        insts = d["classes"].get(name, {}).get("instances")
        if insts:
            pairs.append((writer_label(d), variables_text(insts[0]["variables"])))
            first = first or writer_label(d, full=True)
    for p in probes:
        r = p["classes"].get(name, {}).get("writers", {}).get(first, [{}])[0]
        if r.get("variables") is not None:
            pairs.append((f"Keras {reader_label(p)}", variables_text(r["variables"])))
        elif r and not r["error"]:  # constructed, not built
            pairs.append((f"Keras {reader_label(p)}", "not built"))
    return grouped(pairs) if pairs else "not in the zoo"


def row(name, table, dumps, probes):
    writers = [writer_label(d) for d in dumps]
    present = {writer_label(d) for d in dumps if name in d["namespace"] or name in d["classes"]}
    probed = [(reader_label(p), accepted_text(p, name)) for p in probes if name in p["classes"]]
    cells = [f"`{name}`", runs(writers, present) or "—", status(table.get(name)),
             grouped(probed) if probed else "—", variables_cell(name, dumps, probes)]
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def page(table, dumps, probes):
    names = sorted(set(table) | {n for d in dumps for n in d["namespace"]} | {n for d in dumps for n in d["classes"]})
    writers = ", ".join(writer_label(d, full=True) for d in dumps)
    readers = ", ".join(reader_label(p) for p in probes)
    head = f"""# Layers

Every layer class of `keras.layers` that tf.keras (2.12 to 2.15) or tf_keras
(2.16 to 2.21) writes, and what `krepair migrate` does with it. Generated,
do not edit: CI writes it with scripts/layer_table.py from the layer table
(src/passes/migrate/layers.json), from what each pinned writer writes (the
models of testdata/zoo.py) and from what each pinned Keras 3 accepts, and
fails when they disagree.

- writers: {writers}
- Keras 3: {readers} (on JAX unless said)

To regenerate, with each writer's venv as W and each Keras 3 venv as K, one
at a time (and Keras 3.15 on TensorFlow, from the tf_keras 2.21 venv):

    $W/bin/python scripts/layer_table.py dump --out target/layer-table/dump-W.json
    $K/bin/python scripts/layer_table.py probe --dump target/layer-table/dump-*.json \\
        --out target/layer-table/probe-K.json
    KERAS_BACKEND=tensorflow .venvs/keras-tfk2.21/bin/python scripts/layer_table.py probe \\
        --dump target/layer-table/dump-*.json --out target/layer-table/probe-3.15-tensorflow.json
    python3 scripts/layer_table.py write --dump target/layer-table/dump-*.json \\
        --probe target/layer-table/probe-*.json --table src/passes/migrate/layers.json \\
        --out docs/layers.md

The columns:

- *written by*: the writers that have the class (in `keras.layers`, or as
  a layer of a zoo model).
- *status*: `identical` (the config loads as it is), `migrated` (by the
  rules listed, with the keys they rewrite), or `refused` (and why). Every
  class also gets the rules krepair applies to all layers: `batch-input-shape`
  (every layer but InputLayer), `orthogonal-initializer`, `dtype-policy`,
  `legacy-module`, `numpy-scalar`. Nested layers (of Bidirectional,
  TimeDistributed, RNN, StackedRNNCells) are rows of their own. "needs
  `tensorflow`": Keras 3 computes the class with TensorFlow whatever its
  backend; a Keras 3 without TensorFlow cannot construct it, and one with
  it must construct and build it with the writers' variables.
- *Keras 3 rejects*: the keys each Keras 3 refuses in the zoo's configs,
  found by handing them to its `from_config` and taking out each key its
  error names; "(and `rule`)": it also needed that krepair rewrite of a
  value or of the build_config; "not probed": the zoo does not build the
  class; "no such class": Keras 3 lacks it (the status says what krepair
  makes it).
- *variables*: names and shapes, in order, of the zoo's layer in each writer
  and in each Keras 3, built as Keras 3 loads it (from the writer's
  build_config, then called as the model calls it); once if all agree.

| class | written by | status | Keras 3 rejects | variables |
|---|---|---|---|---|
"""
    return head + "\n".join(row(n, table, dumps, probes) for n in names) + "\n"


def covers(name, entry, key):
    """The table (or the generic batch-input-shape rule) takes care of `key`."""
    code = set().union(*(CODE_RULE_KEYS.get(r, set()) for r in entry.get("code_rules", [])))
    return (key in entry.get("drop", {}) or key in entry.get("rename", {}) or "become" in entry
            or key in code or (key == "batch_input_shape" and name != "InputLayer"))


def replacements(entry):
    """The Keras 3 classes the table's `become` or code_rules make the
    class into, when Keras 3 lacks it."""
    code = [c for r in entry.get("code_rules", []) for c in CODE_RULE_CLASSES.get(r, ())]
    return ([entry["become"]["class"]] if "become" in entry else []) + code


def replacement_problems(name, entry, probe):
    """(problem, writer, Keras version) of a class Keras 3 lacks, or of the
    classes the table replaces it with."""
    v, targets = reader_label(probe), replacements(entry)
    out = [(f"{name}: Keras 3 has no {t}, which the table makes it become", "", v)
           for t in targets if not probe["classes"].get(t, {}).get("exists")]
    if not targets and not probe["classes"][name]["exists"]:
        out.append((f"{name}: Keras 3 has no {name}; the table needs `become` or `refuse`", "", v))
    return out


def instance_problems(name, entry, probe, r, inst, keys):
    """Problems of one zoo instance `inst` of the class, probed as `r`."""
    out = [f"{name}: Keras 3 rejects `{k}` (written as {json.dumps(keys[k])}); the table neither drops nor renames it"
           for k in r["rejected"] if not covers(name, entry, k)]
    out += [f"{name}: Keras 3 needs krepair's `{g}`, which is not among its code_rules"
            for g in r["rewrites"] if g not in GENERIC_RULES and g not in entry.get("code_rules", [])]
    if r["error"] and not (entry.get("needs") == "tensorflow" and without_tensorflow(probe, r["error"])):
        hint = " (the table needs `\"needs\": \"tensorflow\"`)" if "requires TensorFlow" in r["error"] else ""
        out.append(f"{name}: Keras 3 cannot construct it ({inst['case']}): {r['error']}{hint}")
    if r["build_error"]:
        out.append(f"{name}: Keras 3 cannot build it ({inst['case']}): {r['build_error']}")
    mine = r["variables"]
    if mine is not None and [s for _, s, _ in mine] != [s for _, s, _ in inst["variables"]]:
        out.append(f"{name}: variables differ ({inst['case']}): tf.keras {variables_text(inst['variables'])};"
                   f" Keras 3 {variables_text(mine)}; make them agree or refuse the class")
    return out


def class_problems(name, entry, dumps, probe):
    """(problem, writer, Keras version) of one migrated class in one probe."""
    c = probe["classes"].get(name)
    if c is None:
        return []
    if replacements(entry) or not c["exists"]:
        return replacement_problems(name, entry, probe)
    out, by_label = [], {writer_label(d, full=True): d for d in dumps}
    for label, results in sorted(c["writers"].items()):
        cls = by_label[label]["classes"][name]
        out += [(text, writer_label(by_label[label]), reader_label(probe))
                for r, inst in zip(results, cls["instances"])
                for text in instance_problems(name, entry, probe, r, inst, cls["keys"])]
    return out


def built_in(name, entry, dumps, probe):
    """This probe constructs and builds every zoo instance of the class,
    with the writers' variables."""
    results = [r for rs in probe["classes"].get(name, {}).get("writers", {}).values() for r in rs]
    return bool(results) and all(r["variables"] is not None for r in results) \
        and not class_problems(name, entry, dumps, probe)


def tensorflow_problems(table, dumps, probes):
    """The classes that need TensorFlow that no probe with it builds."""
    return [f"{name}: the table says it needs TensorFlow, and no probed Keras 3 with TensorFlow"
            " constructs and builds it with the writers' variables"
            for name, entry in sorted(table.items()) if entry.get("needs") == "tensorflow"
            and not any(p.get("tensorflow") and built_in(name, entry, dumps, p) for p in probes)]


def problems(table, dumps, probes):
    """Each problem once, with the writers and Keras 3 versions that show it."""
    found = {}
    for name, entry in sorted(table.items()):
        for p in probes if "refuse" not in entry else []:
            for text, w, v in class_problems(name, entry, dumps, p):
                ws, vs = found.setdefault(text, ([], []))
                ws.append(w)
                vs.append(v)
    writers, readers = [writer_label(d) for d in dumps], [reader_label(p) for p in probes]
    return [f"{text} [{runs(writers, set(ws)) + '; ' if any(ws) else ''}Keras {runs(readers, set(vs))}]"
            for text, (ws, vs) in found.items()] + tensorflow_problems(table, dumps, probes)


def rewrite_notes(name, entry, insts, probes):
    """Keys the table rewrites that every probed Keras 3 takes (one without
    TensorFlow that cannot construct the class aside), and drops of a
    value the zoo writes that the table refuses."""
    results = [r for p in probes for rs in p["classes"].get(name, {}).get("writers", {}).values() for r in rs
               if not without_tensorflow(p, r["error"])]
    rejected = {k for r in results for k in r["rejected"]}
    written = {k for i in insts for k in i["config"]} if results and all(not r["error"] for r in results) else set()
    renamed = [k for k, r in entry.get("rename", {}).items() if r["rule"] not in DEPRECATION_RENAMES]
    out = [f"{name}: the table rewrites `{key}`, which no probed Keras 3 rejects"
           for key in [*entry.get("drop", {}), *renamed] if key in written and key not in rejected]
    for key, d in entry.get("drop", {}).items():
        refused = {json.dumps(i["config"][key]) for i in insts if key in i["config"]} - {
            json.dumps(v) for v in (d["when"] if d["when"] != "any" else [])}
        if d["when"] != "any" and refused:
            out.append(f"{name}: the zoo writes {key} {', '.join(sorted(refused))}, which the table refuses")
    return out


def notes(table, dumps, probes):
    """What does not fail the check but a reader of the table should know:
    migrated classes the zoo does not build, and rewrite_notes."""
    out = []
    for name, entry in sorted(table.items()):
        insts = [i for d in dumps for i in d["classes"].get(name, {}).get("instances", [])]
        if "refuse" in entry or replacements(entry):
            continue
        out += rewrite_notes(name, entry, insts, probes) if insts else [
            f"{name}: migrated, but the zoo does not build it: not probed"]
    return out


def write(args):
    """The `write` command: any Python 3.11, no Keras."""
    table = load_json(args.table)["classes"]
    dumps = sorted((load_json(p) for p in args.dump), key=lambda d: (version_key(d["writer"]["version"])))
    probes = sorted((load_json(p) for p in args.probe), key=reader_order)
    text, found = page(table, dumps, probes), problems(table, dumps, probes)
    found += keras3_class_problems(probes, os.path.join(ROOT, "src/passes/migrate/keras3_classes.json"))
    if not args.check:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"{args.out}: {len(text.splitlines())} lines")
    stale = []
    if args.check:
        old = load_text(args.out) if os.path.exists(args.out) else ""
        stale = list(difflib.unified_diff(old.splitlines(), text.splitlines(), args.out, "generated", lineterm="", n=0))
    for line in stale[:40] + found + [f"note: {n}" for n in notes(table, dumps, probes)]:
        print(line)
    if args.check and (stale or found):
        print(f"layer table check failed: {'the page is stale; ' if stale else ''}{len(found)} problem(s)")
        sys.exit(1)
    if args.check:
        print(f"layer table check passed: {args.out} is up to date, no problems")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="in a tf.keras venv: what this writer writes")
    d.add_argument("--out", required=True)
    pr = sub.add_parser("probe", help="in a Keras 3 venv: what this Keras 3 accepts of the dumps")
    pr.add_argument("--dump", action="extend", nargs="+", required=True)
    pr.add_argument("--out", required=True)
    w = sub.add_parser("write", help="join dumps, probes and the table into the page")
    w.add_argument("--dump", action="extend", nargs="+", required=True)
    w.add_argument("--probe", action="extend", nargs="+", required=True)
    w.add_argument("--table", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    a = p.parse_args()
    {"dump": dump, "probe": probe, "write": write}[a.command](a)


if __name__ == "__main__":
    main()
