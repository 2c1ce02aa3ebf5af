#!/usr/bin/env python3
"""A complete producer that obeys Sluice decisions read from a directory.

The directory is either a ConfigMap mounted as a volume (``/etc/sluice/decisions`` in
examples/producer/producer-deployment.yaml) or one policy's directory written by the operator's local
mode (``sluice run --local --decisions-dir DIR`` writes ``DIR/<namespace>/<policy>/decision.json``).

Try it on one machine::

    python -m sluice.testing.mockcluster            # prints bootstrap.servers=127.0.0.1:...
    python examples/producer.py --bootstrap 127.0.0.1:PORT \\
        --decisions-dir ./decisions/shop/orders --topic orders --messages 1000

Requires ``pip install 'sluice-backpressure[producer]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from sluice import (
    CircuitOpenError,
    DirectoryDecisions,
    ProduceError,
    RetryPolicy,
    ShedError,
    StaleDecisionError,
    ThrottledProducer,
)

log = logging.getLogger("example-producer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Produce to Kafka while obeying Sluice decisions.")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers (host:port,...)")
    parser.add_argument("--decisions-dir", required=True, type=Path,
                        help="directory holding decision.json (a mounted ConfigMap or a local-mode policy dir)")
    parser.add_argument("--circuit-dir", action="append", type=Path, default=[],
                        help="extra directory holding a CircuitBreaker's circuit.json (repeatable)")
    parser.add_argument("--topic", required=True, help="topic to produce to")
    parser.add_argument("--dlq-topic", default=None, help="dead-letter topic (default: <topic>.dlq)")
    parser.add_argument("--priority", choices=["high", "medium", "low"], default="medium")
    parser.add_argument("--messages", type=int, default=0, help="how many messages (0: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=100.0, help="target messages per second before throttling")
    parser.add_argument("--on-stale", choices=["allow", "conservative", "block"], default="conservative")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # 1. The decision source. It reads the files once right here (so the first message already obeys
    #    the decision) and then polls them every 0.5 s in a background thread; produce() never does I/O.
    #    A mounted ConfigMap changes by the kubelet's atomic "..data" symlink swap, which it follows.
    decisions = DirectoryDecisions(args.decisions_dir, poll_interval=0.5, circuit_paths=args.circuit_dir)

    # 2. Metrics go to a registry we own (not the process-wide default one).
    registry = CollectorRegistry()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)

    # 3. The producer: idempotent by default (enable.idempotence=true, acks=all), so librdkafka's own
    #    retries never duplicate. Sheds and permanently failing messages go to the dead-letter topic with
    #    sluice.* headers saying why; a decision that goes stale (operator down) means conservative delays.
    producer = ThrottledProducer(
        {"bootstrap.servers": args.bootstrap, "client.id": "sluice-example-producer"},
        decisions,
        dlq_topic=args.dlq_topic or f"{args.topic}.dlq",
        on_shed="dlq",
        on_stale=args.on_stale,
        retry=RetryPolicy(max_attempts=40, initial_delay=0.01, max_delay=1.0, deadline=30.0),
        metrics_registry=registry,
    )

    # 4. Stop cleanly on SIGTERM (Kubernetes) and Ctrl-C: finish the current message, then flush.
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("signal %d: stopping after the current message", signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sent = rejected = 0
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    last_report = time.monotonic()
    with producer:  # flushes on exit and reports what could not be delivered
        i = 0
        while not stopping and (args.messages == 0 or i < args.messages):
            payload = json.dumps({"seq": i, "at": time.time()}).encode()
            try:
                # Applies the decision for this priority: may sleep (delay), dead-letter (shed) or raise.
                producer.produce(args.topic, payload, key=str(i).encode(), priority=args.priority)
                sent += 1
            except CircuitOpenError as exc:
                # The operator says Kafka (or the consumer) is in trouble: do not even try. A real
                # application would keep the work for later; here we just wait a little.
                rejected += 1
                log.debug("circuit %s is %s", exc.circuit, exc.state)
                time.sleep(0.5)
            except ShedError:
                rejected += 1  # only without a DLQ (on_shed="raise"); kept for completeness
            except StaleDecisionError as exc:
                rejected += 1  # only with --on-stale block
                log.warning("%s", exc)
                time.sleep(1.0)
            except ProduceError as exc:
                # Kafka refused it for good (topic missing, not authorized, retry budget spent...).
                rejected += 1
                log.error("not produced: %s", exc)
                time.sleep(1.0)
            i += 1
            if interval:
                time.sleep(interval)
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                health = producer.health()
                log.info("sent=%d rejected=%d in_flight=%d healthy=%s decision=%s circuit=%s", sent, rejected,
                         health["in_flight"], health["healthy"], health["decision"]["status"],
                         health["circuit"]["state"])
    decisions.close()

    outcomes = producer.outcomes()
    print(json.dumps({
        "produced": sent,
        "rejected": rejected,
        "delivered": outcomes.delivered,
        "dead_lettered": outcomes.dead_lettered,
        "failed": outcomes.failed,
        "unflushed": producer.unflushed,
    }))
    return 0 if producer.unflushed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
