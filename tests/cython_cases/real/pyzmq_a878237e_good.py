# pyzmq a878237e, fixed: the helper returns the bytes; the caller keeps them while C reads.
import cython
from cython import cfunc, inline, p_char
from cython.cimports.libc.string import strlen


@cfunc
@inline
def c_endpoint(endpoint) -> bytes:
    if isinstance(endpoint, str):
        endpoint = endpoint.encode("utf-8")
    return endpoint


def endpoint_length(endpoint):
    endpoint_bytes: bytes = c_endpoint(endpoint)
    c_value: p_char = endpoint_bytes
    return strlen(c_value)
