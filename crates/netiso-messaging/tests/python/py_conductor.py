"""A conductor-like oslo.messaging server decrypting the guest's casts; prints READY, then
one JSON line per received cast, and exits after COUNT casts (or 30 s).

usage: py_conductor.py URL EXCHANGE TOPIC INSTANCE_ID KEY COUNT
"""
import json
import sys
import threading

import oslo_messaging as messaging

from trove_serializers import ConductorHostSerializer, make_transport

DONE = threading.Event()
LOCK = threading.Lock()
RECEIVED = []


class Conductor:
    target = messaging.Target(version="1.0")

    def __init__(self, count):
        self.count = count

    def _record(self, ctxt, method, **kwargs):
        with LOCK:
            RECEIVED.append({"method": method, "context_instance_id": ctxt.get("instance_id"),
                             "context_request_id": ctxt.get("request_id"), "args": kwargs})
            print(json.dumps(RECEIVED[-1]), flush=True)
            if len(RECEIVED) >= self.count:
                DONE.set()

    def heartbeat(self, ctxt, instance_id, payload, sent):
        self._record(ctxt, "heartbeat", instance_id=instance_id, payload=payload, sent=sent)

    def update_backup(self, ctxt, instance_id, backup_id, sent, **backup_fields):
        self._record(ctxt, "update_backup", instance_id=instance_id, backup_id=backup_id,
                     sent=sent, fields=backup_fields)

    def report_root(self, ctxt, instance_id):
        self._record(ctxt, "report_root", instance_id=instance_id)

    def notify_end(self, ctxt, serialized_notification, notification_args):
        self._record(ctxt, "notify_end", serialized_notification=serialized_notification,
                     notification_args=notification_args)

    def notify_exc_info(self, ctxt, serialized_notification, message, exception):
        self._record(ctxt, "notify_exc_info", serialized_notification=serialized_notification,
                     message=message, exception=exception)


def main():
    url, exchange, topic, instance_id, key, count = sys.argv[1:7]
    _, transport = make_transport(url)
    server = messaging.get_rpc_server(
        transport, messaging.Target(exchange=exchange, topic=topic, server="conductor-host"),
        [Conductor(int(count))], executor="threading",
        serializer=ConductorHostSerializer({instance_id: key}),
    )
    server.start()
    print("READY", flush=True)
    finished = DONE.wait(30)
    server.stop()
    server.wait()
    transport.cleanup()
    sys.exit(0 if finished else 3)


if __name__ == "__main__":
    main()
