# CYP011 fixed: byte arithmetic on char*.
def offsets(int n, size_t off):
    cdef void* p = &n
    cdef void* q = <char*>p + off
    cdef char* c = <char*>q
    c += 4
    return <size_t>(c - <char*>p)
