# distutils: language = c++
# sparcians/map 102a1199 (helios/pipeViewer/pipe_view/core/src/core.pyx, issues
# #465/#490/#492): a cdef helper returns a pointer derived from its argument,
# which is a temporary here; Cython releases it right after the call: segfault.
from cpython.object cimport PyObject

cdef extern from *:
    """
    struct Font { int points; };
    static Font *font_of(PyObject *o) { (void)o; return 0; }
    """
    cdef cppclass Font:
        int points
    Font* font_of(PyObject* o)


cdef Font* get_font(font):
    return font_of(<PyObject*>font)


cdef class Canvas:
    cdef Font c_font

    def set_font(self, dc):
        self.c_font = get_font(dc.GetFont())[0]  # expect-typed: CYP020@31
