#!/usr/bin/env python3
"""Export a scikit-learn IsolationForest into PhantomNet's model format, as a parity fixture.

Fits sklearn.ensemble.IsolationForest (100 trees, max_samples=256, max_features=0.8,
random_state=20240607) on 3,000 synthetic 15-feature rows shaped like feature schema v1
(log-scaled counts, lengths, shares in [0, 1], a signed log ratio, two constant columns and
300 duplicated rows), writes the forest in the `phantomnet.iforest.v1` format and writes
tests/data/sklearn_parity.json:

    {"generator": ..., "sklearn": version, "numpy": version,
     "model": {<phantomnet.iforest.v1 model>},
     "points": [[15 values], ...],     # float32 values, written as exact float64
     "expected": [...]}                # -IsolationForest.score_samples(points)

The test points are fresh in-distribution rows, training rows, out-of-range rows (beyond the
training maxima and below the minima) and rows whose value sits on the float32 nearest to a
split threshold (exercising the float32 cast of the split rule). tests/model.rs loads the
fixture (no Python needed) and asserts PhantomNet's scores equal `expected` within 1e-9.

max_features < 1 makes each tree see a permuted subset of the columns; the exporter maps
tree feature indices through `estimators_features_` exactly when scikit-learn itself
indexes X by them (`_max_features != n_features`), so the fixture also guards that mapping.

Before writing, the script re-scores the exported arrays with a plain reimplementation and
checks it against scikit-learn, so a wrong export fails here rather than in the Rust test.

The committed fixture was made with scikit-learn 1.9.1, numpy 2.4.6, Python 3.11.7:

    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install scikit-learn numpy
    /tmp/skvenv/bin/python scripts/export_sklearn.py tests/data/sklearn_parity.json
"""

import json
import math
import sys

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest

SCHEMA_NAME = "phantomnet.features.v1"
FEATURE_NAMES = [
    "pkt_rate_out",
    "pkt_len_mean_out",
    "busiest_service_flows",
    "dst_hosts",
    "dst_ports",
    "syn_ratio_out",
    "unanswered_ratio",
    "icmp_share_out",
    "pkt_rate_in",
    "syn_rate_in",
    "syn_ratio_in",
    "out_in_ratio",
    "dns_qname_len",
    "dns_qname_entropy",
    "pkt_rate_z",
]
N = len(FEATURE_NAMES)
SEED = 20240607
N_TREES = 100
MAX_SAMPLES = 256
MAX_FEATURES = 0.8


def schema_hash():
    """FNV-1a 64 over the names joined by newlines (src/features.rs schema_hash)."""
    h = 0xCBF29CE484222325
    for b in "\n".join(FEATURE_NAMES).encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def c(n):
    """Average path length c(n), as sklearn's _average_path_length."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


def synthetic(rng, n):
    """Rows shaped like schema v1 windows: a quiet and a busy population."""
    busy = rng.random(n) < 0.2
    x = np.zeros((n, N))
    rate = np.where(busy, rng.lognormal(4.0, 1.0, n), rng.lognormal(1.0, 0.8, n))
    x[:, 0] = np.log1p(rate)
    x[:, 1] = np.clip(rng.normal(np.where(busy, 900, 180), 120, n), 60, 1514)
    x[:, 2] = np.log1p(rng.poisson(np.where(busy, 12, 2), n))
    x[:, 3] = np.log1p(rng.poisson(np.where(busy, 25, 3), n))
    x[:, 4] = np.log1p(rng.poisson(np.where(busy, 8, 2), n))
    x[:, 5] = rng.beta(1, 12, n)
    x[:, 6] = np.where(rng.random(n) < 0.7, 0.0, rng.beta(1, 5, n))
    x[:, 7] = 0.0  # constant column
    x[:, 8] = np.log1p(rate * rng.uniform(0.6, 1.4, n))
    x[:, 9] = 0.0  # constant column
    x[:, 10] = rng.beta(1, 20, n)
    x[:, 11] = rng.normal(np.where(busy, -3.0, 0.5), 1.5, n)
    has_dns = rng.random(n) < 0.4
    x[:, 12] = np.where(has_dns, rng.normal(16, 4, n).clip(3, 60), 0.0)
    x[:, 13] = np.where(has_dns, rng.normal(3.2, 0.3, n).clip(0.5, 4.5), 0.0)
    x[:, 14] = np.sign(z := rng.normal(0, 1.2, n)) * np.log1p(np.abs(z))
    return x.astype(np.float32)


def export_trees(forest, n_features):
    """The forest's trees as PhantomNet flat arrays, feature indices in X's columns."""
    subsample = forest._max_features != n_features
    trees = []
    for est, feats in zip(forest.estimators_, forest.estimators_features_):
        t = est.tree_
        leaf = t.children_left == -1
        feature = np.where(leaf, -1, t.feature)
        if subsample:
            feature = np.where(leaf, -1, np.asarray(feats)[np.maximum(t.feature, 0)])
        trees.append(
            {
                "feature": [int(v) for v in feature],
                "threshold": [float(v) for v in np.where(leaf, -2.0, t.threshold)],
                "left": [int(v) for v in t.children_left],
                "right": [int(v) for v in t.children_right],
                "n_samples": [int(v) for v in t.n_node_samples],
            }
        )
    return trees


def reference_scores(trees, psi, points):
    """Plain reimplementation of the PhantomNet scoring rule, to check the export."""
    cpsi = c(psi)
    out = []
    for x in points:
        total = 0.0
        for tr in trees:
            i, depth = 0, 0
            while tr["left"][i] != -1:
                f = tr["feature"][i]
                i = tr["left"][i] if float(x[f]) <= tr["threshold"][i] else tr["right"][i]
                depth += 1
            total += depth + c(tr["n_samples"][i])
        out.append(2.0 ** (-total / (len(trees) * cpsi)))
    return np.array(out)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/sklearn_parity.json"
    rng = np.random.default_rng(SEED)
    train = synthetic(rng, 2700)
    train = np.vstack([train, train[rng.integers(0, len(train), 300)]])  # duplicates

    forest = IsolationForest(
        n_estimators=N_TREES,
        max_samples=MAX_SAMPLES,
        max_features=MAX_FEATURES,
        random_state=SEED,
    ).fit(train)
    trees = export_trees(forest, N)

    train_scores = -forest.score_samples(train)
    lo, hi = train.min(axis=0).astype(np.float64), train.max(axis=0).astype(np.float64)
    fresh = synthetic(rng, 1200)
    seen = train[rng.integers(0, len(train), 200)]
    beyond = synthetic(rng, 300).astype(np.float64)
    pick = rng.random(beyond.shape) < 0.3
    span = np.maximum(hi - lo, 1.0)
    beyond = np.where(pick & (rng.random(beyond.shape) < 0.7), hi + rng.uniform(0.01, 5, beyond.shape) * span, beyond)
    beyond = np.where(pick & (rng.random(beyond.shape) < 0.3), lo - rng.uniform(0.01, 5, beyond.shape) * span, beyond)
    beyond = beyond.astype(np.float32)
    on_threshold = synthetic(rng, 300)
    for row in on_threshold:
        tr = trees[rng.integers(0, len(trees))]
        splits = [i for i, l in enumerate(tr["left"]) if l != -1]
        for i in rng.choice(splits, size=min(3, len(splits)), replace=False):
            row[tr["feature"][i]] = np.float32(tr["threshold"][i])
    points = np.vstack([fresh, seen, beyond, on_threshold]).astype(np.float32)
    expected = -forest.score_samples(points)

    mine = reference_scores(trees, forest._max_samples, points)
    worst = float(np.max(np.abs(mine - expected)))
    assert worst < 1e-12, f"export does not reproduce sklearn: max diff {worst}"

    as64 = train.astype(np.float64)
    model = {
        "format": "phantomnet.iforest.v1",
        "schema": {"name": SCHEMA_NAME, "hash": schema_hash(), "features": FEATURE_NAMES},
        "n_trees": len(trees),
        "max_samples": int(forest._max_samples),
        "c_psi": c(forest._max_samples),
        "trained": {
            "when": 1717718400,
            "on": ["synthetic (scripts/export_sklearn.py)"],
            "samples": len(train),
            "seed": SEED,
        },
        "calibration": {
            "score": {
                k: float(np.quantile(train_scores, q))
                for k, q in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999), ("max", 1.0)]
            },
            "features": {
                "min": [float(v) for v in as64.min(axis=0)],
                "p50": [float(v) for v in np.quantile(as64, 0.5, axis=0)],
                "p99": [float(v) for v in np.quantile(as64, 0.99, axis=0)],
                "max": [float(v) for v in as64.max(axis=0)],
                "mean": [float(v) for v in as64.mean(axis=0)],
                "std": [float(v) for v in as64.std(axis=0)],
            },
        },
        "trees": trees,
    }
    fixture = {
        "generator": "scripts/export_sklearn.py",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "model": model,
        "points": [[float(v) for v in row] for row in points],
        "expected": [float(v) for v in expected],
    }
    with open(out_path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(
        f"wrote {out_path}: {len(trees)} trees, {sum(len(t['left']) for t in trees)} nodes, "
        f"{len(points)} points, export check max diff {worst:.3g}"
    )


if __name__ == "__main__":
    main()
