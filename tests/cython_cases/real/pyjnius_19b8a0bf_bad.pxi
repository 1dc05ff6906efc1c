# The Python callback object is handed to Java as a 64-bit jlong through `long`,
# 32 bits on 64-bit Windows: callbacks crashed there.
def make_invocation_handler(callback, new_handler):
    Py_INCREF(callback)
    return new_handler(<long><void*>callback)  # expect: CYP010@24
