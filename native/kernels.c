/* Block dequantization and dequant-matmul kernels (skeleton: SIMD level report only). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *simd_level(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    return PyUnicode_FromString("scalar");
}

static PyMethodDef methods[] = {
    {"simd_level", simd_level, METH_NOARGS, "The SIMD path the kernels use on this CPU."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
