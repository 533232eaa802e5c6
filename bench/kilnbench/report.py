"""results.json -> report.md (tables) + PNG plots (matplotlib, Agg backend).

Usable on its own: `python3 bench/report.py RESULTS.json [OUT_DIR]`. Without matplotlib the
tables are still written and the report says the plots were skipped.
"""

import json
import os

from . import stats

# The brief's numbering, so the report and the issue speak the same language.
NUMBERS = {"cold-jdk17": "1", "cold-jdk17-jar": "1b", "cold-jdk25": "2", "aot-jdk25": "3", "appcds-jdk17": "4", "criu-bare": "5",
           "podman": "6", "docker": "7", "kiln": "8", "kiln-serve": "8b"}
BASELINE = "cold-jdk17"
# Runs recorded before the suite moved to the Spring Boot 3 sample carry no "service" entry.
OLD_SERVICE = ("`examples/hello-spring` (Spring MVC 4.3 on Jetty 9.4, H2 seeded with 2,000 owners at start), "
               "its classes packed in one jar")
MIB = 1024 * 1024

PLOTS = {
    "startup": "startup.png",
    "first_requests": "first_requests.png",
    "memory": "memory.png",
    "memory_settle": "memory_settle.png",
    "phases": "phases.png",
}


# ------------------------------------------------------------------------------------------
# Figures


def fmt_ms(value):
    if value is None:
        return "–"
    if value >= 10000:
        return f"{value / 1000:.1f} s"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def fmt_mib(value):
    if value is None:
        return "–"
    return f"{value / MIB:.0f} MiB" if value >= 10 * MIB else f"{value / MIB:.1f} MiB"


def fmt_ratio(value):
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def measured(results, phase="startup"):
    """Samples that count: not discarded, no error."""
    return [s for s in results.get(phase, []) if not s.get("discarded") and "error" not in s]


def method_order(results):
    return [m["id"] for m in results["methods"]]


def labels(results):
    return {m["id"]: m["label"] for m in results["methods"]}


def startup_table_rows(results):
    """One row per method: summary of time to first response and the paired ratio to method 1."""
    samples = measured(results)
    by_method = {}
    for s in samples:
        by_method.setdefault(s["method"], {})[s["round"]] = s["ttfr_ms"]
    baseline = by_method.get(BASELINE, {})
    errors = {}
    for s in results.get("startup", []):
        if "error" in s and not s.get("discarded"):
            errors[s["method"]] = errors.get(s["method"], 0) + 1
    rows = []
    for m in results["methods"]:
        mid = m["id"]
        values = list(by_method.get(mid, {}).values())
        summary = stats.summary(values)
        ratios = stats.paired_ratios(by_method.get(mid, {}), baseline) if mid != BASELINE else [1.0] * len(values)
        ratio_summary = stats.summary(ratios)
        rows.append({
            "id": mid, "number": NUMBERS.get(mid, "?"), "label": m["label"], "status": m["status"],
            "reason": m.get("reason"), "summary": summary, "ratio": ratio_summary,
            "speedup": (1 / ratio_summary["median"]) if ratio_summary["median"] else None,
            "spread": stats.spread(values), "failed_runs": errors.get(mid, 0),
            "samples": [by_method[mid][r] for r in sorted(by_method.get(mid, {}))],
        })
    return rows


def first_requests_by_method(results):
    """method -> list (per request index) of the latencies over all measured runs."""
    table = {}
    for s in measured(results):
        lat = s.get("first_requests_ms") or []
        columns = table.setdefault(s["method"], [[] for _ in range(len(lat))])
        for i, value in enumerate(lat):
            if i < len(columns):
                columns[i].append(value)
    return table


def steady_by_method(results):
    return {s["method"]: s for s in results.get("steady", []) if "error" not in s}


def memory_one(results):
    """method -> medians of RSS, PSS, supervisor PSS after the first 50 requests."""
    out = {}
    for mid in method_order(results):
        mems = [s["memory"] for s in measured(results) if s["method"] == mid and s.get("memory")]
        if not mems:
            continue
        out[mid] = {
            "rss": stats.median([m["rss"] for m in mems]),
            "pss": stats.median([m["pss"] for m in mems]),
            "supervisor_pss": stats.median([(m.get("supervisor") or {}).get("pss", 0) for m in mems]),
            "supervisor": next(((m.get("supervisor") or {}).get("name") for m in mems if m.get("supervisor")), None),
            "runs": len(mems),
        }
    return out


def memory_n_rows(results):
    rows = {}
    for entry in results.get("memory_n", []):
        row = {"status": entry.get("status"), "reason": entry.get("reason"), "error": entry.get("error"), "n": entry.get("n")}
        samples = entry.get("samples") or []
        if samples:
            last = samples[-1]
            first = samples[0]
            row.update({
                "total_pss": last["total_pss"], "total_rss": last["total_rss"],
                "first_total_pss": first["total_pss"], "settle_s": last["t_s"],
                "supervisor_pss": last.get("total_supervisor_pss", 0), "ksm_merged": last.get("ksm_merged", 0),
                "instances": last.get("instances_measured"), "all_ready_ms": entry.get("all_ready_ms"),
                "series": [(s["t_s"], s["total_pss"]) for s in samples],
            })
        rows[entry["method"]] = row
    return rows


# ------------------------------------------------------------------------------------------
# Markdown


def machine_line(machine):
    if not machine:
        return "machine: unknown"
    mem = machine.get("mem_total_bytes")
    parts = [
        machine.get("os") or "?",
        f"Linux {machine.get('kernel')}",
        f"{machine.get('cpus')} cores ({machine.get('cpu_model') or '?'})",
        f"{mem / 2**30:.0f} GiB RAM" if mem else None,
        f"cgroup {machine.get('cgroup')}",
    ]
    return ", ".join(p for p in parts if p)


def versions_line(machine):
    keys = [("java17", "JDK 17"), ("java25", "JDK 25"), ("criu", "CRIU"), ("runc", "runc"), ("podman", "podman"),
            ("docker", "docker"), ("kiln", "kiln binary")]
    return "; ".join(f"{label}: `{machine.get(k)}`" for k, label in keys if machine and machine.get(k))


def startup_markdown_table(results):
    rows = startup_table_rows(results)
    lines = [
        "| # | method | runs | min | median | p90 | max | ratio to #1 (paired, median [min–max]) | speed-up vs #1 | noise: IQR / median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "not-run":
            lines.append(f"| {r['number']} | {r['label']} | not run: {r['reason']} | | | | | | | |")
            continue
        s, q = r["summary"], r["ratio"]
        ratio = "1 (baseline)" if r["id"] == BASELINE else (
            f"{fmt_ratio(q['median'])} [{fmt_ratio(q['min'])}–{fmt_ratio(q['max'])}]" if q["count"] else "–")
        speed = "–" if r["id"] == BASELINE or not r["speedup"] else f"{r['speedup']:.1f}×"
        noise = r["spread"]["iqr_pct"]
        runs = f"{s['count']}" + (f" ({r['failed_runs']} failed)" if r["failed_runs"] else "")
        lines.append(f"| {r['number']} | {r['label']} | {runs} | {fmt_ms(s['min'])} | **{fmt_ms(s['median'])}** | "
                     f"{fmt_ms(s['p90'])} | {fmt_ms(s['max'])} | {ratio} | {speed} | "
                     f"{'–' if noise is None else f'{noise:.0f} %'} |")
    return "\n".join(lines)


def first_requests_markdown(results):
    table = first_requests_by_method(results)
    steady = steady_by_method(results)
    name = labels(results)
    lines = [
        "| # | method | 1st request | 2nd | 3rd | median of 4th–10th | median of 11th–50th | all 50 (sum) | steady median | steady p99 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mid in method_order(results):
        cols = table.get(mid)
        if not cols:
            continue
        per_index = [stats.median(c) for c in cols]
        sums = []
        for s in measured(results):
            if s["method"] == mid and s.get("first_requests_ms"):
                sums.append(sum(s["first_requests_ms"]))
        st = steady.get(mid)
        st_med = stats.median(st["latencies_ms"]) if st else None
        st_p99 = stats.percentile(st["latencies_ms"], 99) if st else None
        lines.append(
            f"| {NUMBERS.get(mid, '?')} | {name[mid]} | {fmt_ms(per_index[0])} | {fmt_ms(per_index[1] if len(per_index) > 1 else None)} | "
            f"{fmt_ms(per_index[2] if len(per_index) > 2 else None)} | {fmt_ms(stats.median(per_index[3:10]))} | "
            f"{fmt_ms(stats.median(per_index[10:50]))} | {fmt_ms(stats.median(sums))} | {fmt_ms(st_med)} | {fmt_ms(st_p99)} |")
    return "\n".join(lines)


def memory_markdown(results):
    one = memory_one(results)
    steady = steady_by_method(results)
    nrows = memory_n_rows(results)
    name = labels(results)
    status = {m["id"]: m for m in results["methods"]}
    n = results.get("profile", {}).get("n_instances", 8)
    lines = [
        f"| # | method | RSS, 1 instance | PSS, 1 instance | PSS after steady state | per-instance supervisor (PSS) | "
        f"total PSS of {n} | total RSS of {n} | PSS of {n} / ({n} × PSS of 1) | of which KSM-merged | all {n} answering after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mid in method_order(results):
        if status[mid]["status"] == "not-run":
            lines.append(f"| {NUMBERS.get(mid, '?')} | {name[mid]} | not run: {status[mid]['reason']} | | | | | | | | |")
            continue
        o = one.get(mid, {})
        st = (steady.get(mid) or {}).get("memory") or {}
        nr = nrows.get(mid, {})
        sup = f"{fmt_mib(o.get('supervisor_pss'))} ({o['supervisor']})" if o.get("supervisor") else "none"
        if nr.get("total_pss") is not None:
            total_pss, total_rss = fmt_mib(nr["total_pss"]), fmt_mib(nr["total_rss"])
            share = f"{nr['total_pss'] / (n * o['pss']):.2f}" if o.get("pss") else "–"
            merged = fmt_mib(nr.get("ksm_merged")) if nr.get("ksm_merged") else "0"
            ready = fmt_ms(nr.get("all_ready_ms"))
        else:
            reason = nr.get("reason") or nr.get("error") or "not measured"
            word = {"skipped": "skipped", "failed": "failed"}.get(nr.get("status"), "not run")
            total_pss, total_rss, share, merged, ready = f"{word}: {reason.splitlines()[0]}", "", "", "", ""
        lines.append(f"| {NUMBERS.get(mid, '?')} | {name[mid]} | {fmt_mib(o.get('rss'))} | {fmt_mib(o.get('pss'))} | "
                     f"{fmt_mib(st.get('pss'))} | {sup} | {total_pss} | {total_rss} | {share} | {merged} | {ready} |")
    return "\n".join(lines)


def prepare_markdown(results):
    lines = ["| # | method | what is made before the first start | time to make it | size | note |", "|---|---|---|---|---|---|"]
    for m in results["methods"]:
        p = m.get("prepare") or {}
        mid = m["id"]
        if m["status"] == "not-run" and not p:
            continue
        if "checkpoint_ms" in p:
            what, ms, size, note = "checkpoint", p.get("checkpoint_ms"), p.get("snapshot_bytes"), p.get("snapshot_note", "")
            if p.get("cold_start_ms"):
                note = (note + "; " if note else "") + f"its cold start took {fmt_ms(p['cold_start_ms'])}"
        elif "training_ms" in p:
            what, ms, size, note = "archive (training run)", p.get("training_ms"), p.get("archive_bytes"), p.get("archive_note", "")
        else:
            continue
        if p.get("connections_closed_after_ms") is not None:
            note += f"; taken once the JVM had closed its last connection, {fmt_ms(p['connections_closed_after_ms'])} after the warmup"
        if mid == "kiln" and p.get("compact_ms") is not None:
            note += f"; full GC + trim {fmt_ms(p['compact_ms'])} before it"
        if mid == "docker" and p.get("daemon_start_ms"):
            note += f"; dockerd started in {fmt_ms(p['daemon_start_ms'])}"
        size_text = fmt_mib(size) if size else "–"
        lines.append(f"| {NUMBERS.get(mid, '?')} | {m['label']} | {what} | {fmt_ms(ms)} | {size_text} | {note} |")
    return "\n".join(lines)


def not_run_markdown(results):
    out = []
    for m in results["methods"]:
        if m["status"] == "not-run":
            out.append(f"- **{NUMBERS.get(m['id'], '?')}. {m['label']}**: not run: {m['reason']}")
            if m.get("error"):
                out.append("  ```\n" + "\n".join("  " + l for l in m["error"].strip().splitlines()[-15:]) + "\n  ```")
    skipped = [e for e in results.get("memory_n", []) if e.get("status") == "skipped"]
    if skipped:
        out.append(f"- {len(skipped)} method(s), {skipped[0].get('n')} instances side by side: skipped: {skipped[0].get('reason')}")
    for entry in results.get("memory_n", []):
        if entry.get("status") not in ("ok", "skipped"):
            label = labels(results).get(entry["method"], entry["method"])
            out.append(f"- **{NUMBERS.get(entry['method'], '?')}. {label}**, {entry.get('n')} instances side by side: "
                       f"{'not run' if entry.get('status') == 'not-run' else entry.get('status')}: {entry.get('reason') or ''}")
            if entry.get("error"):
                out.append("  ```\n" + "\n".join("  " + l for l in str(entry["error"]).strip().splitlines()[-8:]) + "\n  ```")
    return "\n".join(out) if out else "Every method ran."


def noise_markdown(results):
    samples = measured(results)
    if not samples:
        return "No measured runs."
    loads = [s.get("loadavg_1m") for s in samples if s.get("loadavg_1m") is not None]
    foreign = [s.get("foreign_jvms", 0) for s in samples]
    others = [s.get("others_cpu_cores_during_start") for s in samples if s.get("others_cpu_cores_during_start") is not None]
    cpus = (results.get("machine") or {}).get("cpus") or 0
    lines = [
        f"- 1-minute load average at the start of a run: min {min(loads):.2f}, median {stats.median(loads):.2f}, max {max(loads):.2f}." if loads else "",
        f"- JVMs on the machine not started by the benchmark, at the start of a run: min {min(foreign)}, max {max(foreign)}.",
        (f"- CPU used by processes the benchmark did not start, while a method was starting: median "
         f"{stats.median(others):.2f} cores, max {max(others):.2f} (of {cpus}); per method: "
         + ", ".join(f"{NUMBERS.get(mid, '?')}: {stats.median(v):.2f}" for mid, v in _others_by_method(samples).items())
         + "." + (" Other users' builds and tests ran alongside: the figures carry their noise, and interleaving "
                  "spreads it over every method." if stats.median(others) >= 0.1 else
                  " The machine was otherwise quiet.")) if others else "",
        "- Per method, the spread of the time to first response is in the first table (IQR as % of the median) and every sample is in the plot and in results.json.",
    ]
    return "\n".join(l for l in lines if l)


def _others_by_method(samples):
    out = {}
    for s in samples:
        if s.get("others_cpu_cores_during_start") is not None:
            out.setdefault(s["method"], []).append(s["others_cpu_cores_during_start"])
    return out


def kiln_detail_markdown(results):
    rows = [s for s in measured(results) if s["method"] == "kiln" and s.get("extra")]
    if not rows:
        return ""
    verify = stats.median([s["extra"].get("kiln_verify_ms") for s in rows])
    restore = stats.median([s["extra"].get("kiln_restore_ms") for s in rows])
    first = stats.median([s["extra"].get("kiln_first_response_ms") for s in rows])
    ttfr = stats.median([s["ttfr_ms"] for s in rows])
    return (f"kiln's own figures for the same runs (medians): verification of the snapshot "
            f"{fmt_ms(verify)}, then from the start of the restore: runc restore returned after {fmt_ms(restore)} "
            f"and the first response came {fmt_ms(first)} after it began; the harness saw its first 200 "
            f"{fmt_ms(ttfr)} after spawning `kiln run` (the whole command: starting the kiln process and the "
            f"verification included).")


def kiln_vs_criu(results):
    """`kiln run` (the whole command) against bare `criu restore -d` (the whole command), both from
    the spawn to the first 200, paired round by round: issue 17's first target is a ratio <= 1.
    None unless both ran."""
    by_method = {}
    for s in measured(results):
        by_method.setdefault(s["method"], {})[s["round"]] = s["ttfr_ms"]
    kiln, criu = by_method.get("kiln"), by_method.get("criu-bare")
    if not kiln or not criu:
        return None
    ratios = stats.paired_ratios(kiln, criu)
    return {"kiln": stats.summary(list(kiln.values())), "criu": stats.summary(list(criu.values())),
            "ratio": stats.summary(ratios), "pairs": len(ratios), "interval": stats.median_interval(ratios)}


def kiln_vs_criu_markdown(results):
    versus = kiln_vs_criu(results)
    if not versus:
        return ""
    r = versus["ratio"]
    low, high = versus.get("interval") or (None, None)
    if r["median"] is None:
        verdict = "no round ran both"
    else:
        verdict = (f"its median meets the target: kiln is {1 / r['median']:.2f}× as fast" if r["median"] <= 1
                   else f"its median misses the target: kiln takes {r['median']:.2f}× as long")
        if low is not None:
            decided = ("the run shows the target met" if high <= 1 else
                       "the run shows the target missed" if low > 1 else "the run does not decide the target")
            verdict += (f"; 95% interval of that median {fmt_ratio(low)}–{fmt_ratio(high)}, resampling the rounds: "
                        f"{decided}")
    lines = [
        "### `kiln run` against bare `criu restore` of the same service",
        "",
        "Both whole commands, from the spawn to the first HTTP 200 of `/health`, in the same rounds: "
        "`kiln run` with its verification, fresh sandbox, network and readiness probe, against `criu restore -d` "
        "of images dumped from the same JVM command line on the host (no sandbox, no verification). "
        "Issue 17's first target: kiln ≤ bare CRIU.",
        "",
        "| | runs | min | median | max |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("kiln", "`kiln run` (8)"), ("criu", "`criu restore -d` (5)")):
        s = versus[key]
        lines.append(f"| {label} | {s['count']} | {fmt_ms(s['min'])} | **{fmt_ms(s['median'])}** | {fmt_ms(s['max'])} |")
    lines.append(f"| kiln / criu-bare, paired by round | {versus['pairs']} | {fmt_ratio(r['min'])} | "
                 f"**{fmt_ratio(r['median'])}** | {fmt_ratio(r['max'])} |")
    lines += ["", f"kiln run / criu restore = **{fmt_ratio(r['median'])}** (median of {versus['pairs']} paired rounds; {verdict})."]
    return "\n".join(lines)


def service_line(results):
    service = results.get("service") or {}
    text = service.get("description") or OLD_SERVICE
    if service.get("extraction"):
        text += f"; extracted for every method but 1b: {service['extraction']}"
    return text


def service_name(results):
    sample = (results.get("service") or {}).get("sample") or "examples/hello-spring"
    return os.path.basename(sample)


def run_phases(sample):
    """The `phases` dict of one run (phase name -> ms, in the order the method reported them), or None.
    kiln's come from `kiln run --json` (the harness keeps them in the sample's extra); any method may
    put its own in the sample itself."""
    phases = sample.get("phases") or (sample.get("extra") or {}).get("phases")
    if not isinstance(phases, dict):
        return None
    clean = {str(k): float(v) for k, v in phases.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0}
    return clean or None


def phases_by_method(results):
    """{method id: {"phases": [names in reported order], "median_ms": {name: median}, "runs": n}} for the
    measured methods whose runs carry phases; methods without any are left out."""
    by_method = {}
    for s in measured(results):
        phases = run_phases(s)
        if phases:
            by_method.setdefault(s["method"], []).append(phases)
    out = {}
    for mid in method_order(results):
        runs = by_method.get(mid)
        if not runs:
            continue
        names = []
        for run in runs:
            names += [n for n in run if n not in names]
        # A phase a run did not report counts as 0 ms in that run (it did not happen there).
        out[mid] = {"phases": names, "runs": len(runs),
                    "median_ms": {n: stats.median([run.get(n, 0.0) for run in runs]) for n in names}}
    return out


def phase_names(table):
    """Every phase name of the table, in the order of the method that reports the most (kiln's
    include criu-bare's), so that the columns and the stacked bars follow the restore's order."""
    names = []
    for row in sorted(table.values(), key=lambda r: -len(r["phases"])):
        names += [n for n in row["phases"] if n not in names]
    return names


def phases_markdown(results):
    table = phases_by_method(results)
    if not table:
        return ""
    names = phase_names(table)
    name = labels(results)
    lines = ["| # | method | runs | " + " | ".join(names) + " | sum |", "|---|---|---:|" + "---:|" * (len(names) + 1)]
    for mid, row in table.items():
        cells = [fmt_ms(row["median_ms"][n]) if n in row["median_ms"] else "" for n in names]
        lines.append(f"| {NUMBERS.get(mid, '?')} | {name[mid]} | {row['runs']} | " + " | ".join(cells)
                     + f" | {fmt_ms(sum(row['median_ms'].values()))} |")
    return "\n".join(lines)


def build_markdown(results, plots):
    machine = results.get("machine") or {}
    profile = results.get("profile", {})
    policy = results.get("policy", {})
    n = profile.get("n_instances", 8)
    mode = "QUICK" if profile.get("quick") else "full"
    if profile.get("overridden"):
        mode += " (overridden: " + ", ".join(f"{k}={profile.get(k)}" for k in profile["overridden"]) + ")"
    parts = [
        "# kiln benchmark: time to first response, first requests, memory",
        "",
        f"Run {results.get('started_at')} → {results.get('finished_at')} ({mode} profile: {profile.get('rounds')} measured rounds"
        f"{' after one discarded warm-up round' if profile.get('warm_round', True) else ''}; took {results.get('duration_s', 0):.0f} s).",
        "",
        f"Machine: {machine_line(machine)}.",
        "",
        f"Versions: {versions_line(machine)}.",
        "",
        f"Service: {service_line(results)}. The same command line for every method"
        + (" (1b: `" + " ".join((results.get("service") or {}).get("executable_jar_command") or []) + "`)"
           if (results.get("service") or {}).get("executable_jar_command") else "") + ":",
        "",
        "```",
        " ".join(results.get("command") or []),
        "```",
        "",
        "How it was measured:",
        "",
    ]
    for key in ("warm_cache", "readiness", "client", "interleaving", "sandbox", "network", "jvm", "jar", "first_requests",
                "steady", "memory"):
        if policy.get(key):
            parts.append(f"- **{key.replace('_', ' ')}**: {policy[key]}")
    if policy.get("warmup"):
        parts.append(f"- **checkpoints and archives** are all trained with the same requests: {', '.join(policy['warmup'])}")
    parts += ["", "## Time to first response", "",
              "From spawning the start command to the first HTTP 200 of `/health` (kiln serve: from sending "
              "`GET /<snapshot>/health` to a gateway with zero instances).", "",
              startup_markdown_table(results), ""]
    versus = kiln_vs_criu_markdown(results)
    if versus:
        parts += [versus, ""]
    detail = kiln_detail_markdown(results)
    if detail:
        parts += [detail, ""]
    if plots.get("startup"):
        parts += [f"![time to first response]({plots['startup']})", ""]
    phases = phases_markdown(results)
    if phases:
        parts += ["### Where a start's time goes", "",
                  "Each phase's median over the runs, as the method itself reported it: kiln's from `kiln run --json` "
                  "(its verification, then each phase of the restore; CRIU's own restore time from its statistics, "
                  "taken out of runc's), criu-bare's from the `stats-restore` file CRIU writes; the rest of the "
                  "command is the time to first response minus those (starting and ending the kiln or criu process, "
                  "the harness's own request). The medians of the phases need not add up to the median of the "
                  "whole.", "", phases, ""]
        if plots.get("phases"):
            parts += [f"![where a start's time goes]({plots['phases']})", ""]
    parts += ["## Methods and measurements not run", "", not_run_markdown(results), "",
              "## The first requests after start", "",
              "Latency of each of the first 50 requests (`GET /owners/1` … `/owners/50`) right after the first "
              "/health 200, median over the runs for each position. Steady state: " + policy.get("steady", "") + ". "
              "8b's requests go through the gateway (one more hop, HTTP/1.1 proxying).", "",
              first_requests_markdown(results), ""]
    if plots.get("first_requests"):
        parts += [f"![latency of the first requests]({plots['first_requests']})", ""]
    parts += ["## Memory", "",
              f"One instance: median over the start-up runs, measured after the first 50 requests. {n} instances: "
              f"started side by side, each given the same 50 requests, then sampled every "
              f"{profile.get('sample_every_s')} s until the total PSS changed by less than 1 % over 4 s (at least "
              f"{profile.get('settle_min_s', profile.get('settle_s'))} s, at most {profile.get('settle_s')} s, the same "
              "rule for every method); the table shows the last sample. kiln's copies share the snapshot's pages "
              "they have not written (page images mapped copy-on-write, kiln's default `--share-memory mapped`); "
              "a snapshot baked with `--share-memory ksm` also has identical written pages merged, which takes "
              "~10–20 s to converge: the last sample is after it settled (see the settle plot). No other method "
              "shares more than the page cache. PSS splits shared pages (the JDK's and the jars' page cache, merged pages) "
              "between the processes sharing them, so the total PSS of N is what N instances cost together.", "",
              memory_markdown(results), ""]
    if plots.get("memory"):
        parts += [f"![memory]({plots['memory']})", ""]
    if plots.get("memory_settle"):
        parts += [f"![total PSS of the N instances over time]({plots['memory_settle']})", ""]
    parts += ["## Checkpoints and archives", "", prepare_markdown(results), "",
              "## Noise", "", noise_markdown(results), ""]
    if results.get("notes"):
        parts += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    if results.get("leftovers"):
        parts += ["## Left behind after clean-up", ""] + [f"- {x}" for x in results["leftovers"]] + [""]
    if plots.get("skipped"):
        parts += [f"Plots skipped: {plots['skipped']}", ""]
    parts += ["Raw data: `results.json` next to this file (every sample of every run, the host facts and the policy)."]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------
# Plots


def make_plots(results, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return {"skipped": f"matplotlib is not available to this python ({e}); run with /usr/bin/python3 "
                           "(Debian's python3-matplotlib, installed by bench/setup.sh)"}
    made = {}
    name = labels(results)
    order = method_order(results)
    colors = {mid: plt.get_cmap("tab10")(i % 10) for i, mid in enumerate(order)}
    status = {m["id"]: m for m in results["methods"]}

    # 1. time to first response: every sample, median marked, log scale
    rows = startup_table_rows(results)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    for y, r in enumerate(reversed(rows)):
        label = f"{r['number']}. {r['label']}"
        if r["status"] == "not-run" or not r["samples"]:
            ax.text(0.01, y, "not run: " + (r["reason"] or "no sample"), transform=ax.get_yaxis_transform(),
                    va="center", fontsize=8, color="0.4")
        else:
            ax.scatter(r["samples"], [y] * len(r["samples"]), s=18, alpha=0.6, color=colors[r["id"]], zorder=3)
            med = r["summary"]["median"]
            ax.plot([med, med], [y - 0.3, y + 0.3], color="black", lw=2, zorder=4)
            ax.text(med, y + 0.33, fmt_ms(med), ha="center", va="bottom", fontsize=7)
        ax.set_yticks(list(range(len(rows))))
    ax.set_yticklabels([f"{r['number']}. {r['label']}" for r in reversed(rows)], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("start command → first HTTP 200 (ms, log scale); bar: median, dots: runs")
    ax.set_title(f"{service_name(results)}: time to first response", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, PLOTS["startup"]), dpi=110)
    plt.close(fig)
    made["startup"] = PLOTS["startup"]

    # 2. latency of the first 50 requests
    table = first_requests_by_method(results)
    if table:
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for mid in order:
            cols = table.get(mid)
            if not cols:
                continue
            xs = list(range(1, len(cols) + 1))
            ax.plot(xs, [stats.median(c) for c in cols], marker=".", lw=1.2, color=colors[mid],
                    label=f"{NUMBERS.get(mid, '?')}. {name[mid]}")
        steady = steady_by_method(results)
        ax.set_yscale("log")
        ax.set_xlabel("request number after the first /health 200 (GET /owners/N)")
        ax.set_ylabel("latency (ms, log scale), median over runs")
        ax.set_title("latency of the first requests after start" + (" (steady state: right)" if steady else ""), fontsize=10)
        ax.grid(which="both", alpha=0.3)
        for mid, s in steady.items():
            if mid in colors:
                ax.plot([52, 55], [stats.median(s["latencies_ms"])] * 2, color=colors[mid], lw=3)
        if steady:
            ax.axvline(51, color="0.6", lw=0.8, ls=":")
            ax.text(53.5, ax.get_ylim()[1], "steady", ha="center", va="top", fontsize=7, color="0.4")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, PLOTS["first_requests"]), dpi=110)
        plt.close(fig)
        made["first_requests"] = PLOTS["first_requests"]

    # 3. memory: one instance (RSS, PSS) and N instances (total PSS)
    one = memory_one(results)
    nrows = memory_n_rows(results)
    n = results.get("profile", {}).get("n_instances", 8)
    if one or nrows:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.5 * len(order) + 2))
        ys = list(range(len(order)))
        ylabels = [f"{NUMBERS.get(mid, '?')}. {name[mid]}" for mid in reversed(order)]
        for y, mid in enumerate(reversed(order)):
            o = one.get(mid)
            if o:
                ax1.barh(y + 0.2, o["rss"] / MIB, height=0.38, color="0.75")
                ax1.barh(y - 0.2, o["pss"] / MIB, height=0.38, color=colors[mid])
                ax1.text(o["rss"] / MIB, y + 0.2, f" {o['rss'] / MIB:.0f}", va="center", fontsize=7)
                ax1.text(o["pss"] / MIB, y - 0.2, f" {o['pss'] / MIB:.0f}", va="center", fontsize=7)
            else:
                ax1.text(1, y, "not run" if status[mid]["status"] == "not-run" else "no sample", va="center", fontsize=7, color="0.4")
            nr = nrows.get(mid, {})
            if nr.get("total_pss") is not None:
                ax2.barh(y, nr["total_pss"] / MIB, height=0.6, color=colors[mid])
                ax2.text(nr["total_pss"] / MIB, y, f" {nr['total_pss'] / MIB:.0f}", va="center", fontsize=7)
            else:
                why = (nr.get("reason") or (nr.get("error") or "").split("\n")[0]
                       or (status[mid].get("reason") if status[mid]["status"] == "not-run" else None) or "not measured")
                word = {"skipped": "skipped", "failed": "failed"}.get(nr.get("status"), "not run")
                ax2.text(0.01, y, f"{word}: {why[:70]}", transform=ax2.get_yaxis_transform(), va="center", fontsize=7, color="0.4")
        ax1.set_yticks(ys)
        ax1.set_yticklabels(ylabels, fontsize=8)
        ax1.set_xlabel("MiB")
        ax1.set_title("one instance after 50 requests (median of runs)", fontsize=9)
        from matplotlib.patches import Patch
        ax1.legend(handles=[Patch(color="0.75", label="RSS"), Patch(color="0.35", label="PSS (method's colour)")],
                   fontsize=7, loc="lower right")
        ax2.set_yticks(ys)
        ax2.set_yticklabels([])
        ax2.set_xlabel("MiB")
        ax2.set_title(f"total PSS of {n} instances side by side (after settling)", fontsize=9)
        for ax in (ax1, ax2):
            ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, PLOTS["memory"]), dpi=110)
        plt.close(fig)
        made["memory"] = PLOTS["memory"]

    # 4. total PSS of N over time (KSM convergence)
    series = {mid: r["series"] for mid, r in nrows.items() if r.get("series")}
    if series:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        for mid in order:
            if mid in series:
                ts, ps = zip(*series[mid])
                ax.plot(ts, [p / MIB for p in ps], marker=".", color=colors[mid], label=f"{NUMBERS.get(mid, '?')}. {name[mid]}")
        ax.set_xlabel(f"seconds after the {n} instances served their first 50 requests")
        ax.set_ylabel(f"total PSS of {n} instances (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("memory of N instances while it settles", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, PLOTS["memory_settle"]), dpi=110)
        plt.close(fig)
        made["memory_settle"] = PLOTS["memory_settle"]

    # 5. where a start's time goes: one stacked bar per method whose runs report phases
    table = phases_by_method(results)
    if table:
        names = phase_names(table)
        phase_colors = {n: plt.get_cmap("tab20")(i % 20) for i, n in enumerate(names)}
        mids = list(table)
        fig, ax = plt.subplots(figsize=(9, max(0.6 * len(mids) + 1.4, 2.2)))
        for y, mid in enumerate(reversed(mids)):
            left = 0.0
            for n in table[mid]["phases"]:
                width = table[mid]["median_ms"][n]
                ax.barh(y, width, left=left, height=0.6, color=phase_colors[n], edgecolor="white", linewidth=0.5)
                if width >= 0.06 * max(sum(r["median_ms"].values()) for r in table.values()):
                    ax.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=7)
                left += width
            ax.text(left, y, f" {fmt_ms(left)}", va="center", fontsize=7)
        ax.set_yticks(list(range(len(mids))))
        ax.set_yticklabels([f"{NUMBERS.get(mid, '?')}. {name[mid]}" for mid in reversed(mids)], fontsize=8)
        ax.set_xlabel("ms (median of each phase over the runs)")
        ax.set_title("where a start's time goes", fontsize=10)
        from matplotlib.patches import Patch
        ax.legend(handles=[Patch(color=phase_colors[n], label=n) for n in names], fontsize=7, loc="center left",
                  bbox_to_anchor=(1.08, 0.5))
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, PLOTS["phases"]), dpi=110, bbox_inches="tight")
        plt.close(fig)
        made["phases"] = PLOTS["phases"]
    return made


def generate(results_path, out_dir=None, plots=True):
    out_dir = out_dir or os.path.dirname(os.path.abspath(results_path))
    with open(results_path) as f:
        results = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    made = make_plots(results, out_dir) if plots else {}
    text = build_markdown(results, made)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text, made
