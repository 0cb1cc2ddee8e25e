"""The Python sandboxee of bench_modes.py: the same work in mode (a) and in mode (c).

It imports a few standard-library modules (the initialisation mode (c) does once), receives
a text over comms and answers its word count.  ``a``: started per run, already sandboxed.
``c``: a fork server; each child sandboxes itself and serves one run.

Both end with ``os._exit(0)``: CPython's teardown of an interpreter that has imported
things costs ~25 ms (and in a forked child it touches, and so copies, every page), which
would hide what the modes differ in.
"""

import collections
import decimal
import email.parser
import json
import os
import statistics
import sys

from aiosandbox.client import Client, ForkingClient

MODULES = (collections, decimal, email.parser, json, statistics)  # the initialisation


def serve(client: Client) -> None:
    text = client.comms.recv_string()
    client.comms.send_int64(len(text.split()))


def main() -> None:
    if sys.argv[1] == "c":
        forking = ForkingClient()
        while forking.wait_and_fork() != 0:
            pass
        client = Client()
        client.sandbox_me_here()
    else:
        client = Client()
    serve(client)
    os._exit(0)


if __name__ == "__main__":
    main()
