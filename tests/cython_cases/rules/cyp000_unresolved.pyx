# CYP000: the cimport does not resolve, so typed verdicts are not verified.
from not_installed_pkg cimport Thing


def through_missing_type(Thing t):
    cdef void* p = <void*>t.ptr  # expect-typed: CYP000@20
    return <size_t>p


def untyped_parameter(x):
    # An untyped parameter is a Python object whatever the cimports: still an error.
    cdef void* p = <void*>x.ptr  # expect: CYP001@20
    return <size_t>p


def local_object(t):
    # A local whose type may depend on the missing declarations: not verified.
    y = t.child
    cdef void* p = <void*>y.ptr  # expect: CYP001@20
    return <size_t>p
