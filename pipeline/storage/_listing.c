/* One folder's listing in C: readdir and one lstat (fstatat) per entry, the plain files returned as
 * Arrow buffers (no Python object per file).
 *
 * Why: listing a seeds folder is one stat per file on every run, and in Python the loop around it
 * (DirEntry objects, attribute calls, list appends) costs about as much again as the system calls.
 * This module does only the plain case; every entry it is not sure of goes back to Python
 * (pipeline/read/discover.py), which decides it exactly as before. discover.py falls back to its own
 * loop when this module is not built; tests/test_discover_c.py checks that both agree.
 *
 * scan(folder: bytes, prefix: bytes, suffixes: tuple[bytes, ...] | None)
 *   -> (count, offsets, data, sizes, mtimes, folders, odd)
 *
 *   folder   the folder's OS path; prefix: the '/'-terminated path of the folder relative to the seeds
 *            root (UTF-8, no backslash: the caller checks), prepended to every plain file's name
 *   suffixes the name patterns when each is '*' + literal text (so "matches" is "ends with"), else None
 *   count, offsets (int32), data  the plain files' relative paths as an Arrow string array's buffers
 *   sizes, mtimes (int64 ns)      their sizes and modification times, as Arrow int64 buffers
 *   folders  names (bytes) of sub-folders (d_type DT_DIR, or an lstat that says so)
 *   odd      names (bytes) of everything else that is not hidden and may match, for Python to match
 *            and decide: links, non-regular files, failed lstats, times beyond int64 nanoseconds,
 *            names that are not valid UTF-8 or hold a backslash.
 *
 * Plain: a regular file (lstat, so a link is never plain) whose name is valid UTF-8 without a
 * backslash, that ends with one of the suffixes (any name when suffixes is None: the caller then
 * matches the names itself), and whose mtime fits. Hidden entries (a leading '.') are skipped,
 * as the Python loop skips them. Errors opening or reading the folder raise OSError with its errno.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *buf;
    size_t len, cap;
} Buf;

static int buf_add(Buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *grown = PyMem_Realloc(b->buf, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, src, n);
    b->len += n;
    return 0;
}

/* Strict UTF-8 as Python's decoder has it: no overlongs, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return 0;
        }
        if (i + need >= n) return 0; /* the sequence runs past the end */
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        }
        i += need + 1;
    }
    return 1;
}

static int ends_with_any(const char *name, size_t n, PyObject *suffixes) {
    Py_ssize_t count = PyTuple_GET_SIZE(suffixes);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *suffix = PyTuple_GET_ITEM(suffixes, k);
        Py_ssize_t m = PyBytes_GET_SIZE(suffix);
        if ((size_t)m <= n && memcmp(name + n - m, PyBytes_AS_STRING(suffix), (size_t)m) == 0) {
            return 1;
        }
    }
    return 0;
}

static int append_name(PyObject *list, const char *name, size_t n) {
    PyObject *item = PyBytes_FromStringAndSize(name, (Py_ssize_t)n);
    if (item == NULL) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *scan(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *folder;
    Py_buffer prefix;
    PyObject *suffixes;
    if (!PyArg_ParseTuple(args, "yy*O", &folder, &prefix, &suffixes)) return NULL;
    if (suffixes != Py_None) {
        if (!PyTuple_Check(suffixes)) {
            PyBuffer_Release(&prefix);
            PyErr_SetString(PyExc_TypeError, "suffixes must be a tuple of bytes or None");
            return NULL;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(suffixes); k++) {
            if (!PyBytes_Check(PyTuple_GET_ITEM(suffixes, k))) {
                PyBuffer_Release(&prefix);
                PyErr_SetString(PyExc_TypeError, "suffixes must be a tuple of bytes or None");
                return NULL;
            }
        }
    }
    Buf offsets = {0}, data = {0}, sizes = {0}, mtimes = {0};
    PyObject *folders = PyList_New(0), *odd = PyList_New(0), *result = NULL;
    DIR *dir = NULL;
    int saved = 0;
    int64_t count = 0;
    int32_t zero = 0;
    if (folders == NULL || odd == NULL || buf_add(&offsets, &zero, sizeof zero) < 0) goto done;

    int fd;
    Py_BEGIN_ALLOW_THREADS
    fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    saved = errno;
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        errno = saved;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, folder);
        goto done;
    }
    dir = fdopendir(fd);
    if (dir == NULL) {
        saved = errno;
        close(fd);
        errno = saved;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, folder);
        goto done;
    }
    for (;;) {
        struct dirent *e;
        /* Other threads of the run (Prefect's, the progress bar) go on during the system calls. */
        Py_BEGIN_ALLOW_THREADS
        errno = 0;
        e = readdir(dir);
        saved = errno;
        Py_END_ALLOW_THREADS
        if (e == NULL) {
            if (saved != 0) {
                errno = saved;
                PyErr_SetFromErrnoWithFilename(PyExc_OSError, folder);
                goto done;
            }
            break;
        }
        const char *name = e->d_name;
        if (name[0] == '.') continue; /* hidden, and '.' and '..' */
        size_t n = strlen(name);
        struct stat st;
        int have_stat = 0;
        int is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
            Py_BEGIN_ALLOW_THREADS
            have_stat = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
            Py_END_ALLOW_THREADS
            is_dir = have_stat && S_ISDIR(st.st_mode);
        }
        if (is_dir) {
            if (append_name(folders, name, n) < 0) goto done;
            continue;
        }
        if (memchr(name, '\\', n) != NULL || !valid_utf8((const unsigned char *)name, n)) {
            if (append_name(odd, name, n) < 0) goto done;
            continue;
        }
        if (suffixes != Py_None && !ends_with_any(name, n, suffixes)) continue;
        if (!have_stat) {
            Py_BEGIN_ALLOW_THREADS
            have_stat = fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
            Py_END_ALLOW_THREADS
        }
        int64_t ns;
        if (!have_stat || !S_ISREG(st.st_mode) ||
            __builtin_mul_overflow((int64_t)st.st_mtim.tv_sec, (int64_t)1000000000, &ns) ||
            __builtin_add_overflow(ns, (int64_t)st.st_mtim.tv_nsec, &ns)) {
            if (append_name(odd, name, n) < 0) goto done;
            continue;
        }
        if (data.len + prefix.len + n > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "folder listing exceeds 2 GiB of names");
            goto done;
        }
        int64_t size = (int64_t)st.st_size;
        if (buf_add(&data, prefix.buf, (size_t)prefix.len) < 0 || buf_add(&data, name, n) < 0) goto done;
        int32_t end = (int32_t)data.len;
        if (buf_add(&offsets, &end, sizeof end) < 0 || buf_add(&sizes, &size, sizeof size) < 0 ||
            buf_add(&mtimes, &ns, sizeof ns) < 0)
            goto done;
        count++;
    }
    result = Py_BuildValue("(Ly#y#y#y#OO)", (long long)count, offsets.buf, (Py_ssize_t)offsets.len,
                           data.buf ? data.buf : "", (Py_ssize_t)data.len, sizes.buf ? sizes.buf : "",
                           (Py_ssize_t)sizes.len, mtimes.buf ? mtimes.buf : "", (Py_ssize_t)mtimes.len,
                           folders, odd);
done:
    if (dir != NULL) closedir(dir);
    PyBuffer_Release(&prefix);
    PyMem_Free(offsets.buf);
    PyMem_Free(data.buf);
    PyMem_Free(sizes.buf);
    PyMem_Free(mtimes.buf);
    Py_XDECREF(folders);
    Py_XDECREF(odd);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "One folder's plain files as Arrow buffers; sub-folders and odd entries as names."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_listing", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__listing(void) { return PyModule_Create(&module); }
