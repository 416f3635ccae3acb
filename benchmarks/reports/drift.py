"""The drift benchmark's report: the targets table and the details, written to `<out>.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.monitor_service import SOAK_POSTERS


def _verdict(passed: bool) -> str:
    return "yes" if passed else "**no**"


def _service_lines(service: dict[str, Any], args: dict[str, Any]) -> list[str]:
    metrics, ingest, setup = service["metrics"], service["ingest"], service["setup"]
    sweep = ", ".join(f"{run['threads']} threads {run['batches_per_s']:.1f}/s" for run in ingest["sweep"])
    return [
        f"- Service ({service['variant']}): `rooivalk monitor serve` as a subprocess (the client in this process, "
        f"keep-alive `http.client` connections), reference profile of {args['service_reference_rows']} rows, "
        f"window {setup['window_rows']} rows, two checks through POST /check before the timed phases "
        f"({setup['check_s'][0]:.2f} s, the first importing Evidently; then {setup['check_s'][1]:.2f} s); no "
        "check ran during them.",
        f"- /metrics ({service['variant']}): open-loop from {args['metrics_threads']} connections, latency from "
        f"each request's due time: p50 {metrics['p50_ms']:.2f}, p99 {metrics['p99_ms']:.2f}, max "
        f"{metrics['max_ms']:.1f} ms at {metrics['achieved_rps']:g} requests/s achieved; from the send p50 "
        f"{metrics['from_send']['p50_ms']:.2f} / p99 {metrics['from_send']['p99_ms']:.2f} ms; {metrics['errors']} "
        f"errors; body {setup['metrics_bytes']} bytes.",
        f"- Ingestion ({service['variant']}), {args['ingest_seconds']:g} s per thread count: {sweep}; the fastest "
        f"({ingest['threads']} threads): {ingest['batches']} batches, {ingest['rows_per_s']:,.0f} rows/s, POST "
        f"latency p50 {ingest['post']['p50_ms']:.1f} / p99 {ingest['post']['p99_ms']:.1f} ms, {ingest['refused']} "
        "refused.",
    ]


def _nodelay_lines(shipped: dict[str, Any], probe: dict[str, Any]) -> list[str]:
    return [
        "## Why every reply of the shipped service waits ~40 ms",
        "",
        "`rooivalk.monitoring.service._Handler` is a `BaseHTTPRequestHandler` with the defaults `wbufsize = 0` "
        "and `disable_nagle_algorithm = False`: a reply goes out as two `send()`s (status line + headers at "
        "`end_headers()`, then the body), so on a keep-alive connection Nagle holds the body until the client "
        "ACKs the headers, and the client delays that ACK (Linux: ~40 ms). Every reply waits ~40 ms whatever "
        f"its work (from the send, /metrics p50 {shipped['metrics']['from_send']['p50_ms']:.1f} ms); at 100 "
        "requests/s over 4 connections (one due every 40 ms each) the queue behind each connection grows for "
        "the whole run.",
        "",
        "The fix is one line in the handler class, `disable_nagle_algorithm = True` (socketserver then sets "
        "TCP_NODELAY on each connection), or writing headers and body in one `send()`. The same measurement on "
        "the service with that attribute patched in (`--nodelay-probe`):",
        "",
        "| variant | /metrics p50 / p99 (ms) | ingestion batches/s (best of the thread counts) |",
        "| --- | ---: | ---: |",
        *(
            f"| {run['variant']} | {run['metrics']['p50_ms']:.2f} / {run['metrics']['p99_ms']:.2f} | "
            f"{run['ingest']['batches_per_s']:.1f} ({run['ingest']['threads']} threads) |"
            for run in (shipped, probe)
        ),
        "",
    ]


def write_report(result: dict[str, Any], out: str) -> None:
    batch, service, fa, args = result["batch"], result["service"], result["false_alarms"], result["args"]
    metrics, ingest = service["metrics"], service["ingest"]
    lines = [
        "# Drift monitoring: batch check, service latency and ingestion, soak, false alarms (issue 6)",
        "",
        f"Reproduce ({result['wall_minutes']:.1f} min here; {result['machine']}):",
        "",
        f"    {result['command']}",
        "",
        "| what | measured | target | met |",
        "| --- | ---: | ---: | --- |",
        f"| batch check, {batch['rows']:,} vs {batch['rows']:,} rows x {batch['columns']} columns: rooivalk "
        f"`check_drift` / Evidently direct (medians of {len(batch['rooivalk_runs_s'])}) | {batch['ratio']:.3f} "
        f"({batch['rooivalk_s']:.2f} s / {batch['evidently_s']:.2f} s) | <= {batch['target']} | "
        f"{_verdict(batch['passed'])} |",
        f"| service as shipped: GET /metrics, {args['metrics_rps']:g}/s open-loop for {args['metrics_seconds']:g} s, "
        f"{service['setup']['feature_series']} per-feature series: p50 / p99 | {metrics['p50_ms']:.2f} / "
        f"{metrics['p99_ms']:.2f} ms | p99 < {metrics['target_p99_ms']:g} ms | {_verdict(metrics['passed'])} |",
        f"| service as shipped: POST /batches of {args['batch_rows']} rows x {batch['columns']} columns, "
        f"{ingest['threads']} client threads | {ingest['batches_per_s']:.1f} batches/s | "
        f">= {ingest['target_batches_per_s']:g} | {_verdict(ingest['passed'])} |",
    ]
    soak_result = result.get("soak")
    if soak_result:
        lines.append(
            f"| soak {soak_result['seconds']:g} s: server RSS slope over the second half | "
            f"{soak_result['slope_second_half_mb_per_min']:+.3f} MB/min | <= "
            f"{soak_result['target_slope_mb_per_min']:g} MB/min | {_verdict(soak_result['bounded'])} |"
        )
    lines += [
        f"| false alarms, {fa['trials']} same-distribution trials ({fa['current_rows']} vs "
        f"{fa['reference_rows']} rows) | {fa['rate']:.1%} ({fa['alarms']}) | <= {fa['tolerance']:.0%} | "
        f"{_verdict(fa['passed'])} |",
        "",
    ]
    probe = result.get("service_nodelay_probe")
    if probe:
        lines += _nodelay_lines(service, probe)
    lines += [
        "## Details",
        "",
        f"- Batch check runs (s): rooivalk {batch['rooivalk_runs_s']}, Evidently {batch['evidently_runs_s']} "
        f"(one untimed warm-up each first; rounds alternate). {batch['numerical']} numerical + "
        f"{batch['categorical']} categorical columns; current: 3 means shifted by 0.3, one scale x1.5, one category "
        f"mix evened: drift share {batch['drift_share']:.2f} ({', '.join(batch['drifted_columns'])}). Not timed: "
        f"`check_frame` on both frames, {batch['check_frame_s']:.2f} s. Both sides pay for Evidently rendering "
        "its plotly widgets inside `Report.run`, which `check_drift` never shows unless asked for HTML.",
        *_service_lines(service, args),
        *(_service_lines(probe, args) if probe else []),
    ]
    if soak_result:
        scrape = soak_result["metrics_scrape_2rps"]
        lines += [
            "- Soak (service as shipped, a plan with `monitoring.check_interval_s: "
            f"{soak_result['check_interval_s']:g}`): "
            f"{soak_result['batches_accepted']} batches accepted ({soak_result['batches_per_s']:.1f}/s of "
            f"{soak_result['batches_per_s_target']:g}/s due, from {SOAK_POSTERS} connections; "
            f"{soak_result['batches_refused']} refused), {soak_result['checks']} scheduled checks (mean "
            f"{soak_result['mean_check_s']} s). Server RSS (VmRSS, every second): start "
            f"{soak_result['rss_start_mb']} MB, after {soak_result['warmup_s']:g} s warm-up "
            f"{soak_result['rss_after_warmup_mb']} MB, peak {soak_result['rss_peak_mb']} MB, end "
            f"{soak_result['rss_end_mb']} MB; second half between {soak_result['rss_second_half_min_mb']} and "
            f"{soak_result['rss_second_half_max_mb']} MB.",
            f"- /metrics scraped at 2/s during the soak (ingestion and checks running): p50 {scrape['p50_ms']:.2f} "
            f"/ p99 {scrape['p99_ms']:.2f} / max {scrape['max_ms']:.1f} ms over {scrape['requests']} requests.",
        ]
    lines += [
        f"- False alarms: tests/unit/monitoring/synthetic.py `make_data` (6 numerical, prediction, confidence), "
        f"reference seed 0, current seeds 100..{99 + fa['trials']}, `MonitoringSpec()` defaults; mean drift share "
        f"{fa['mean_drift_share']}, max {fa['max_drift_share']}.",
        "",
    ]
    Path(f"{out}.md").write_text("\n".join(lines))
