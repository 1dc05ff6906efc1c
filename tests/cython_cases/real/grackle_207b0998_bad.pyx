# grackle 207b0998 (src/python/pygrackle/grackle_wrapper.pyx, PR #80): a char*
# field of a cdef class's struct is set from bytes that only a local holds; the
# bytes die when the setter returns.
cdef extern from *:
    ctypedef struct chemistry_t:
        const char* data_file


cdef class Chemistry:
    cdef chemistry_t data

    @property
    def data_file(self):
        return self.data.data_file

    @data_file.setter
    def data_file(self, value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        self.data.data_file = value  # expect-typed: CYP020@9
