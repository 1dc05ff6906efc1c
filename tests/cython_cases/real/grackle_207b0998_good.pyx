# grackle 207b0998, fixed: the object keeps the bytes the struct points into.
cdef extern from *:
    ctypedef struct chemistry_t:
        const char* data_file


cdef class Chemistry:
    cdef chemistry_t data
    cdef object data_file_bytes

    @property
    def data_file(self):
        return self.data.data_file

    @data_file.setter
    def data_file(self, value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        self.data_file_bytes = value
        self.data.data_file = self.data_file_bytes
