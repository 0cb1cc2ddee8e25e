"""A hostile Python sandboxee of tests/sandbox/test_execmem.py, in executor mode (b).

    py_execmem.py ROUTE

It has ``ctypes`` loaded before its filter, as every Python client has (``sandbox_me_here()``
loads the filter through it), writes a tiny function returning 77 into memory, calls
``sandbox_me_here()``, and then tries to make that memory executable and call it:

    mprotect   mprotect(PROT_READ|PROT_EXEC) of the anonymous page it wrote
    persona    personality(READ_IMPLIES_EXEC), then a new read-write page, written

Exit code 77: the code ran. An errno: the route's syscall failed.
"""

import ctypes
import mmap
import os
import sys

from aiosandbox.client import Client

RAN = 77
READ_IMPLIES_EXEC = 0x0400000
CODE = {
    "x86_64": bytes([0xB8, RAN, 0, 0, 0, 0xC3]),  # mov eax, 77; ret
    "aarch64": (0x52800000 | RAN << 5).to_bytes(4, "little")  # mov w0, 77
    + (0xD65F03C0).to_bytes(4, "little"),  # ret
}[os.uname().machine]

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.personality.argtypes = [ctypes.c_ulong]


PAGES: list[mmap.mmap] = []  # the mappings must live while their code runs


def page_with_code() -> int:
    """A new read-write private anonymous page holding CODE: its address."""
    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    page.write(CODE)
    PAGES.append(page)
    return ctypes.addressof(ctypes.c_char.from_buffer(page))


def call(address: int) -> int:
    return int(ctypes.CFUNCTYPE(ctypes.c_int)(address)())  # a pointer, not a callback


def main() -> int:
    route = sys.argv[1]
    address = page_with_code()
    Client().sandbox_me_here()
    if route == "mprotect":
        if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            return ctypes.get_errno()
        return call(address)
    if route == "persona":
        if libc.personality(READ_IMPLIES_EXEC) == -1:
            return ctypes.get_errno()
        address = page_with_code()  # read-write, and executable under the persona
        return call(address)
    return 103


if __name__ == "__main__":
    sys.exit(main())
