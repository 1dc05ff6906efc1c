"""Text for people of ``mltools bench sum`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table
from mltools.results.describe import ci_percent, run_summary

__all__ = ["render_bench_sum"]


def _sig(v, digits=3):
    if v is None:
        return None
    if v == 0:
        return 0.0
    return float(f"{v:.{digits}g}")


def render_bench_sum(r) -> str:
    m = r.machine
    head = (f"mltools bench sum: {m.cpu_model_name}; kernels: {r.isa} "
            f"(available: {', '.join(r.isas_available)}); numpy {m.versions.get('numpy', '-')}, "
            f"Python {m.python_version}\n"
            f"min, median and max of {r.config.repeats} interleaved repeats, batches of >= {r.config.min_time_s:g} s "
            f"({r.config.clock} clock); "
            "ratio = time / numpy.sum time on the same array; errors against the exact sum")
    out = [head]
    cases = {c.name: c for c in r.cases}
    groups = {}
    for row in r.rows:
        groups.setdefault((row.dataset, row.dtype, row.layout), []).append(row)
    for (dataset, dtype, layout), rows in groups.items():
        shape = "1-D" if layout == "1d" else "(n/2, 2) C order, axis=0"
        t = Table(["n", "method", "ns/elem", "median", "max", "95% CI", "GB/s", "ratio", "ulps", "rel.err",
                   "cond", ""], title=f"\n{dataset} {dtype}, {shape}")
        for row in rows:
            case = cases.get(f"{dataset}/{dtype}/{layout}/n={row.n}/{row.method}")
            t.add(row.n, row.method, _sig(row.ns_per_element_min), _sig(row.ns_per_element_median),
                  _sig(row.ns_per_element_max), ci_percent(case.stats) if case else None,
                  _sig(row.gb_per_s), _sig(row.ratio_to_numpy), _sig(row.error_ulps, 2),
                  _sig(row.relative_error, 2), _sig(row.condition_number, 2), "noisy" if row.noisy else "")
        out.append(t.render())
    if r.cond_sweep:
        methods = sorted({p.method for p in r.cond_sweep})
        targets = sorted({p.target_condition_number for p in r.cond_sweep})
        t = Table(["cond"] + methods,
                  title=f"\nrelative error against condition number (n = {r.config.cond_sweep_n})")
        for target in targets:
            pts = {p.method: p for p in r.cond_sweep if p.target_condition_number == target}
            cond = next(iter(pts.values())).condition_number
            t.add(_sig(cond, 2), *[_sig(pts[m].relative_error, 2) if m in pts else None for m in methods])
        out.append(t.render())
    for n in r.notes:
        out.append(f"\nnote: {n}")
    out.append("\n" + run_summary(r.machine, r.run, r.interrupted))
    return "\n".join(out)
