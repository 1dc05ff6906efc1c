# CYP007: <object> of a pointer that may be NULL.
cdef extern from *:
    """
    static void *lookup(int key) { (void)key; return 0; }
    """
    void* lookup(int key)


def direct(int key):
    return <object>lookup(key)  # expect-typed: CYP007@12


def unchecked(int key):
    cdef void* p = lookup(key)
    return <object>p  # expect: CYP007@12
