"""Latency-aware routing: one of B's three instances gets +200 ms at t0; where does A's traffic go?

    python bench/routing.py [--after 30] [--steady-rps 50] [--fresh-callers 10] [--fresh-requests 10]

Runs tests/support/routing.py's experiment with real processes on loopback (a collector with its
control port, B's three instances behind sidecars, caller sidecars per balancer mode: round-robin,
local peak-EWMA, and mesh = peak-EWMA combined with the collector's weights) and prints, per mode:
the steady caller's share of requests to the slow instance after t0, the time until at most 10 %
of each second's requests go there, its p99 after t0 and the ratio to round-robin's; and for the
light callers (many callers each sending little; by default starting after t0, so without any
history of B), their share and p99.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.routing import Experiment, Sample, p99_ms, slow_share  # noqa: E402


def p50_ms(samples: list[Sample]) -> float:
    latencies = sorted(s.latency_s for s in samples)
    return latencies[len(latencies) // 2] * 1000 if latencies else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=200.0, help="latency added to one instance at t0 (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of traffic before t0 (default %(default)s)")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of traffic after t0 (default %(default)s)")
    parser.add_argument("--steady-rps", type=float, default=50.0, help="the steady caller's rate per mode (default %(default)s)")
    parser.add_argument("--fresh-callers", type=int, default=10, help="callers without history per mode (default %(default)s)")
    parser.add_argument("--fresh-after", type=float, default=8.0,
                        help="when they start, seconds after t0; negative: before t0, so they have some history "
                             "(only requests after t0 are counted) (default %(default)s)")
    parser.add_argument("--fresh-requests", type=int, default=10, help="requests each sends (default %(default)s)")
    parser.add_argument("--fresh-rps", type=float, default=2.0, help="each one's rate (default %(default)s)")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    with tempfile.TemporaryDirectory(prefix="tracemesh-routing-") as directory:
        experiment = Experiment(
            Path(directory),
            delay_ms=args.delay_ms,
            warmup_s=args.warmup,
            after_s=args.after,
            steady_rps=args.steady_rps,
            fresh_callers=args.fresh_callers,
            fresh_after_s=args.fresh_after,
            fresh_requests=args.fresh_requests,
            fresh_rps=args.fresh_rps,
            say=lambda text: print(text, flush=True),
        )
        outcomes = experiment.run()
    rr_p99 = p99_ms(outcomes["round-robin"].steady_after(0))
    print()
    print(f"steady caller ({args.steady_rps:g} req/s per mode), {args.after:g}s after t0:")
    print(f"{'balancer':<12} {'requests':>8} {'to slow':>8} {'90% off in':>11} {'p50 ms':>7} {'p99 ms':>8} {'RR p99 /':>9}  failed")
    for mode, outcome in outcomes.items():
        samples = outcome.steady_after(0)
        shift = outcome.time_to_shift_s()
        p99 = p99_ms(samples)
        print(
            f"{mode:<12} {len(samples):>8} {slow_share(samples):>8.1%} {'never' if shift is None else f'{shift:.0f} s':>11} "
            f"{p50_ms(samples):>7.1f} {p99:>8.1f} {rr_p99 / p99:>8.1f}x  {sum(s.instance < 0 for s in samples)}"
        )
    print()
    print(
        f"{args.fresh_callers} light callers per mode from t0{args.fresh_after:+g}s, "
        f"{args.fresh_requests} requests each at {args.fresh_rps:g}/s (counted after t0):"
    )
    print(f"{'balancer':<12} {'requests':>8} {'to slow':>8} {'p50 ms':>7} {'p99 ms':>8}")
    for mode, outcome in outcomes.items():
        light = [sample for sample in outcome.fresh if sample.sent_at >= 0]
        if light:
            print(f"{mode:<12} {len(light):>8} {slow_share(light):>8.1%} {p50_ms(light):>7.1f} {p99_ms(light):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
