"""Ratios between the server and its peers, and the printed table (tok/s, ms, MiB)."""

from __future__ import annotations

from typing import Any

from stats import ratio

NOISY_SHARE = 0.05  # share of all CPUs used by other processes that spoils a phase
ROW_LABELS = {
    "short_1_per_request": "server short, 1/req, {c} concurrent",
    "docs_1_per_request": "server docs, 1/req, {c} concurrent",
    "short_many_per_request": "server short, {p}/req, 4 concurrent",
    "short_lone": "server short, lone (1 at a time)",
    "docs_in_flight": "server docs, 1/req, {n} in flight",
}


def _tok_s(section: dict[str, Any], *keys: str) -> float | None:
    """tokens_per_s at ``section[keys...]``, or None where a run is missing or skipped."""
    for key in keys:
        if not isinstance(section, dict) or key not in section:
            return None
        section = section[key]
    return section.get("tokens_per_s") if isinstance(section, dict) else None


def ratios(summary: dict[str, Any]) -> dict[str, float | None]:
    """Server tok/s over the peers' on the same texts; lone latency over a naive forward."""
    rows = summary["server"].get("rows", {})
    peers = summary["peers"]
    short, docs = _tok_s(rows, "short_1_per_request"), _tok_s(rows, "docs_1_per_request")
    naive_short = peers.get("naive", {}).get("short", {})
    lone_p50 = rows.get("short_lone", {}).get("latency_p50_ms")
    return {
        "server_vs_naive_short": ratio(short, _tok_s(peers, "naive", "short")),
        "server_vs_naive_docs": ratio(docs, _tok_s(peers, "naive", "docs")),
        "server_vs_vllm_short": ratio(short, _tok_s(peers, "vllm", "short")),
        "server_vs_vllm_docs": ratio(docs, _tok_s(peers, "vllm", "docs")),
        "server_vs_vllm_eager_short": ratio(short, _tok_s(peers, "vllm-eager", "short")),
        "server_vs_vllm_eager_docs": ratio(docs, _tok_s(peers, "vllm-eager", "docs")),
        "many_vs_one_per_request_short": ratio(_tok_s(rows, "short_many_per_request"), short),
        "lone_p50_vs_naive_p50": ratio(lone_p50, naive_short.get("per_text_p50_ms")),
    }


def _num(value: float | None, spec: str, width: int) -> str:
    """``value`` formatted with ``spec`` and right-aligned, or a dash when missing."""
    return f"{value:{spec}}".rjust(width) if value is not None else "-".rjust(width)


def _x(value: float | None) -> str:
    """A ratio as ``1.23x``, or ``n/a``."""
    return f"{value:.2f}x" if value is not None else "n/a"


def print_table(summary: dict[str, Any]) -> None:
    """The runs (tok/s, req/s, latency ms, batch, padding), the ratios and the peak RSS."""
    config, corpus = summary["config"], summary["corpus"]
    layers = f", compile {config['compile']}" if "compile" in config else ""
    print(f"\nbackend {config['backend']}, dtype {config['dtype']}{layers}  ({config['machine']})")
    print(
        f"corpus: {corpus['short_texts']} short texts ({corpus['short_tokens']} tokens), "
        f"{corpus['documents']} documents ({corpus['document_tokens']} tokens)"
    )
    header = f"{'run':<38} {'tok/s':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}"
    header += f" {'batch':>6} {'pad':>5}"
    print(header)
    print("-" * len(header))
    _print_server_rows(summary)
    _print_peer_rows(summary["peers"])
    _print_ratios(summary)


def _print_server_rows(summary: dict[str, Any]) -> None:
    """One line per server row, or the reason there are none."""
    server, config = summary["server"], summary["config"]
    if "error" in server:
        print(f"server: {server['error']}")
        return
    labels = {
        key: label.format(
            c=config["concurrency"],
            p=config["texts_per_request"],
            n=server["rss"]["docs_in_flight"],
        )
        for key, label in ROW_LABELS.items()
    }
    for key, r in server["rows"].items():
        print(
            f"{labels[key]:<38} {r['tokens_per_s']:7.0f} {r['requests_per_s']:7.1f} "
            f"{r['latency_p50_ms']:8.0f} {r['latency_p95_ms']:8.0f} "
            f"{r['mean_batch_size']:6.1f} {r['mean_padding_ratio']:5.2f}"
        )


def _print_peer_rows(peers: dict[str, Any]) -> None:
    """tok/s of each peer per corpus; the naive loop's per-text p50/p95 in the ms columns."""
    for name, result in peers.items():
        if "skipped" in result:
            print(f"{name}: {result['skipped']}")
            continue
        for corpus in ("short", "docs"):
            r = result[corpus]
            label = f"{name} {corpus}" + (", 1 text/forward" if name == "naive" else ", offline")
            print(
                f"{label:<38} {r['tokens_per_s']:7.0f} {'':>7} "
                f"{_num(r.get('per_text_p50_ms'), '.0f', 8)} "
                f"{_num(r.get('per_text_p95_ms'), '.0f', 8)}"
            )


def _print_ratios(summary: dict[str, Any]) -> None:
    """The ratios, peak RSS in MiB and a mean-NLL check that every run scored the same."""
    r = summary["ratios"]
    print(
        f"\nserver/naive: short {_x(r['server_vs_naive_short'])}, "
        f"docs {_x(r['server_vs_naive_docs'])}"
    )
    print(
        f"server/vLLM:  short {_x(r['server_vs_vllm_short'])}, docs {_x(r['server_vs_vllm_docs'])}"
    )
    if r.get("server_vs_vllm_eager_short") is not None:
        print(
            f"server/vLLM eager: short {_x(r['server_vs_vllm_eager_short'])}, "
            f"docs {_x(r['server_vs_vllm_eager_docs'])}"
        )
    print(
        f"short texts {summary['config']['texts_per_request']}/request vs 1/request: "
        f"{_x(r['many_vs_one_per_request_short'])}"
    )
    print(f"lone request p50 / naive forward p50: {_x(r['lone_p50_vs_naive_p50'])}")
    rss = summary["server"].get("rss")
    if rss:
        print(
            f"server peak RSS: overall {rss['rss_peak_overall_mib']:.0f} MiB, "
            f"with {rss['docs_in_flight']} documents in flight "
            f"{rss['rss_peak_in_flight_mib']:.0f} MiB"
            + ("" if rss["hwm_reset"] else " (sampled VmRSS: VmHWM could not be reset)")
        )
    prefix = summary["server"].get("shared_prefix")
    if prefix:
        print(
            f"{prefix['continuations']} continuations of one {prefix['context_tokens']}-token "
            f"context: {1000 * prefix['shared_s']:.0f} ms shared (/v1/score/continuations) vs "
            f"{1000 * prefix['separate_s']:.0f} ms as separate texts: {_x(prefix['speedup'])}"
        )
    print(f"mean NLL (nats/token): {_nll_line(summary)}")
    _print_contention(summary["foreign_cpu_share"])


def _print_contention(shares: dict[str, float | None]) -> None:
    """The CPU share other processes took during each phase; a warning when it matters."""
    known = {name: share for name, share in shares.items() if share is not None}
    print("CPU used by other processes: " + ", ".join(f"{n} {s:.0%}" for n, s in known.items()))
    noisy = [name for name, share in known.items() if share > NOISY_SHARE]
    if noisy:
        print(
            f"WARNING: other processes competed for the CPUs during {', '.join(noisy)}: "
            "those numbers and the ratios built on them are not clean; run again on a quiet machine"
        )


def _nll_line(summary: dict[str, Any]) -> str:
    """Mean NLL per corpus from the server and each peer: they should agree closely."""
    rows = summary["server"].get("rows", {})
    sources = {
        "server": {"short": rows.get("short_1_per_request"), "docs": rows.get("docs_1_per_request")}
    }
    sources.update({name: p for name, p in summary["peers"].items() if "skipped" not in p})
    parts = []
    for corpus in ("short", "docs"):
        values = [
            f"{name} {source[corpus]['mean_nll']:.4f}"
            for name, source in sources.items()
            if source.get(corpus) and source[corpus].get("mean_nll") is not None
        ]
        parts.append(f"{corpus}: " + ", ".join(values))
    return "; ".join(parts)
