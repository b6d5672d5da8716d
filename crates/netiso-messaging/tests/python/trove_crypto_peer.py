"""Trove 26.0.0's own serializers as a peer for tests/trove_crypto.rs.

Reads one JSON request per line on stdin and writes one JSON answer per line on stdout. Every
operation goes through Trove's code as installed from PyPI: trove.common.crypto_utils,
trove.common.rpc.secure_serializer.SecureSerializer and
trove.common.rpc.conductor_guest_serializer.ConductorGuestSerializer, nothing re-implemented.
An operation that raises answers {"error": "<exception class>: <message>"}.
"""
import json
import sys
import warnings

warnings.simplefilter("ignore")

from oslo_config import cfg  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402

from trove.common import crypto_utils  # noqa: E402
from trove.common.rpc.conductor_guest_serializer import ConductorGuestSerializer  # noqa: E402
from trove.common.rpc.secure_serializer import SecureSerializer  # noqa: E402


def plaintext(wire, key):
    """The decrypted JSON text, exactly as Trove's crypto_utils gives it back."""
    return crypto_utils.decrypt_data(crypto_utils.decode_data(wire), key).decode("utf-8")


def encrypt_entity(req):
    wire = SecureSerializer(None, req["key"]).serialize_entity(None, req["value"])
    return {"wire": wire, "plaintext": jsonutils.dumps(req["value"])}


def decrypt_entity(req):
    value = SecureSerializer(None, req["key"]).deserialize_entity(None, req["wire"])
    return {"value": value, "plaintext": plaintext(req["wire"], req["key"])}


def encrypt_context(req):
    return {"entries": SecureSerializer(None, req["key"]).serialize_context(req["context"])}


def decrypt_context(req):
    serializer = SecureSerializer(None, req["key"])
    return {"context": serializer.deserialize_context(req["entries"])}


def conductor_entity(req):
    """Checks a conductor entity made by the Rust guest against Trove's guest serializer.

    Trove's ConductorGuestSerializer wraps the same value; its ciphertext is random, so the
    answer is Trove's wrapper with the Rust ciphertext put in place of Trove's, plus what the
    Rust ciphertext decrypts to.
    """
    cfg.CONF.set_override("guest_id", req["guest_id"])
    theirs = jsonutils.loads(
        ConductorGuestSerializer(None, req["key"]).serialize_entity(None, req["value"]))
    ours = jsonutils.loads(req["text"])
    theirs["entity"] = ours["entity"]
    return {
        "trove_text": jsonutils.dumps(theirs),
        "value": jsonutils.loads(plaintext(ours["entity"], req["key"])),
    }


def conductor_context(req):
    cfg.CONF.set_override("guest_id", req["guest_id"])
    theirs = ConductorGuestSerializer(None, req["key"]).serialize_context(req["context"])
    ours = req["entries"]
    return {
        "trove_keys": list(theirs.keys()),
        "trove_guest_id": theirs["csz-instance-id"],
        "context": jsonutils.loads(plaintext(ours["context"], req["key"])),
    }


OPERATIONS = {
    "encrypt_entity": encrypt_entity,
    "decrypt_entity": decrypt_entity,
    "encrypt_context": encrypt_context,
    "decrypt_context": decrypt_context,
    "conductor_entity": conductor_entity,
    "conductor_context": conductor_context,
}


def main():
    # Trove registers guest_id when its configuration module is imported (through
    # crypto_utils); the conductor serializer reads it from the global CONF.
    cfg.CONF([], project="trove", default_config_files=[])
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = OPERATIONS[request["op"]](request)
        except Exception as err:  # every failure goes back to the Rust side, typed
            answer = {"error": "%s: %s" % (type(err).__name__, err)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
