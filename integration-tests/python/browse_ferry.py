#!/usr/bin/env python3
"""Browse `_ferry._tcp.local.` with python-zeroconf, a third-party mDNS stack,
and print every hub instance found as JSON.

Shows that Ferry's advertisement is standard DNS-SD: an independent browser
finds the hubs and reads their TXT records (id, name, port, proto, cluster,
load).

Usage (inside a network namespace, never on a real network):

    ip netns exec NS $FERRY_VENV/bin/python browse_ferry.py [--seconds 3]

Output: a JSON array, one object per instance:
    {"name": ..., "type": "_ferry._tcp.local.", "server": ..., "port": N,
     "addresses": ["10.213.7.11", ...], "properties": {"id": ..., ...}}
TXT values are decoded as UTF-8 (invalid bytes replaced); a key without a
value is null.

Safety: zeroconf sends multicast queries on every interface it sees. The
script refuses to run outside a named network namespace (`ip netns`),
where they could reach real networks, unless --allow-host-network is given.
"""

import argparse
import json
import sys
import time

from netns_guard import named_network_namespace

SERVICE_TYPE = "_ferry._tcp.local."


def decode(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to browse (default 3)")
    parser.add_argument(
        "--allow-host-network",
        action="store_true",
        help="run even outside a named network namespace (sends mDNS on the real interfaces)",
    )
    args = parser.parse_args()

    if named_network_namespace() is None and not args.allow_host_network:
        print(
            "browse_ferry.py: refusing to browse outside a named network namespace; "
            "run it inside a network namespace (ip netns exec NS ...)",
            file=sys.stderr,
        )
        return 2

    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    zeroconf = Zeroconf()
    present = set()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            present.discard(name)
        else:
            present.add(name)

    try:
        browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[on_change])
        time.sleep(args.seconds)
        browser.cancel()
        instances = []
        for name in sorted(present):
            info = zeroconf.get_service_info(SERVICE_TYPE, name, timeout=3000)
            if info is None:
                instances.append({"name": name, "type": SERVICE_TYPE, "resolved": False})
                continue
            instances.append(
                {
                    "name": name,
                    "type": info.type,
                    "resolved": True,
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "properties": {decode(key): decode(value) for key, value in info.properties.items()},
                }
            )
    finally:
        zeroconf.close()
    json.dump(instances, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
