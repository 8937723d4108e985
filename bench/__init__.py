"""regmgr's benchmarks (issue 5): what a user feels, measured from outside.

Run ``python -m bench`` (``--help`` for options; ``--quick`` for a small
run). Every scenario starts the embedded registry as its own process
(``regmgr serve``) and each client role as another (:mod:`bench.worker`),
then prints one Markdown table with the median and p99 of every figure.

* B1 restore: SIGKILL and restart the registry; until a Monitor elsewhere
  sees all N services again.
* B2 change latency: ``Service.update()`` in one process to ``on_mod`` in another.
* B3 churn: steady updates over many services; how far behind a Monitor is,
  and the CPU each process spends.
* B4 server: registrations/s, finds/s, and another client's find meanwhile.
* B5 memory: client RSS per registered service.
* B6 scale: how many services one process keeps registered, and what stops it.

Only the standard library, gevent and regmgr are used. Linux only: CPU and
memory come from ``/proc``, and times taken in different processes are
compared on the one ``time.monotonic()`` clock.
"""
