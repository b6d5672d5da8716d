"""A Python oslo.messaging RPC server (rpc_ping, echo, fail); prints READY, serves until
stdin closes.

usage: py_server.py URL EXCHANGE TOPIC SERVER KEY|-
"""
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
