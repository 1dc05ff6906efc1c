# CuPy c8cb5883 (cupy/cuda/cufft.pyx): the work area comes from a Python-level
# allocator, so `area.ptr` is a Python int and <void*> gives the int object's address.
cdef extern from *:
    """
    static void *plan_area;
    static void plan_set_work_area(void *p) { plan_area = p; }
    """
    void plan_set_work_area(void* p)


def allocate(n):
    return None      # an allocator whose result has an int .ptr


def setup_plan(Py_ssize_t size):
    area = allocate(size)
    plan_set_work_area(<void*>area.ptr)  # expect: CYP001@24
    return area
