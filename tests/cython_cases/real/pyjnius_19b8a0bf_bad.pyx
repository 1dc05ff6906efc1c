# pyjnius 19b8a0bf (jnius/jnius_proxy.pxi, kivy/pyjnius#279): jnius.pyx is built
# from included .pxi files; the finding is in the include.
from cpython.ref cimport Py_INCREF

include "pyjnius_19b8a0bf_bad.pxi"
