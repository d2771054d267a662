"""Where a test script runs: the named network namespace (`ip netns`) of
this process, if any. Scripts that send mDNS refuse to run outside one."""

import os


def named_network_namespace():
    """The name of the `ip netns` namespace this process runs in (what
    `ip netns identify` prints), or None outside every named namespace, as
    on the machine's own network."""
    try:
        own = os.stat("/proc/self/ns/net")
        names = os.listdir("/run/netns")
    except OSError:
        return None
    for name in sorted(names):
        try:
            other = os.stat(os.path.join("/run/netns", name))
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (own.st_dev, own.st_ino):
            return name
    return None
