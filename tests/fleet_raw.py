#!/usr/bin/env python3
"""Raw TLS 1.2 ClientHellos carrying garbage session tickets: the server must
answer with a full handshake (ServerHello, then its Certificate), never an
alert or a close.

  tests/fleet_raw.py PORT KEYNAME_HEX

Prints one line per ticket shape and exits 1 if any was not answered with a
full handshake.
"""
import os
import socket
import struct
import sys

port, keyname = int(sys.argv[1]), bytes.fromhex(sys.argv[2])


def ext(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def hello(ticket):
    name = b"localhost"
    exts = b"".join([
        ext(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),
        ext(0x000a, struct.pack("!HHH", 4, 0x001d, 0x0017)),
        ext(0x000b, b"\x01\x00"),
        ext(0x000d, struct.pack("!H6H", 12, 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0807)),
        ext(0x0017, b""),
        ext(0xff01, b"\x00"),
        ext(0x0023, ticket),
    ])
    suites = struct.pack("!H4H", 8, 0xc02b, 0xc02f, 0xcca9, 0xcca8)
    body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + suites + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    msg = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(msg)) + msg


def handshake_types(sock):
    """Handshake message types the server sends before its ServerHelloDone
    (or an alert, a ChangeCipherSpec, or the close)."""
    buf, hs, types = b"", b"", []
    while True:
        while len(buf) < 5 or len(buf) < 5 + struct.unpack("!H", buf[3:5])[0]:
            data = sock.recv(65536)
            if not data:
                return types + ["close"]
            buf += data
        ctype, n = buf[0], struct.unpack("!H", buf[3:5])[0]
        rec, buf = buf[5:5 + n], buf[5 + n:]
        if ctype == 21:
            return types + ["alert %d" % rec[1]]
        if ctype == 20:
            return types + ["change_cipher_spec"]
        if ctype != 22:
            return types + ["content type %d" % ctype]
        hs += rec
        while len(hs) >= 4 and len(hs) >= 4 + struct.unpack("!I", b"\0" + hs[1:4])[0]:
            n = struct.unpack("!I", b"\0" + hs[1:4])[0]
            types.append(hs[0])
            hs = hs[4 + n:]
            if types[-1] == 14:  # ServerHelloDone
                return types


shapes = {
    "random 200 bytes": os.urandom(200),
    "our key name, forged rest": keyname + os.urandom(150),
    "our key name only (truncated)": keyname,
    "one byte": b"\x01",
    "all zero 1000 bytes": bytes(1000),
}
bad = 0
for what, ticket in shapes.items():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(hello(ticket))
    got = handshake_types(s)
    s.close()
    full = got[:2] == [2, 11] and got[-1] == 14
    print("%s %s: %s" % ("full-handshake" if full else "NOT-FULL", what, got))
    bad += not full
sys.exit(1 if bad else 0)
