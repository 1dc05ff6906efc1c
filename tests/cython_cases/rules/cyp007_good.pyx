# CYP007 fixed: check for NULL first.
from cpython.tuple cimport PyTuple_GET_ITEM

cdef extern from *:
    """
    static void *lookup(int key) { (void)key; return 0; }
    """
    void* lookup(int key)


def checked(int key):
    cdef void* p = lookup(key)
    if p == NULL:
        raise KeyError(key)
    return <object>p


def checked_by_truth(int key):
    cdef void* p = lookup(key)
    if not p:
        return None
    return <object>p


def borrowed_item(tuple t):
    return <object>PyTuple_GET_ITEM(t, 0)


cdef void callback(void* user_data) noexcept with gil:
    (<object>user_data)()
