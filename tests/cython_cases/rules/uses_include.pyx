# Findings inside an included .pxi are reported in the .pxi.
include "included_helpers.pxi"


def call(buf):
    return helper(buf)
