"""A hostile child of a Python custom fork server (mode (c)), for tests/sandbox/test_red_forkc.py.

py_red_forkc.py fork-server   fork a child per request; each child calls
                              sandbox_me_here() and serves string requests:
    "fds"      its open fds, "N:kind" comma-separated (fstat only: no /proc needed)
    ""         exit 0
"""

import os
import stat
import sys

from aiosandbox.client import Client, ForkingClient


def fds() -> str:
    found = []
    for fd in range(1024):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue
        kind = "dir" if stat.S_ISDIR(mode) else "sock" if stat.S_ISSOCK(mode) else "other"
        found.append(f"{fd}:{kind}")
    return ",".join(found)


def main() -> None:
    forking = ForkingClient()
    while forking.wait_and_fork() != 0:
        pass
    client = Client()
    client.sandbox_me_here()
    comms = client.comms
    while True:
        request = comms.recv_string()
        if request == "":
            break
        if request == "fds":
            comms.send_string(fds())
        else:
            comms.send_string("?")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
