def helper(buf):
    cdef void* p = <void*>buf.ptr  # expect: CYP001@20
    return <size_t>p
