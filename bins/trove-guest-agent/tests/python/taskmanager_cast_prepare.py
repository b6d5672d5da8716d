"""Casts `prepare` to a guest as Trove's taskmanager does (trove/guestagent/api.py), with
python oslo.messaging and Trove's SecureSerializer keyed with the instance key.

usage: taskmanager_cast_prepare.py URL EXCHANGE GUEST_ID KEY DS_VERSION DATASTORE MOUNT_POINT
                                   PORT [DEVICE_PATH]
The request carries one database, one user granted on it (password from the environment
variable APP_PASSWORD) and a `config_contents` that sets the server's port and
max_connections = 200, as the taskmanager's rendered config template would.
Prints one JSON line: {"cast": "prepare", "request_id": ...}.
"""
import json
import os
import sys
import uuid

import oslo_messaging as messaging

# The serializers live with the messaging crate's interop scripts; reuse them, not a copy.
sys.path.insert(
    0,
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..", "..", "..", "..", "crates", "netiso-messaging", "tests", "python",
    ),
)
from trove_serializers import SecureSerializer, make_transport  # noqa: E402


def main():
    url, exchange, guest_id, key, ds_version, datastore, mount_point, port = sys.argv[1:9]
    device_path = sys.argv[9] if len(sys.argv) > 9 else None
    password = os.environ["APP_PASSWORD"]
    _, transport = make_transport(url)
    # Trove's guest API: topic "guestagent.<id>", no server, API base version 1.0 with a
    # version cap; prepare is sent at 1.1 (ds_version added there).
    target = messaging.Target(exchange=exchange, topic="guestagent." + guest_id, version="1.0")
    client = messaging.get_rpc_client(
        transport, target, version_cap="1.1", serializer=SecureSerializer(key)
    )
    request_id = "req-" + str(uuid.uuid4())
    project = uuid.uuid4().hex
    user = uuid.uuid4().hex
    ctxt = {
        "user": user, "project_id": project, "system_scope": None, "project": project,
        "domain": None, "user_domain": None, "project_domain": None, "is_admin": False,
        "read_only": False, "show_deleted": False, "auth_token": "gAAAAABtaskmanagerToken",
        "request_id": request_id, "global_request_id": None, "resource_uuid": None,
        "roles": ["member", "reader"], "user_identity": user + " " + project + " - - -",
        "is_admin_project": True, "limit": None, "marker": None, "service_catalog": [],
        "trove_notification": {
            "request_id": request_id, "server_type": "guest", "tenant_id": project,
            "name": "db1", "flavor_id": "d2", "datastore": datastore,
            "datastore_version": ds_version, "instance_id": guest_id,
            "notification_classname": "trove.common.notification.DBaaSInstanceCreate",
        },
    }
    client.prepare(version="1.1").cast(
        ctxt,
        "prepare",
        packages=None,
        databases=[{"_name": "app", "_character_set": "utf8mb4", "_collate": "utf8mb4_general_ci"}],
        memory_mb=2048,
        users=[{"_name": "appuser", "_host": "%", "_password": password,
                "_databases": [{"_name": "app", "_collate": None, "_character_set": None}],
                "_is_root": False}],
        device_path=device_path,
        mount_point=mount_point,
        backup_info=None,
        config_contents="[mysqld]\nport = %s\nmax_connections = 200\n" % port,
        root_password=None,
        overrides={},
        cluster_config=None,
        snapshot=None,
        modules=None,
        ds_version=ds_version,
    )
    transport.cleanup()
    print(json.dumps({"cast": "prepare", "request_id": request_id}))


if __name__ == "__main__":
    main()
