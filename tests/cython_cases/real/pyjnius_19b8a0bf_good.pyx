from cpython.ref cimport Py_INCREF

include "pyjnius_19b8a0bf_good.pxi"
