"""A Python oslo.messaging RPCClient calling a server; prints one JSON object of outcomes.

usage: py_client.py URL EXCHANGE TOPIC SERVER KEY|-
"""
import json
import sys
import uuid

import oslo_messaging as messaging

from trove_serializers import make_transport, serializer_for


def outcome(fn):
    try:
        return {"result": fn()}
    except messaging.RemoteError as exc:
        return {"remote_error": {"exc_type": exc.exc_type, "value": exc.value, "str": str(exc)}}
    except messaging.MessagingTimeout as exc:
        return {"timeout": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the Rust test
        return {"exception": {"type": type(exc).__name__, "str": str(exc)}}


def main():
    url, exchange, topic, server, key = sys.argv[1:6]
    key = None if key == "-" else key
    _, transport = make_transport(url)
    target = messaging.Target(exchange=exchange, topic=topic, server=server, version="1.0")
    client = messaging.get_rpc_client(transport, target, serializer=serializer_for(key))
    ctxt = {"user": None, "request_id": "req-" + str(uuid.uuid4()), "roles": [], "auth_token": None}
    fast = client.prepare(timeout=15)
    results = {
        "rpc_ping": outcome(lambda: fast.call(ctxt, "rpc_ping")),
        "echo": outcome(lambda: fast.call(ctxt, "echo", value={"n": 2048, "s": "8.0.36", "none": None})),
        "echo_request_id": ctxt["request_id"],
        "no_such_method": outcome(lambda: fast.call(ctxt, "get_hwinfo")),
        "unsupported_version": outcome(lambda: client.prepare(timeout=15, version="1.4").call(ctxt, "rpc_ping")),
        "handler_error": outcome(lambda: fast.call(ctxt, "fail", message="disk full")),
        "bad_arguments": outcome(lambda: fast.call(ctxt, "rpc_ping", extra=1)),
        "topic_call": outcome(lambda: messaging.get_rpc_client(
            transport, messaging.Target(exchange=exchange, topic=topic, version="1.3"),
            serializer=serializer_for(key)).prepare(timeout=15).call(ctxt, "rpc_ping")),
    }
    fast.cast(ctxt, "record", value="cast-from-python")
    transport.cleanup()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
