/* The strict loader's answer, built in C from libyaml's own parse events.
 *
 * Why: the strict loader (pipeline/read/strict_yaml.py) already parses with libyaml, through
 * PyYAML's CSafeLoader; most of its time goes to what PyYAML builds around libyaml's events: a
 * Node and two Mark objects per value, a Python resolve() call per scalar, then our Python
 * builder's walk. This module reads the same events from the same library and builds the dicts,
 * lists, str and None directly. Scanning, escapes, folding, block scalars and every syntax error are
 * libyaml's, so they are the strict loader's by construction (bind() below runs the very libyaml
 * PyYAML runs); what is copied here is only the strict loader's composition, which is small:
 *
 *   - a scalar is its text, except a plain, untagged "", "~", "null", "Null" or "NULL": None;
 *   - sequences are lists, mappings dicts in document order.
 *
 * The libyaml is PyYAML's own copy, the code CSafeLoader runs (PyYAML's wheels link it into
 * yaml/_yaml*.so and export its symbols; the version on the system may differ: Debian 12 has 0.2.5,
 * PyYAML 6.0.4 bundles 0.2.6, which parses explicit keys in flow sequences differently). bind() finds
 * the functions in that already loaded module; only libyaml's header is needed to build this one, and
 * the structs it describes are the same in 0.2.5 and 0.2.6.
 *
 * Everything the strict loader refuses or treats specially is declined instead, so that its
 * message and position are the ones a person sees: any parse error, an anchor, an alias, a tag
 * (even "!"), a %YAML or %TAG directive, a key that is not text (null, a list, a mapping), a
 * duplicate key, more than one document, a top level that is not a mapping, and nesting of more
 * than MAX_DEPTH collections (the strict loader's own limit).
 *
 * load(data: bytes) -> dict | str
 *   data  the frontmatter block as UTF-8 (what CSafeLoader is given for a str)
 *   a dict: the strict loader's answer; a str: why this module declines (for tests and benchmarks).
 * bind(path: str) -> str: use the libyaml in the loaded module at path (PyYAML's yaml._yaml); its
 *   version. Raises OSError when a function is missing or its version is not the header's 0.2.x.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <string.h>
#include <yaml.h>

static int (*parser_initialize)(yaml_parser_t *);
static void (*parser_set_input_string)(yaml_parser_t *, const unsigned char *, size_t);
static int (*parser_parse)(yaml_parser_t *, yaml_event_t *);
static void (*event_delete)(yaml_event_t *);
static void (*parser_delete)(yaml_parser_t *);

/* libyaml 0.2.x: the structs this module reads (yaml_parser_t, yaml_event_t) are the same in every
 * 0.2 release (include/yaml.h from 0.2.1 to 0.2.6 changes no struct: const qualifiers, one new function). */
#define ABI_MAJOR 0
#define ABI_MINOR 2

#define MAX_DEPTH 64 /* strict_yaml.MAX_DEPTH: collections nested deeper are refused there */

typedef struct {
    PyObject *container; /* a list or a dict */
    PyObject *key;       /* in a dict: the key waiting for its value, else NULL */
} Frame;

typedef struct {
    Frame frames[MAX_DEPTH];
    int depth;
    PyObject *root;
    const char *declined; /* set when the answer is left to the strict loader */
} Builder;

static int is_null_text(const unsigned char *s, size_t n) {
    switch (n) {
    case 0:
        return 1;
    case 1:
        return s[0] == '~';
    case 4:
        return memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 || memcmp(s, "NULL", 4) == 0;
    default:
        return 0;
    }
}

/* Put a finished value into the open collection (or make it the root). 0 on success, -1 on a
 * Python error, 1 when declined. Steals the reference to value. */
static int add(Builder *b, PyObject *value) {
    if (b->depth == 0) {
        b->root = value;
        return 0;
    }
    Frame *top = &b->frames[b->depth - 1];
    if (PyList_CheckExact(top->container)) {
        int rc = PyList_Append(top->container, value);
        Py_DECREF(value);
        return rc;
    }
    if (top->key == NULL) { /* value is a key */
        if (!PyUnicode_CheckExact(value)) {
            Py_DECREF(value);
            b->declined = "a mapping key that is not text (null, a list or a mapping)";
            return 1;
        }
        int present = PyDict_Contains(top->container, value);
        if (present != 0) {
            Py_DECREF(value);
            if (present < 0) {
                return -1;
            }
            b->declined = "a duplicate key";
            return 1;
        }
        top->key = value;
        return 0;
    }
    int rc = PyDict_SetItem(top->container, top->key, value);
    Py_DECREF(value);
    Py_CLEAR(top->key);
    return rc;
}

static PyObject *scalar(Builder *b, const yaml_event_t *ev) {
    const unsigned char *text = ev->data.scalar.value;
    size_t length = ev->data.scalar.length;
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && ev->data.scalar.plain_implicit &&
        is_null_text(text, length)) {
        Py_RETURN_NONE;
    }
    PyObject *value = PyUnicode_DecodeUTF8((const char *)text, (Py_ssize_t)length, "strict");
    if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        b->declined = "a scalar that is not valid UTF-8";
    }
    return value;
}

/* One event: 0 to go on, -1 on a Python error, 1 when declined, 2 at the end of the stream. */
static int step(Builder *b, const yaml_event_t *ev, int *documents) {
    PyObject *value;
    switch (ev->type) {
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_END_EVENT:
        return 0;
    case YAML_STREAM_END_EVENT:
        return 2;
    case YAML_DOCUMENT_START_EVENT:
        if (++*documents > 1) {
            b->declined = "more than one document";
            return 1;
        }
        if (ev->data.document_start.version_directive != NULL ||
            ev->data.document_start.tag_directives.start != ev->data.document_start.tag_directives.end) {
            b->declined = "a %YAML or %TAG directive";
            return 1;
        }
        return 0;
    case YAML_ALIAS_EVENT:
        b->declined = "an alias";
        return 1;
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor != NULL || ev->data.scalar.tag != NULL) {
            b->declined = "an anchor or a tag";
            return 1;
        }
        value = scalar(b, ev);
        if (value == NULL) {
            return b->declined ? 1 : -1;
        }
        return add(b, value);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int mapping = ev->type == YAML_MAPPING_START_EVENT;
        const yaml_char_t *anchor = mapping ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        const yaml_char_t *tag = mapping ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
        if (anchor != NULL || tag != NULL) {
            b->declined = "an anchor or a tag";
            return 1;
        }
        if (b->depth == MAX_DEPTH) {
            b->declined = "nesting deeper than MAX_DEPTH";
            return 1;
        }
        if (b->depth > 0) {
            Frame *top = &b->frames[b->depth - 1];
            if (PyDict_CheckExact(top->container) && top->key == NULL) {
                b->declined = "a mapping key that is not text (null, a list or a mapping)";
                return 1;
            }
        }
        PyObject *container = mapping ? PyDict_New() : PyList_New(0);
        if (container == NULL) {
            return -1;
        }
        b->frames[b->depth].container = container;
        b->frames[b->depth].key = NULL;
        b->depth++;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        if (b->depth == 0) { /* libyaml balances its events; never trust that with memory */
            b->declined = "an unexpected parse event";
            return 1;
        }
        Frame *top = &b->frames[--b->depth];
        value = top->container;
        top->container = NULL;
        Py_CLEAR(top->key); /* libyaml always pairs keys with values; kept for safety */
        return add(b, value);
    }
    default:
        b->declined = "an unexpected parse event";
        return 1;
    }
}

static void release(Builder *b) {
    while (b->depth > 0) {
        Frame *top = &b->frames[--b->depth];
        Py_CLEAR(top->container);
        Py_CLEAR(top->key);
    }
    Py_CLEAR(b->root);
}

static PyObject *load(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "load() takes bytes");
        return NULL;
    }
    if (parser_parse == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "load() before bind()");
        return NULL;
    }
    yaml_parser_t parser;
    if (!parser_initialize(&parser)) {
        return PyErr_NoMemory();
    }
    parser_set_input_string(&parser, (const unsigned char *)PyBytes_AS_STRING(arg),
                                 (size_t)PyBytes_GET_SIZE(arg));
    Builder b;
    b.depth = 0;
    b.root = NULL;
    b.declined = NULL;
    int documents = 0;
    int rc = 0;
    while (rc == 0) {
        yaml_event_t ev;
        if (!parser_parse(&parser, &ev)) {
            b.declined = "a YAML error (the strict loader says where)";
            rc = 1;
            break;
        }
        rc = step(&b, &ev, &documents);
        event_delete(&ev);
    }
    parser_delete(&parser);
    if (rc < 0) {
        release(&b);
        return NULL;
    }
    if (rc == 2 && b.root != NULL && !PyDict_CheckExact(b.root)) {
        b.declined = "a top level that is not a mapping";
    } else if (rc == 2 && b.root == NULL) {
        b.declined = "an empty document";
    }
    if (b.declined != NULL) {
        release(&b);
        return PyUnicode_FromString(b.declined);
    }
    return b.root;
}

static void *symbol(void *handle, const char *name, int *missing) {
    void *found = dlsym(handle, name);
    if (found == NULL) {
        *missing = 1;
    }
    return found;
}

static PyObject *bind(PyObject *module, PyObject *arg) {
    (void)module;
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL) {
        return NULL;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD); /* the copy Python already loaded */
    if (handle == NULL) {
        PyErr_Format(PyExc_OSError, "%s is not loaded", path);
        return NULL;
    }
    int missing = 0;
    void *init = symbol(handle, "yaml_parser_initialize", &missing);
    void *input = symbol(handle, "yaml_parser_set_input_string", &missing);
    void *parse = symbol(handle, "yaml_parser_parse", &missing);
    void *free_event = symbol(handle, "yaml_event_delete", &missing);
    void *free_parser = symbol(handle, "yaml_parser_delete", &missing);
    void *numbers = symbol(handle, "yaml_get_version", &missing);
    void *text = symbol(handle, "yaml_get_version_string", &missing);
    dlclose(handle); /* the module stays loaded: Python holds its own handle */
    if (missing) {
        PyErr_Format(PyExc_OSError, "%s does not export libyaml's functions", path);
        return NULL;
    }
    int major, minor, patch;
    ((void (*)(int *, int *, int *))numbers)(&major, &minor, &patch);
    if (major != ABI_MAJOR || minor != ABI_MINOR) {
        PyErr_Format(PyExc_OSError, "libyaml %d.%d.%d in %s, built for %d.%d.x", major, minor, patch, path,
                     ABI_MAJOR, ABI_MINOR);
        return NULL;
    }
    parser_initialize = (int (*)(yaml_parser_t *))init;
    parser_set_input_string = (void (*)(yaml_parser_t *, const unsigned char *, size_t))input;
    event_delete = (void (*)(yaml_event_t *))free_event;
    parser_delete = (void (*)(yaml_parser_t *))free_parser;
    parser_parse = (int (*)(yaml_parser_t *, yaml_event_t *))parse; /* last: load() checks it */
    return PyUnicode_FromString(((const char *(*)(void))text)());
}

static PyMethodDef methods[] = {
    {"load", load, METH_O, "The strict loader's dict for this UTF-8 frontmatter, or why not (a str)."},
    {"bind", bind, METH_O, "Use the libyaml in the loaded module at this path (PyYAML's yaml._yaml)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_frontmatter_yaml", NULL, -1, methods};

PyMODINIT_FUNC PyInit__frontmatter_yaml(void) { return PyModule_Create(&module_def); }
