"""A Python oslo.messaging RPC server (rpc_ping, echo, fail, get_filesystem_stats); prints
READY, serves until stdin closes.

usage: py_server.py URL EXCHANGE TOPIC SERVER KEY|-
"""
import os
import sys

import oslo_messaging as messaging

from trove_serializers import make_transport, serializer_for


class Endpoint:
    target = messaging.Target(version="1.3")

    def rpc_ping(self, ctxt):
        return True

    def echo(self, ctxt, value):
        return {"value": value, "request_id": ctxt.get("request_id")}

    def fail(self, ctxt, message):
        raise ValueError(message)

    def get_filesystem_stats(self, ctxt, fs_path):
        # As Trove's guest computes it (guestagent/common/operating_system.py), on the
        # folder the server runs in: the bench's fleet sweep calls it on every stand-in.
        stats = os.statvfs(".")
        total = stats.f_blocks * stats.f_bsize
        free = stats.f_bfree * stats.f_bsize
        to_gb = lambda n: round(n / 1024.0 / 1024.0 / 1024.0, 2)
        return {
            "block_size": stats.f_bsize,
            "total_blocks": stats.f_blocks,
            "free_blocks": stats.f_bfree,
            "total": to_gb(total),
            "free": free,
            "used": to_gb(total - free),
        }


def main():
    url, exchange, topic, server, key = sys.argv[1:6]
    key = None if key == "-" else key
    _, transport = make_transport(url)
    target = messaging.Target(exchange=exchange, topic=topic, server=server)
    rpc_server = messaging.get_rpc_server(
        transport, target, [Endpoint()], executor="threading", serializer=serializer_for(key)
    )
    rpc_server.start()
    print("READY", flush=True)
    sys.stdin.read()
    rpc_server.stop()
    rpc_server.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
