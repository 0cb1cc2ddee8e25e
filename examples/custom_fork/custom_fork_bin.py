"""The guide's custom_fork sandboxee (mode (c)), in Python.

Started once as a fork server: the expensive part -- here importing and warming up a few
standard-library modules -- happens before the loop.  Each request forks a child that is
already initialised; the child applies its policy with ``sandbox_me_here()`` and serves one
request over comms: it receives a text and sends back a summary of it.
"""

import collections
import json
import os
import re
import statistics
import unicodedata

from aiosandbox.client import Client, ForkingClient

WORD = re.compile(r"\w+")
# Warm-up done once in the fork server, inherited by every child.
unicodedata.normalize("NFKC", "warm-up")


def summarise(text: str) -> str:
    words = WORD.findall(unicodedata.normalize("NFKC", text).lower())
    lengths = [len(w) for w in words] or [0]
    summary = {
        "words": len(words),
        "most_common": collections.Counter(words).most_common(3),
        "mean_length": round(statistics.fmean(lengths), 3),
    }
    return json.dumps(summary, sort_keys=True)


def main() -> None:
    forking = ForkingClient()
    while forking.wait_and_fork() != 0:
        pass  # the fork server: wait for the next request
    client = Client()
    client.sandbox_me_here()
    text = client.comms.recv_string()
    if text == "evil":
        open("/etc/passwd").close()  # not allowed by the policy: a violation
    client.comms.send_string(summarise(text))
    # Skip the interpreter's teardown: in a forked child it costs ~25 ms (it touches, and
    # so copies, every page it inherited) for nothing.
    os._exit(0)


if __name__ == "__main__":
    main()
