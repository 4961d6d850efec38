"""The markdown report of bench/quantize_vs_ort.py, from its list of runs."""

import math
import statistics

SQNR_SLACK_DB = 0.3  # the issue: Kiln's SQNR >= ORT's - 0.3 dB on every model
COST_RATIO = 1 / 3  # the issue: wall time and peak RSS <= 1/3 of ORT's
FLAT_GROWTH = 1.10  # "flat": peak RSS at the largest sample count <= 110% of the smallest


def _f(x, fmt="{:.2f}"):
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return fmt.format(x)


def _delta(a, b):
    return None if a is None or b is None else a - b


def _ratio(a, b):
    return None if a is None or not b else a / b


def find(runs, **key):
    """The one run matching every key=value (None if there is none)."""
    for r in runs:
        if all(r.get(k) == v for k, v in key.items()):
            return r
    return None


def _ok(run, field):
    return run[field] if run and run.get("ok") and run.get(field) is not None else None


def table_rows(runs, models, methods, samples):
    """One row per model and method of the main comparison (at `samples` calibration samples)."""
    rows = []
    for model in models:
        for method in methods:
            key = dict(model=model, method=method, samples=samples, purpose="main")
            ort = find(runs, tool="ort", **key)
            pinned = find(runs, tool="kiln", variant="pinned", **key)
            nopin = find(runs, tool="kiln", variant="nopin", **key)
            if not (ort or pinned or nopin):
                continue
            row = {
                "model": model,
                "method": method,
                "ort_sqnr_db": _ok(ort, "sqnr_db"),
                "kiln_pinned_sqnr_db": _ok(pinned, "sqnr_db"),
                "kiln_nopin_sqnr_db": _ok(nopin, "sqnr_db"),
                "ort_wall_s": _ok(ort, "wall_s"),
                "kiln_wall_s": _ok(pinned, "wall_s"),
                "ort_rss_mib": _ok(ort, "peak_rss_mib"),
                "kiln_rss_mib": _ok(pinned, "peak_rss_mib"),
                "errors": {name: r["error"] for name, r in
                           (("ort", ort), ("kiln pinned", pinned), ("kiln no-pin", nopin))
                           if r and not r.get("ok")},
            }
            row["delta_pinned_db"] = _delta(row["kiln_pinned_sqnr_db"], row["ort_sqnr_db"])
            row["delta_nopin_db"] = _delta(row["kiln_nopin_sqnr_db"], row["ort_sqnr_db"])
            row["wall_ratio"] = _ratio(row["kiln_wall_s"], row["ort_wall_s"])
            row["rss_ratio"] = _ratio(row["kiln_rss_mib"], row["ort_rss_mib"])
            rows.append(row)
    return rows


def means(rows):
    """Mean SQNR per tool over the rows where every tool has a number (so the means compare)."""
    keys = ("ort_sqnr_db", "kiln_pinned_sqnr_db", "kiln_nopin_sqnr_db")
    present = [k for k in keys if any(r[k] is not None for r in rows)]
    common = [r for r in rows if all(r[k] is not None and math.isfinite(r[k]) for k in present)]
    out = {"rows": len(common)}
    for k in keys:
        out[k] = statistics.mean(r[k] for r in common) if common and k in present else None
    return out


def main_table(rows, m):
    lines = [
        "| model | method | ORT SQNR dB | Kiln SQNR dB pinned / no-pin | Δ dB pinned / no-pin "
        "| ORT wall s | Kiln wall s | ratio | ORT RSS MiB | Kiln RSS MiB | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {_f(r['ort_sqnr_db'])} "
            f"| {_f(r['kiln_pinned_sqnr_db'])} / {_f(r['kiln_nopin_sqnr_db'])} "
            f"| {_f(r['delta_pinned_db'], '{:+.2f}')} / {_f(r['delta_nopin_db'], '{:+.2f}')} "
            f"| {_f(r['ort_wall_s'])} | {_f(r['kiln_wall_s'])} | {_f(r['wall_ratio'])} "
            f"| {_f(r['ort_rss_mib'], '{:.0f}')} | {_f(r['kiln_rss_mib'], '{:.0f}')} "
            f"| {_f(r['rss_ratio'])} |")
    lines.append(
        f"| **mean** (n={m['rows']}) | | {_f(m['ort_sqnr_db'])} "
        f"| {_f(m['kiln_pinned_sqnr_db'])} / {_f(m['kiln_nopin_sqnr_db'])} "
        f"| {_f(_delta(m['kiln_pinned_sqnr_db'], m['ort_sqnr_db']), '{:+.2f}')} / "
        f"{_f(_delta(m['kiln_nopin_sqnr_db'], m['ort_sqnr_db']), '{:+.2f}')} | | | | | | |")
    return "\n".join(lines)


def pinning_rows(runs, models, methods, samples):
    """Kiln with LayerNorm/Softmax pinned to fp16, left float32, and quantized to uint8."""
    rows = []
    for model in models:
        for method in methods:
            key = dict(model=model, method=method, samples=samples, purpose="main")
            q8 = find(runs, tool="kiln", variant="q8norm", **key)
            if not q8:
                continue
            rows.append({
                "model": model,
                "method": method,
                "kiln_pinned_fp16_sqnr_db": _ok(find(runs, tool="kiln", variant="pinned", **key),
                                                "sqnr_db"),
                "kiln_float32_sqnr_db": _ok(find(runs, tool="kiln", variant="nopin", **key),
                                            "sqnr_db"),
                "kiln_uint8_sqnr_db": _ok(q8, "sqnr_db"),
                "ort_sqnr_db": _ok(find(runs, tool="ort", **key), "sqnr_db"),
                "error": None if q8.get("ok") else q8.get("error"),
            })
    return rows


def pinning_table(rows):
    lines = [
        "| model | method | Kiln LN/Softmax fp16 (pinned) | Kiln LN/Softmax uint8 "
        "| pinned − uint8 | Kiln LN/Softmax float32 (--no-pin) | ORT (quantizes them) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gain = _delta(r["kiln_pinned_fp16_sqnr_db"], r["kiln_uint8_sqnr_db"])
        lines.append(
            f"| {r['model']} | {r['method']} | {_f(r['kiln_pinned_fp16_sqnr_db'])} "
            f"| {_f(r['kiln_uint8_sqnr_db'])} | {_f(gain, '{:+.2f}')} "
            f"| {_f(r['kiln_float32_sqnr_db'])} | {_f(r['ort_sqnr_db'])} |")
    return "\n".join(lines)


def flat_rows(runs, model, method, counts):
    rows = []
    for tool, variant in (("ort", None), ("kiln", "pinned")):
        key = dict(tool=tool, model=model, method=method, purpose="flat")
        if variant:
            key["variant"] = variant
        per = {n: find(runs, samples=n, **key) for n in counts}
        if not any(per.values()):
            continue
        rss = {n: _ok(r, "peak_rss_mib") for n, r in per.items()}
        wall = {n: _ok(r, "wall_s") for n, r in per.items()}
        lo, hi = rss[counts[0]], rss[counts[-1]]
        rows.append({
            "tool": tool, "model": model, "method": method,
            "rss_mib": rss, "wall_s": wall,
            "growth": _ratio(hi, lo),
            "notes": {n: (r.get("error") or r.get("skipped")) for n, r in per.items()
                      if r and not r.get("ok")},
        })
    return rows


def flat_table(rows, counts):
    head = " | ".join(f"RSS MiB @{n}" for n in counts)
    walls = " | ".join(f"wall s @{n}" for n in counts)
    lines = [f"| tool | model | method | {head} | growth | {walls} |",
             "|---|---|---|" + "---:|" * (2 * len(counts) + 1)]
    for r in rows:
        rss = " | ".join(_f(r["rss_mib"][n], "{:.0f}") for n in counts)
        wall = " | ".join(_f(r["wall_s"][n]) for n in counts)
        lines.append(f"| {r['tool']} | {r['model']} | {r['method']} | {rss} "
                     f"| {_f(r['growth'], '{:.2f}×')} | {wall} |")
    return "\n".join(lines)


def targets(rows, m, pin_rows, flat):
    """The issue's targets, checked where both tools have numbers; one line each."""
    out = []
    both = [r for r in rows if r["ort_sqnr_db"] is not None and r["kiln_pinned_sqnr_db"] is not None]
    if not both:
        return ["(targets need both tools' numbers)"]
    low = [f"{r['model']}/{r['method']} {r['delta_pinned_db']:+.2f}" for r in both
           if r["delta_pinned_db"] < -SQNR_SLACK_DB]
    out.append(f"- SQNR ≥ ORT − {SQNR_SLACK_DB} dB on every model (Kiln default, pinned): "
               f"{len(both) - len(low)}/{len(both)}" + (f"; below: {', '.join(low)}" if low else ""))
    if m["ort_sqnr_db"] is not None and m["kiln_pinned_sqnr_db"] is not None:
        ok = m["kiln_pinned_sqnr_db"] >= m["ort_sqnr_db"]
        out.append(f"- mean SQNR ≥ ORT's: {'yes' if ok else 'NO'} "
                   f"({m['kiln_pinned_sqnr_db']:.2f} vs {m['ort_sqnr_db']:.2f} dB)")
    for field, what in (("wall_ratio", "wall time"), ("rss_ratio", "peak RSS")):
        have = [r for r in rows if r[field] is not None]
        bad = [f"{r['model']}/{r['method']} {r[field]:.2f}" for r in have if r[field] > COST_RATIO]
        out.append(f"- {what} ≤ 1/3 of ORT's: {len(have) - len(bad)}/{len(have)}"
                   + (f"; above: {', '.join(bad)}" if bad else ""))
    for r in flat:
        if r["tool"] == "kiln" and r["growth"] is not None:
            out.append(f"- Kiln peak RSS flat from {min(r['rss_mib'])} to {max(r['rss_mib'])} "
                       f"samples ({r['method']}, ≤ {FLAT_GROWTH:.2f}×): "
                       f"{'yes' if r['growth'] <= FLAT_GROWTH else 'NO'} ({r['growth']:.2f}×)")
    for r in pin_rows:
        if r["model"].startswith("bert") and None not in (r["kiln_pinned_fp16_sqnr_db"],
                                                          r["kiln_uint8_sqnr_db"]):
            ok = r["kiln_pinned_fp16_sqnr_db"] > r["kiln_uint8_sqnr_db"]
            out.append(f"- {r['model']}/{r['method']}: LN/Softmax fp16 beats uint8: "
                       f"{'yes' if ok else 'NO'}")
    return out
