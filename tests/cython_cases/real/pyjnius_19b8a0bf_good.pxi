# Fixed: long long is 64 bits everywhere, like jlong.
def make_invocation_handler(callback, new_handler):
    Py_INCREF(callback)
    return new_handler(<long long><void*>callback)
