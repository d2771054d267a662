#!/usr/bin/env python3
"""Advertise a fake Ferry hub with python-zeroconf and record what reaches it.

The record copies a real hub's TXT fields (its id and name included), so to
mDNS it looks like that hub at another address. A plain TCP listener on the
advertised port records every connection: how many bytes arrived and the
first byte of each (0x16 is a TLS handshake record). Nothing is answered.

Usage (inside a network namespace, never on a real network):

    ip netns exec NS $FERRY_VENV/bin/python fake_hub.py \\
        --address 10.213.7.13 --port 7411 --seconds 8 \\
        --txt id=hub-... --txt name=hub-1 --txt port=7411 ...

Prints one JSON object when done:
    {"connections": N, "bytes": [n, ...], "first_bytes": [b, ...]}
"""

import argparse
import json
import socket
import sys
import threading
import time

from netns_guard import named_network_namespace

SERVICE_TYPE = "_ferry._tcp.local."


def record(listener, seen, stop):
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        entry = {"bytes": 0, "first": None}
        seen.append(entry)

        def drain(connection=connection, entry=entry):
            connection.settimeout(1.0)
            while not stop.is_set():
                try:
                    data = connection.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if entry["first"] is None:
                    entry["first"] = data[0]
                entry["bytes"] += len(data)
            connection.close()

        threading.Thread(target=drain, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--txt", action="append", default=[], help="KEY=VALUE (repeatable)")
    args = parser.parse_args()
    if named_network_namespace() is None:
        print("fake_hub.py: refusing to advertise outside a named network namespace", file=sys.stderr)
        return 2

    from zeroconf import ServiceInfo, Zeroconf

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.address, args.port))
    listener.listen(16)
    seen = []
    stop = threading.Event()
    recorder = threading.Thread(target=record, args=(listener, seen, stop), daemon=True)
    recorder.start()

    properties = dict(item.split("=", 1) for item in args.txt)
    name = properties.get("name", "fake")
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{name}-impostor.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(args.address)],
        port=args.port,
        properties=properties,
        server=f"{name}-impostor.local.",
    )
    zeroconf = Zeroconf(interfaces=[args.address])
    try:
        zeroconf.register_service(info)
        time.sleep(args.seconds)
        zeroconf.unregister_service(info)
    finally:
        zeroconf.close()
        stop.set()
        listener.close()
    json.dump(
        {
            "connections": len(seen),
            "bytes": [entry["bytes"] for entry in seen],
            "first_bytes": [entry["first"] for entry in seen],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
