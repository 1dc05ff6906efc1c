# numpy 61783b48 (numpy/random/_generator.pyx, mtrand.pyx; numpy/numpy#19941): a
# pointer goes through size_t and back, which C does not promise to preserve
# (Bus error on OpenVMS, where size_t is narrower than a pointer).
cimport numpy as cnp


def first_item(cnp.ndarray values not None):
    cdef char* data = <char*><size_t>cnp.PyArray_DATA(values)  # expect-typed: CYP015@23
    return data[0]
