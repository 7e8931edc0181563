"""Benchmark purchase predictions: fit BG/NBD + Gamma-Gamma and score 1 M customers.

Why: the issue asks that fitting and scoring 1 M customers on a 2-core machine take well under
a minute after the first compile, with scoring in bounded-memory batches. This is a script, not
a test: timings depend on the machine (and on whatever else runs on it).

    .venv/bin/python benchmarks/bench_predictions.py [--customers 1000000]
        [--batch-size 200000] [--sample 250000] [--fresh-compiledir] [--json out.json]

What it reports:
* ``warm-up``: importing pymc-marketing and fitting both models once on 2 000 customers. This is
  the "first compile": pytensor builds and compiles the model graphs (C code is cached on disk,
  so it is only slow the very first time on a machine; ``--fresh-compiledir`` uses an empty
  temporary cache to measure that worst case).
* ``fit + score`` on all customers, split into the stages, with the pymc-marketing MAP fit on
  everyone (the default) and, with ``--sample N``, on a random sample of N customers while still
  scoring everyone (``max_fit_customers``).
* the independent scipy MLE on the same data, for reference and as a check of the parameters.
* peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRUTH = {"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5}
GG_TRUTH = {"p": 6.0, "q": 4.0, "v": 15.0}
AS_OF = date(2024, 6, 30)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(label: str, results: dict, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - start, 2)
    print(f"  {label:<34} {results[label]:>7.2f} s   (peak RSS {_peak_rss_mb():,.0f} MB)")
    return out


def _fit_and_score(P, features, batch_size: int, sample: int | None, tag: str) -> dict:
    res: dict = {}
    print(f"\n{tag}")
    total = time.perf_counter()
    scorer, bg, gg = _timed(
        "fit (prepare, BG/NBD, Gamma-Gamma)",
        res,
        P.fit_models,
        features,
        AS_OF,
        max_fit_customers=sample,
    )
    prepared = _timed("prepare features for scoring", res, P.prepare_features, features)
    rows = 0
    start = time.perf_counter()
    for batch in P.iter_predictions(prepared, scorer, batch_size, prepared=True):
        rows += len(batch)  # a writer would append each batch to DuckDB here
    res["score (batched)"] = round(time.perf_counter() - start, 2)
    print(f"  {'score (batched)':<34} {res['score (batched)']:>7.2f} s   ({rows:,} rows)")
    res["total"] = round(time.perf_counter() - total, 2)
    print(f"  {'TOTAL fit + score':<34} {res['total']:>7.2f} s")
    res["bg_nbd"] = {k: round(v, 5) for k, v in bg.params.items()}
    res["gamma_gamma"] = {k: round(v, 5) for k, v in gg.params.items()}
    res["customers_used"] = bg.customers_used
    res["newton_step_se"] = bg.diagnostics["newton_step_se"]
    print(f"  BG/NBD {res['bg_nbd']} (truth {TRUTH}), customers used {bg.customers_used:,}")
    print(f"  Gamma-Gamma {res['gamma_gamma']} (truth {GG_TRUTH})")
    return res


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=None, help="also fit on a sample of N")
    parser.add_argument("--fresh-compiledir", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.fresh_compiledir:
        # Must happen before pytensor is imported (predictions imports it lazily).
        compiledir = tempfile.mkdtemp(prefix="bench-pytensor-")
        os.environ["PYTENSOR_FLAGS"] = f"compiledir={compiledir}"

    from customer_warehouse import predictions as P

    results: dict = {"customers": args.customers, "cpus": os.cpu_count()}
    print(f"{args.customers:,} simulated customers, batch size {args.batch_size:,}")
    features = _timed(
        "simulate (not counted)",
        results,
        P.simulate_bg_nbd,
        args.customers,
        TRUTH,
        max_T=730.0,
        gg_params=GG_TRUTH,
        seed=1,
    )
    features["recency"] = features["recency"].round()  # integer days, like the mart
    features["T"] = features["T"].round()

    small = features.head(2000)
    _timed("warm-up: import + first compile", results, P.fit_models, small, AS_OF)

    results["full"] = _fit_and_score(P, features, args.batch_size, None, "fit on everyone")
    if args.sample:
        results["sample"] = _fit_and_score(
            P, features, args.batch_size, args.sample, f"fit on a sample of {args.sample:,}"
        )
    print("\nreference")
    mle = _timed("independent scipy MLE (BG/NBD)", results, P.fit_bg_nbd_mle, features)
    results["mle"] = {k: round(v, 5) for k, v in mle.params.items()}
    rel = max(abs(results["full"]["bg_nbd"][k] / mle.params[k] - 1) for k in P.BG_NBD_PARAMS)
    results["max_rel_diff_pymc_vs_mle"] = rel
    results["peak_rss_mb"] = round(_peak_rss_mb())
    print(f"  max relative difference pymc MAP vs scipy MLE: {rel:.2e}")
    print(f"\npeak RSS {results['peak_rss_mb']:,} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
