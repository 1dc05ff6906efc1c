# distutils: language = c++
# sparcians/map 102a1199, fixed: a local keeps the font object alive.
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
        py_font = dc.GetFont()
        self.c_font = get_font(py_font)[0]
