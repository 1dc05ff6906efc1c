# .pxd inline bodies are checked without types.
cdef inline size_t inline_address(object buf):
    return <size_t><void*>buf.ptr  # expect: CYP001@20
