"""The scenarios B1-B6 of issue 5, each measured from outside the client processes.

Each function takes a transport and a :class:`Scale` and returns table
rows. Every scenario starts its own registry and its own worker processes,
so one cannot warm up or slow down the next.
"""
from __future__ import annotations

import resource
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gevent

from .harness import Client, Row, clients, percentile, process_cpu, process_rss, registry

__all__ = ["Scale", "FULL", "QUICK", "SCENARIOS"]

#: The attributes every benchmark service shares: a Monitor or a
#: confirmation find filtered by them lists every service.
ATTRS = {"proto": "bench"}


@dataclass(frozen=True)
class Scale:
    """Sizes and repetitions; :data:`FULL` is what issue 5 asks for."""

    runs: int = 10  # repetitions of cheap measurements (B1 restarts, B2/B3 rounds)
    heavy_runs: int = 3  # repetitions of those that need a fresh 10,000-service registry
    b1_services: int = 1000
    b2_sizes: tuple[int, ...] = (50, 500, 1000)  # services registered, one after the other
    b2_updates: int = 100  # per run
    b3_services: int = 10_000
    b3_rate: float = 500.0
    b3_seconds: float = 10.0
    b4_services: int = 10_000
    b4_seconds: float = 5.0
    b5_sizes: tuple[int, ...] = (1000, 10_000)
    b5_styx_sizes: tuple[int, ...] = (1000, 10_000, 100_000)  # one session holds them all
    b6_step: int = 2000
    b6_limit: int = 100_000
    timeout: float = 300.0  # for any one step (registering, a restore)


FULL = Scale()
QUICK = Scale(runs=3, heavy_runs=1, b1_services=50, b2_sizes=(20, 50), b2_updates=20,
              b3_services=200, b3_rate=100.0, b3_seconds=2.0, b4_services=200,
              b4_seconds=1.0, b5_sizes=(50, 200), b5_styx_sizes=(50, 200), b6_step=100,
              b6_limit=300, timeout=60.0)


def _register(client: Client, prefix: str, n: int, scale: Scale, shards: int = 0) -> float:
    """Register ``n`` services in ``client``; seconds it took."""
    reply = client.call("register", prefix=prefix, n=n, attrs=ATTRS, timeout=scale.timeout,
                        shards=shards)
    if not reply["complete"]:
        raise RuntimeError(f"{client.name}: {reply['registered']} of {n} registered after "
                           f"{scale.timeout} s\n{client.stderr()}")
    return float(reply["seconds"])


def b1_restore(transport: str, scale: Scale) -> list[Row]:
    """SIGKILL and restart the registry: when does a Monitor elsewhere see all N again?

    From the moment the new registry has logged that it listens (every port
    bound) to the first moment when, in the other process, a find of the
    Monitor has listed all N services again and its view holds all N (the
    Monitor runs with ``settle=0``). The first restart is a warm-up.
    """
    n = scale.b1_services
    restores: list[float] = []
    confirmed: list[float] = []
    with registry() as reg, clients(reg, transport, "owner", "monitor") as (owner, monitor):
        first = _register(owner, "b1-", n, scale)
        monitor.call("monitor", attrs=ATTRS, key="", settle=0.0)
        monitor.call("view", count=n, timeout=scale.timeout)
        for run in range(scale.runs + 1):
            monitor.call("arm", count=n)
            reg.kill()
            reg.start()
            listening = time.monotonic()
            whole = monitor.call("whole", timeout=scale.timeout)["t"]
            registered = owner.call("registered", timeout=scale.timeout)["t"]
            if run:
                restores.append(whole - listening)
                confirmed.append(registered - listening)
            gevent.sleep(0.2)
    return [
        Row("B1", f"restore {n} services after SIGKILL", transport, restores, "s",
            "<= 0.5 s", max(restores) <= 0.5, runs=len(restores)),
        Row("B1", "... until the owner's Service.registered are all true", transport, confirmed,
            "s", runs=len(confirmed), note="polled every 20 ms"),
        Row("B1", f"first registration of {n}", transport, [first], "s"),
    ]


def b2_change(transport: str, scale: Scale) -> list[Row]:
    """``Service.update()`` in one process to ``on_mod`` in another, one at a time.

    At each size of ``b2_sizes`` in turn (services are added between
    them). Over Styx, also the T-messages the monitoring process sent per
    update: the request/reply round trips one Monitor refresh costs,
    event read included.
    """
    rows: list[Row] = []
    registered = 0
    with registry() as reg, clients(reg, transport, "owner", "monitor") as (owner, monitor):
        monitor.call("monitor", attrs=ATTRS, key="seq", settle=0.0)
        for n in scale.b2_sizes:
            _register(owner, "b2-", n - registered, scale)
            registered = n
            monitor.call("view", count=n, timeout=scale.timeout)
            latencies: list[float] = []
            requests: list[float] = []
            for run in range(scale.runs + 1):  # run 0 is a warm-up
                for k in range(scale.b2_updates):
                    index = (run * scale.b2_updates + k) * 7919 % n
                    value = f"{n}.{run}.{k}"
                    sent_before = monitor.call("requests")["sent"]
                    sent = owner.call("update", index=index, attrs={"seq": value})["t"]
                    seen = monitor.call("wait_mod", name=f"b2-{index}", value=value,
                                        timeout=10)["t"]
                    if run:
                        latencies.append(seen - sent)
                        if sent_before is not None:
                            requests.append(monitor.call("requests")["sent"] - sent_before)
            ms = [1000 * x for x in latencies]
            goal = n == max(scale.b2_sizes)  # issue 14: 1,000 services
            met = percentile(ms, 50) <= 1.0 and percentile(ms, 99) <= 10.0 if goal else None
            rows.append(Row("B2", f"update -> on_mod, {n} registered", transport, ms, "ms",
                            "p50 <= 1, p99 <= 10 ms" if goal else "", met, runs=scale.runs))
            if requests:
                rows.append(Row("B2", f"Styx T-messages of the monitor per update, {n} "
                                "registered", transport, requests, "requests",
                                "<= 3" if goal else "", max(requests) <= 3 if goal else None,
                                runs=scale.runs,
                                note="event read included"))
    return rows


#: One update as the workers report it: service name, sequence number, time.
Update = tuple[str, str, float]


def _lags(sent: Sequence[Update], seen: Sequence[Update]) -> tuple[list[float], int]:
    """How long each sent update took to show in the monitor; and how many never did.

    An update counts as seen when the monitor first reports its service with
    that sequence number or a later one (a later update may overtake it).
    """
    by_name: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for name, value, t in seen:
        seqs, times = by_name[name]
        seqs.append(int(value))
        times.append(t)
    lags: list[float] = []
    missed = 0
    for name, value, t in sent:
        seqs, times = by_name.get(name, ([], []))
        arrival = min((when for seq, when in zip(seqs, times) if seq >= int(value)),
                      default=None)
        if arrival is None:
            missed += 1
        else:
            lags.append(arrival - t)
    return lags, missed


def b3_churn(transport: str, scale: Scale) -> list[Row]:
    """Updates at a steady rate over many services; how far behind is a Monitor?"""
    n = scale.b3_services
    lags: list[float] = []
    missed = 0
    owner_cpu: list[float] = []
    monitor_cpu: list[float] = []
    server_cpu: list[float] = []
    with registry() as reg, clients(reg, transport, "owner", "monitor") as (owner, monitor):
        _register(owner, "b3-", n, scale)
        monitor.call("monitor", attrs=ATTRS, key="seq", settle=0.0)
        monitor.call("view", count=n, timeout=scale.timeout)
        assert reg.proc is not None
        for _ in range(scale.runs):
            monitor.call("take_mods")
            before = monitor.call("usage")["cpu"], process_cpu(reg.proc.pid)
            churn = owner.call("churn", rate=scale.b3_rate, seconds=scale.b3_seconds, key="seq")
            gevent.sleep(1.0)  # time for the last updates to arrive; they may be late
            after = monitor.call("usage")["cpu"], process_cpu(reg.proc.pid)
            run_lags, run_missed = _lags(churn["sent"], monitor.call("take_mods")["mods"])
            lags += run_lags
            missed += run_missed
            wall = churn["wall"]
            owner_cpu.append(100 * churn["cpu"] / wall)
            monitor_cpu.append(100 * (after[0] - before[0]) / wall)
            server_cpu.append(100 * (after[1] - before[1]) / wall)
    ms = [1000 * x for x in lags]
    note = f"{scale.b3_rate:g} updates/s for {scale.b3_seconds:g} s over {n}; {missed} never seen"
    met = missed == 0 and percentile(ms, 99) <= 25.0
    return [
        Row("B3", "monitor lag behind updates", transport, ms, "ms", "p99 <= 25 ms", met,
            note, runs=scale.runs),
        Row("B3", "CPU of the updating client", transport, owner_cpu, "% of a core"),
        Row("B3", "CPU of the monitoring client", transport, monitor_cpu, "% of a core"),
        Row("B3", "CPU of the registry", transport, server_cpu, "% of a core"),
    ]


def b4_server(transport: str, scale: Scale) -> list[Row]:
    """Registrations/s, then finds/s (full and selective) while a probe checks responsiveness.

    Also the registry's CPU per find of each kind, over the finder's finds
    (the probe's, one every 20 ms, are counted in the CPU, not the finds),
    and the finding client's: a full find is bound by the client's parse.
    """
    n = scale.b4_services
    shards = 100
    rates: dict[str, list[float]] = defaultdict(list)
    probes: dict[str, list[float]] = defaultdict(list)
    server: dict[str, list[float]] = defaultdict(list)
    finder_cpu: dict[str, list[float]] = defaultdict(list)
    for _ in range(scale.heavy_runs):
        with registry() as reg, clients(reg, transport, "owner", "finder", "probe") as (
                owner, finder, probe):
            assert reg.proc is not None
            rates["registrations"].append(n / _register(owner, "b4-", n, scale, shards))
            selective = {"shard": "7"}
            for kind, attrs, expect in (("idle", None, 0), ("full", {}, n),
                                        ("selective", selective, len(range(7, n, shards))),
                                        ("tenth", {"tenth": "3"}, len(range(3, n, 10)))):
                job = None
                cpu = process_cpu(reg.proc.pid)
                if attrs is not None:
                    job = gevent.spawn(finder.call, "finds", attrs=attrs,
                                       seconds=scale.b4_seconds, expect=expect)
                probe_reply = probe.call("probe", attrs=selective, seconds=scale.b4_seconds,
                                         interval=0.02)
                probes[kind] += [1000 * x for x in probe_reply["latencies"]]
                if job is not None:
                    reply = job.get()
                    rates[kind].append(reply["finds"] / reply["seconds"])
                    server[kind].append(1000 * (process_cpu(reg.proc.pid) - cpu) / reply["finds"])
                    finder_cpu[kind].append(1000 * reply["cpu"] / reply["finds"])
    runs = scale.heavy_runs
    return [
        Row("B4", f"registrations/s into an empty registry (to {n})", transport,
            rates["registrations"], "/s", runs=runs),
        Row("B4", f"finds/s, all {n} listed, one client", transport, rates["full"], "/s",
            runs=runs),
        Row("B4", f"finds/s, 1 in {shards} listed, one client", transport, rates["selective"],
            "/s", runs=runs),
        Row("B4", "finds/s, 1 in 10 listed, one client", transport, rates["tenth"], "/s",
            runs=runs),
        Row("B4", f"registry CPU per find, all {n} listed", transport, server["full"], "ms",
            runs=runs),
        Row("B4", f"registry CPU per find, 1 in {shards} listed", transport, server["selective"],
            "ms", runs=runs),
        Row("B4", "registry CPU per find, 1 in 10 listed", transport, server["tenth"], "ms",
            "<= 0.5 ms", max(server["tenth"]) <= 0.5, runs=runs),
        Row("B4", f"finding client's CPU per find, all {n} listed", transport,
            finder_cpu["full"], "ms", runs=runs),
        Row("B4", f"finding client's CPU per find, 1 in {shards} listed", transport,
            finder_cpu["selective"], "ms", runs=runs),
        Row("B4", "finding client's CPU per find, 1 in 10 listed", transport,
            finder_cpu["tenth"], "ms", runs=runs),
        Row("B4", "other client's find, registry idle", transport, probes["idle"], "ms",
            runs=runs),
        Row("B4", "other client's find, during full finds", transport, probes["full"], "ms",
            runs=runs),
        Row("B4", "other client's find, during selective finds", transport,
            probes["selective"], "ms", runs=runs),
    ]


def b5_memory(transport: str, scale: Scale) -> list[Row]:
    """Growth of the client's resident memory per registered service."""
    per_service: dict[int, list[float]] = defaultdict(list)
    sizes = scale.b5_styx_sizes if transport == "styx" else scale.b5_sizes
    for _ in range(scale.heavy_runs):
        with registry() as reg, clients(reg, transport, "owner") as (owner,):
            base = owner.call("usage")["rss"]
            total = 0
            for size in sizes:
                _register(owner, "b5-", size - total, scale)
                total = size
                per_service[size].append((owner.call("usage")["rss"] - base) / size / 1024)
    return [Row("B5", f"client RSS per service at {size}", transport, values, "KiB",
                "<= 4 KiB", max(values) <= 4, runs=scale.heavy_runs,
                note="user-space only (kernel socket buffers excluded)")
            for size, values in per_service.items()]


def b6_scale(transport: str, scale: Scale) -> list[Row]:
    """Register more and more services in one process, until it cannot (or the cap).

    Steps of ``b6_step`` services, each given 30 s. When one cannot
    complete, its unregistered services are dropped and the step halves,
    down to 1/16 of ``b6_step``, until one adds nothing; the result is the
    most services held registered, and the first error logged says what
    stopped it.
    """
    kept = 0
    seconds = 0.0
    step = scale.b6_step
    stop = f"cap of {scale.b6_limit} reached"
    with registry() as reg, clients(reg, transport, "owner") as (owner,):
        while kept < scale.b6_limit and step * 16 >= scale.b6_step:
            reply = owner.call("register", prefix="b6-", n=min(step, scale.b6_limit - kept),
                               attrs=ATTRS, timeout=30.0)
            seconds += reply["seconds"]
            if reply["complete"]:
                kept = reply["total"]
                continue
            stop = (f"last step: {reply['registered']} of {reply['total']} attached were "
                    f"registered; {_failure(owner.stderr(4000), reg.output)}")
            if reply["registered"] <= kept:
                break  # not one more: no room left
            kept = reply["registered"]
            owner.call("drop_unregistered")
            step //= 2
        rss = process_rss(owner.proc.pid)  # from outside: the worker may be out of fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [Row("B6", "services kept registered by one process", transport, [kept], "services",
                note=f"{stop}; {seconds:.0f} s registering, client RSS {rss / 2**20:.0f} MiB, "
                     f"fd limit {soft}/{hard}")]


def _failure(client_log: str, server_log: str) -> str:
    """The first error either side logged, for B6's note."""
    for who, text in (("client", client_log), ("registry", server_log)):
        for line in text.splitlines():
            if "rror" in line or "Too many" in line:
                message = line.split(" WARNING ", 1)[-1].split(" ERROR ", 1)[-1]
                return f"first error ({who}): {message.strip()[:160]}"
    return "registrations timed out, nothing logged"


Scenario = Callable[[str, Scale], list[Row]]

SCENARIOS: dict[str, Scenario] = {
    "B1": b1_restore,
    "B2": b2_change,
    "B3": b3_churn,
    "B4": b4_server,
    "B5": b5_memory,
    "B6": b6_scale,
}
