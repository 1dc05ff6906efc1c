# CuPy c8cb5883, fixed: the int is converted to an address first.
from libc.stdint cimport intptr_t

cdef extern from *:
    """
    static void *plan_area;
    static void plan_set_work_area(void *p) { plan_area = p; }
    """
    void plan_set_work_area(void* p)


def allocate(n):
    return None


def setup_plan(Py_ssize_t size):
    area = allocate(size)
    plan_set_work_area(<void*><intptr_t>area.ptr)
    return area
