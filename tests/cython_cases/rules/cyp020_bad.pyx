# CYP020: a C pointer into a Python object that dies while the pointer is kept.
from cpython.object cimport PyObject

cdef extern from *:
    """
    typedef struct { const char *name; } record_t;
    static const char *last_name;
    typedef struct { int size; } font_t;
    static font_t *font_of(PyObject *o) { (void)o; return 0; }
    """
    ctypedef struct record_t:
        const char* name
    font_t* font_of(PyObject* o)
    ctypedef struct font_t:
        int size

cdef const char* g_name


cdef class Record:
    cdef record_t c
    cdef const char* label
    cdef dict config

    def rename(self, name):
        b = name.encode()
        self.c.name = b  # expect-typed: CYP020@9

    def relabel(self, name):
        b = name.encode("utf-8")
        cdef const char* p = b
        self.label = p  # expect-typed: CYP020@9

    @property
    def path(self):
        return "/dev/" + self.config["name"]

    def path_length(self):
        cdef const char* p = self.path  # expect-typed: CYP020@9
        return len(p)


def set_global(name):
    global g_name
    b = name + "\0"
    g_name = b  # expect-typed: CYP020@5


def fill(record_t* rec, name):
    data = name.encode()
    rec.name = data  # expect-typed: CYP020@5


cdef const char* c_name(name):
    return name.encode()  # expect-typed: CYP020@5


cdef const char* c_name_local(name):
    if isinstance(name, str):
        name = name.encode()
    return name  # expect-typed: CYP020@5


cdef font_t* font_from(obj):
    return font_of(<PyObject*>obj)


def font_size(widget):
    return font_from(widget.font())[0].size  # expect-typed: CYP020@21
