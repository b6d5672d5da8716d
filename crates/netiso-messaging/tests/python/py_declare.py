"""Starts and stops an oslo.messaging RPC server for a target, so that it declares exactly
what Python declares; exits 0 if the declarations succeeded within 20 s, prints ERROR lines
of oslo's log (a 406 PRECONDITION_FAILED shows there).

usage: py_declare.py URL EXCHANGE TOPIC SERVER default|NAME=VALUE,...
"""
import logging
import sys
import threading

import oslo_messaging as messaging

from trove_serializers import make_transport, parse_overrides


class Endpoint:
    target = messaging.Target(version="1.3")

    def rpc_ping(self, ctxt):
        return True


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    url, exchange, topic, server, mode = sys.argv[1:6]
    collect = Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.WARNING)
    _, transport = make_transport(url, **parse_overrides(mode))
    rpc_server = messaging.get_rpc_server(
        transport, messaging.Target(exchange=exchange, topic=topic, server=server),
        [Endpoint()], executor="threading",
    )
    started = threading.Event()

    def start():
        rpc_server.start()
        started.set()

    threading.Thread(target=start, daemon=True).start()
    ok = started.wait(20)
    for line in collect.lines:
        print("LOG " + line.replace("\n", " "), flush=True)
    if not ok:
        print("ERROR declarations did not complete in 20 s", flush=True)
        sys.exit(2)
    rpc_server.stop()
    rpc_server.wait()
    transport.cleanup()
    bad = [l for l in collect.lines if "PRECONDITION_FAILED" in l or "non durable" in l]
    print("DECLARED" if not bad else "ERROR inequivalent declarations", flush=True)
    sys.exit(0 if not bad else 1)


if __name__ == "__main__":
    main()
