"""The writer x loader matrix of Keras 3 archives (issue #33), from the
JSON files scripts/check_cross.py writes, as the Markdown table of
docs/version-matrix.md:

    python3 scripts/cross_matrix.py target/cross-check/matrix-*.json

Each cell: how many of the writer's zoo cases a plain load_model in the
loader loads and predicts the same with, before krepair and after
`krepair IN OUT`; then how many the report names as not loadable there
(`not-loadable-in`), and how many the writer's own Keras cannot reload.
"""

import json
import re
import sys


def key(v):
    return [int(x) for x in re.findall(r"\d+", v)[:2]]


def main(paths):
    cells = {}
    loaders = []
    writers = set()
    for p in paths:
        m = json.load(open(p))
        loaders.append(m["loader"])
        for w, row in m["writers"].items():
            writers.add(w)
            cells[(w, m["loader"])] = row
    if not cells:
        print("no matrix files", file=sys.stderr)
        return 1
    loaders.sort(key=key)
    writers = sorted(writers, key=lambda w: (w.startswith("cross-"), key(w.split("keras")[-1])))
    print("| writer \\ loader | " + " | ".join(loaders) + " |")
    print("|---|" + "---:|" * len(loaders))
    for w in writers:
        row = []
        for lo in loaders:
            c = cells.get((w, lo))
            if c is None:
                row.append("")
                continue
            n = c["cases"]
            before = c["before"].get("ok", 0) if c["before"] else "–"
            after = c["after"].get("ok", 0)
            extra = []
            if c["named"]:
                extra.append(f"{c['named']} named")
            if c["writer_bug"]:
                extra.append(f"{len(c['writer_bug'])} writer bug")
            row.append(f"{before} → **{after}**/{n}" + (f" ({', '.join(extra)})" if extra else ""))
        name = w.split("keras")[-1] + (" (committed cases)" if w.startswith("cross-") else "")
        print(f"| Keras {name} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
