"""The load run's plot: connections, event-loop lag, CPU and RSS of the server over time, a line per variant."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

#: Lag samples are folded into buckets this long; the plot shows each bucket's worst.
LAG_BUCKET = 0.5


def _worst_per_bucket(lag: List[Tuple[float, float]], origin: float) -> Tuple[List[float], List[float]]:
    buckets: Dict[int, float] = {}
    for at, value in lag:
        key = int((at - origin) // LAG_BUCKET)
        buckets[key] = max(buckets.get(key, 0.0), value)
    keys = sorted(buckets)
    return [k * LAG_BUCKET for k in keys], [max(buckets[k] * 1e3, 0.1) for k in keys]


def plot(runs: Dict[str, Dict[str, Any]], cfg: Any, path: str) -> None:
    """Draw one run per variant (``load_ws.measure``'s raw result) into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, sharex=True, figsize=(10, 11))
    conns, lag, cpu, rss = axes
    for name, run in runs.items():
        origin, samples = run["start"], run["samples"]
        times = [s[0] - origin for s in samples]
        conns.plot(times, [s[3] - run["baseline_fds"] for s in samples], label=name)
        line, = lag.plot(*_worst_per_bucket(run["lag"], origin), label=name, linewidth=0.8)
        full = [(at - origin, seconds * 1e3) for at, seconds, generation in run["gc"] if generation == 2]
        lag.scatter([at for at, _ in full], [ms for _, ms in full], marker="x", color=line.get_color(), s=18)
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:])]
        cpu.plot(times[1:], rates, label=name, linewidth=0.8)
        rss.plot(times, [s[2] / 2**20 for s in samples], label=name)
    conns.set_ylabel("connections\n(server fds)")
    lag.set_ylabel(f"loop lag ms (worst per {LAG_BUCKET:g} s)\nx: a full GC's pause")
    lag.set_yscale("log")
    cpu.set_ylabel("server CPU s/s")
    rss.set_ylabel("server RSS MB")
    rss.set_xlabel("seconds since all connections were open (before 0: opening them)")
    for ax in axes:
        ax.axvline(0, color="grey", linewidth=0.6)
        for at in cfg.wave_times:
            ax.axvline(at, color="red", linewidth=0.5, linestyle=":")
        ax.axvline(cfg.idle_timeout, color="black", linewidth=0.6, linestyle="--")
        ax.grid(True, alpha=0.3)
    conns.legend(loc="upper right")
    conns.set_title(f"{cfg.total:,} WebSocket connections, {cfg.active:,} active; resets (dotted), "
                    f"idle timeout (dashed) at {cfg.idle_timeout:g} s", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
