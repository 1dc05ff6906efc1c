# CYP011: arithmetic on void*.
def offsets(int n, size_t off):
    cdef void* p = &n
    cdef void* q = p + off  # expect: CYP011@22
    q += 4  # expect: CYP011@5
    cdef Py_ssize_t d = <char*>q - <char*>p
    return d
