/* A log callback for llama.cpp that never enters Python, and can hold a load before it maps the file.
 *
 * A Python callback needs the GIL for every line llama.cpp logs while it loads a model, so any
 * Python thread running beside the load (a packed file's decoder and the thread waiting for it)
 * would stall it.
 *
 * The hold: llama.cpp logs "loading model tensors" just before it maps the model file with
 * MAP_POPULATE. Mapping a memory file whose pages are not written yet makes the loading thread
 * create (and zero) every missing page itself, on the critical path, while the decoder then writes
 * them again. Waiting at that line until the decoder is done lets the mapping find every page in
 * place. The hold only moves the wait earlier: whoever loads must still wait for the data before
 * llama.cpp reads it (its load-progress callback), because nothing here depends on the line's text
 * staying the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define LEVEL_ERROR 4  /* ggml.h: ... INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line) */
#define LEVEL_CONT 5
#define HOLD_LINE "loading model tensors"

static int last_level, print_all;
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_open = PTHREAD_COND_INITIALIZER;
static int held;

static void log_line(int level, const char *text, void *user_data) {
    (void)user_data;
    if (!text) return;
    if (level != LEVEL_CONT) last_level = level;
    if (print_all || last_level == LEVEL_ERROR) fputs(text, stderr);
    if (strstr(text, HOLD_LINE)) {
        pthread_mutex_lock(&hold_lock);
        while (held) pthread_cond_wait(&hold_open, &hold_lock);
        pthread_mutex_unlock(&hold_lock);
    }
}

static void set_held(int value) {
    pthread_mutex_lock(&hold_lock);
    held = value;
    pthread_cond_broadcast(&hold_open);
    pthread_mutex_unlock(&hold_lock);
}

static PyObject *py_callback_address(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyLong_FromVoidPtr((void *)log_line);
}

static PyObject *py_print_all(PyObject *self, PyObject *arg) {
    (void)self;
    int v = PyObject_IsTrue(arg);
    if (v < 0) return NULL;
    print_all = v;
    Py_RETURN_NONE;
}

static PyObject *py_hold(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    set_held(1);
    Py_RETURN_NONE;
}

static PyObject *py_release(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    Py_BEGIN_ALLOW_THREADS
    set_held(0);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"callback_address", py_callback_address, METH_NOARGS,
     "Address of the C ggml_log_callback (for llama_log_set)."},
    {"print_all", py_print_all, METH_O, "print_all(flag): every line to stderr, or errors only."},
    {"hold", py_hold, METH_NOARGS, "Make the next load wait at its tensor-loading line until release()."},
    {"release", py_release, METH_NOARGS, "Let a held load go on (and any later one)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_llama_log",
                                    "llama.cpp's log, in C, with a hold before the model is mapped.", -1, methods};

PyMODINIT_FUNC PyInit__llama_log(void) { return PyModule_Create(&module); }
