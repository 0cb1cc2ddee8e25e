"""A Python sandboxee using aiosandbox.client, for executor modes (b) and (c).

    py_client.py me-here      mode (b): sandbox_me_here, then serve requests
    py_client.py fork-server  mode (c): fork a child per request; each child then
                              calls sandbox_me_here and serves requests

Serving requests: receive strings and answer each; "" ends with exit code 0; "socket"
makes a TCP socket (a violation under the Python preset); "pid" answers the pid; "msg"
echoes one msgpack message; "fd" reads a received fd and answers its bytes; "read:N" answers
what fd N holds; "named:NAME" what the fd mapped under NAME holds; "exit:N" exits with N;
"thread" answers a sum computed in a new thread.
"""

import os
import socket
import sys
import threading

from aiosandbox.client import Client, ForkingClient


def serve(client: Client) -> None:
    comms = client.comms
    while True:
        request = comms.recv_string()
        if request == "":
            return
        if request == "socket":
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            comms.send_string("made a socket")
        elif request == "pid":
            comms.send_int64(os.getpid())
        elif request == "msg":
            comms.send_msg(comms.recv_msg())
        elif request == "fd":
            fd = comms.recv_fd()
            comms.send_bytes(os.read(fd, 1 << 16))
            os.close(fd)
        elif request.startswith("named:"):
            comms.send_bytes(os.read(client.get_mapped_fd(request[6:]), 1 << 16))
        elif request.startswith("read:"):
            comms.send_bytes(os.read(int(request[5:]), 1 << 16))
        elif request == "thread":
            sums: list[int] = []
            worker = threading.Thread(target=sums.append, args=(sum(range(100)),))
            worker.start()
            worker.join()
            comms.send_string(f"thread says {sums[0]}")
        elif request.startswith("exit:"):
            sys.exit(int(request[5:]))
        else:
            comms.send_string(request.upper())


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "fork-server":
        forking = ForkingClient()
        while forking.wait_and_fork() != 0:
            pass
    elif mode != "me-here":
        sys.exit(f"usage: {sys.argv[0]} me-here|fork-server")
    client = Client()
    client.sandbox_me_here()
    serve(client)


if __name__ == "__main__":
    main()
