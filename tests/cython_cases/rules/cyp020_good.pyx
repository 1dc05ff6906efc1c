# CYP020 fixed: the object lives as long as the pointer.
from cpython.ref cimport Py_INCREF

from cpython.object cimport PyObject

cdef extern from *:
    """
    typedef struct { const char *name; } record_t;
    typedef struct { int size; } font_t;
    static font_t *font_of(PyObject *o) { (void)o; return 0; }
    """
    ctypedef struct record_t:
        const char* name
    font_t* font_of(PyObject* o)
    ctypedef struct font_t:
        int size


cdef class Record:
    cdef record_t c
    cdef bytes _name          # owns the bytes c.name points into
    cdef str _path
    cdef list keep

    def rename(self, name):
        self._name = name.encode()
        self.c.name = self._name

    def rename_kept(self, name):
        b = name.encode()
        self.keep.append(b)
        self.c.name = b

    def rename_increfed(self, name):
        b = name.encode()
        Py_INCREF(b)
        self.c.name = b

    def rename_from(self, bytes name):
        # The caller's object: not made here (its lifetime is the caller's contract).
        self.c.name = name

    @property
    def path(self):
        return self._path

    def path_length(self):
        cdef const char* p = self.path      # the property returns an object self holds
        return len(p)

    def local_use(self, name):
        b = name.encode()
        cdef const char* p = b              # used while b is alive
        return len(p)


cdef const char* c_name(bytes name):
    return name


cdef font_t* font_from(obj):
    return font_of(<PyObject*>obj)


def font_size(widget):
    font = widget.font()                    # keeps the object alive through the call
    return font_from(font)[0].size
