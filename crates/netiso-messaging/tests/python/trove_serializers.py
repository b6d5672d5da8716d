"""Trove's RPC serializers, written from the documented algorithm (rpc-wire-protocol.md §10-11).

AES-256-CBC keyed with the lowercase hex MD5 of instance_rpc_encr_key, PKCS#7 padding,
base64(IV || ciphertext); SecureSerializer for controller <-> guest, the conductor host side
of ConductorGuestSerializer for guest -> conductor.
"""
import base64
import hashlib
import json
import os

import oslo_messaging as messaging
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def _aes_key(key):
    return hashlib.md5(key.encode("utf-8")).hexdigest().encode("ascii")


def encrypt(value, key):
    data = json.dumps(value).encode("utf-8")
    pad = 16 - len(data) % 16
    data += bytes([pad]) * pad
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(_aes_key(key)), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode("ascii")


def decrypt(wire, key):
    raw = base64.b64decode(wire)
    iv, body = raw[:16], raw[16:]
    dec = Cipher(algorithms.AES(_aes_key(key)), modes.CBC(iv)).decryptor()
    data = dec.update(body) + dec.finalize()
    data = data[: -data[-1]]
    return json.loads(data.decode("utf-8"))


class SecureSerializer(messaging.NoOpSerializer):
    """Every top-level value and the whole context encrypted (Trove's SecureSerializer)."""

    def __init__(self, key):
        self._key = key

    def serialize_entity(self, ctxt, entity):
        return encrypt(entity, self._key)

    def deserialize_entity(self, ctxt, entity):
        try:
            return decrypt(entity, self._key)
        except (ValueError, TypeError):
            return entity

    def serialize_context(self, ctxt):
        return {"context": encrypt(ctxt, self._key)}

    def deserialize_context(self, ctxt):
        return decrypt(ctxt["context"], self._key)


class ConductorHostSerializer(messaging.NoOpSerializer):
    """The conductor's side: unwraps {"entity", "csz-instance-id"} and decrypts."""

    def __init__(self, keys):
        self._keys = keys

    def deserialize_entity(self, ctxt, entity):
        wrapper = json.loads(entity)
        instance_id = wrapper["csz-instance-id"]
        return decrypt(wrapper["entity"], self._keys[instance_id])

    def deserialize_context(self, ctxt):
        instance_id = ctxt["csz-instance-id"]
        context = decrypt(ctxt["context"], self._keys[instance_id])
        context["instance_id"] = instance_id
        return context


def serializer_for(key):
    return SecureSerializer(key) if key else messaging.NoOpSerializer()


def make_transport(url, **overrides):
    """An RPC transport with [oslo_messaging_rabbit] overrides (e.g. rabbit_quorum_queue=True)."""
    from oslo_config import cfg
    from oslo_messaging._drivers import amqp as rpc_amqp
    from oslo_messaging._drivers import impl_rabbit

    if url.startswith("amqp://"):
        url = "rabbit://" + url[len("amqp://"):]
    conf = cfg.CONF  # oslo.messaging registers some options (tracing) only there
    conf([], project="netiso-interop")
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    conf.register_opts(rpc_amqp.amqp_opts, group="oslo_messaging_rabbit")
    for name, value in overrides.items():
        conf.set_override(name, value, group="oslo_messaging_rabbit")
    return conf, messaging.get_rpc_transport(conf, url=url)


def parse_overrides(text):
    """'default' or 'name=value,...' with true/false or integers."""
    if text == "default":
        return {}
    overrides = {}
    for item in text.split(","):
        name, value = item.split("=", 1)
        lowered = value.lower()
        overrides[name] = lowered == "true" if lowered in ("true", "false") else int(value)
    return overrides
