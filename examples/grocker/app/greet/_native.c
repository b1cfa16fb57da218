/* The app's C extension: one function, compiled into the wheel in the
 * compiler builder, imported in a runtime that has no compiler. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *greeting(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return PyUnicode_FromString("hello from a C extension");
}

static PyMethodDef methods[] = {
    {"greeting", greeting, METH_NOARGS, "The greeting, made in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "greet._native", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
