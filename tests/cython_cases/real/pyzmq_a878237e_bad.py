# pyzmq a878237e (zmq/backend/cython/_zmq.py, pure-Python mode; the bug came in
# with feae9ea6): an inline cfunc returns a char* into the bytes that .encode()
# made inside it, which die when it returns.
import cython
from cython import cfunc, inline, p_char
from cython.cimports.libc.string import strlen


@cfunc
@inline
def c_endpoint(endpoint) -> p_char:
    if isinstance(endpoint, str):
        endpoint = endpoint.encode("utf-8")
    c_value: p_char = endpoint
    return c_value  # expect-typed: CYP020@5


def endpoint_length(endpoint):
    return strlen(c_endpoint(endpoint))
