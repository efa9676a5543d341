# Large arrays on transparent huge pages.
#
# Invariant: every array of the table comes from ``big_alloc`` (or
# ``big_calloc``) and goes back through ``big_free`` with the size it was
# allocated with: the size decides the allocator. Arrays of 2 MiB or more
# are 2 MiB-aligned (posix_memalign) and advised MADV_HUGEPAGE; smaller ones
# come from ``PyMem_RawMalloc``, so that CPython's allocator hooks (tracing,
# debug hooks, ``_testcapi.set_nomemory`` in the allocation-failure tests)
# see them.
#
# Why: at a million connections the index and the slab span tens of MiB, so
# with 4 KiB pages nearly every ``touch`` misses the TLB as well as the cache
# and pays a page walk. With 2 MiB pages the walk disappears; measured on
# this project's machine it is the larger part of the cost of a touch at 1M
# entries. Where the kernel has THP off, madvise fails harmlessly and the
# arrays are ordinary memory.
#
# Trade-off: up to 2 MiB of slack per large array, and no realloc (growth
# copies, which the table does at doubling anyway). Every caller must know
# the size of what it frees; the table keeps it next to each pointer.

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #define CT_HUGE ((size_t)2 << 20)

    static void *ct_big_alloc(size_t n) {
        void *p = NULL;
        if (n < CT_HUGE) return PyMem_RawMalloc(n ? n : 1);
    #if defined(_WIN32)
        p = malloc(n);  /* no posix_memalign, nor huge pages; ct_big_free's free() stays right */
    #else
        if (posix_memalign(&p, CT_HUGE, n) != 0) return NULL;
    #endif
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        (void)madvise(p, n, MADV_HUGEPAGE);
    #endif
        return p;
    }

    static void *ct_big_calloc(size_t n) {
        void *p = ct_big_alloc(n);
        if (p != NULL) memset(p, 0, n);
        return p;
    }

    /* ``n`` must be the size ``p`` was allocated with. */
    static void ct_big_free(void *p, size_t n) {
        if (p == NULL) return;
        if (n < CT_HUGE) PyMem_RawFree(p);
        else free(p);
    }

    /* Resize from ``old`` to ``n`` bytes keeping the first ``keep`` (<= both);
       NULL (and ``p`` untouched) when out of memory. */
    static void *ct_big_resize(void *p, size_t old, size_t keep, size_t n) {
        void *q = ct_big_alloc(n);
        if (q == NULL) return NULL;
        if (p != NULL) memcpy(q, p, keep);
        ct_big_free(p, old);
        return q;
    }
    """
    void *big_alloc "ct_big_alloc"(size_t n) noexcept nogil
    void *big_calloc "ct_big_calloc"(size_t n) noexcept nogil
    void big_free "ct_big_free"(void *p, size_t n) noexcept nogil
    void *big_resize "ct_big_resize"(void *p, size_t old, size_t keep, size_t n) noexcept nogil
