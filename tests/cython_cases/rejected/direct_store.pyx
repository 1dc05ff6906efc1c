# Cython itself rejects storing a char* from a temporary: the check reports it as CYP020.
cdef extern from *:
    """
    typedef struct { const char *name; } record_t;
    """
    ctypedef struct record_t:
        const char* name


cdef class Record:
    cdef record_t c

    def rename(self, name):
        self.c.name = name.encode()
