# Cython warns here (a char* from a module-level Python value); the warning must not leak.
G = b"abc"


def f():
    cdef char* p = G
    return p[0]
