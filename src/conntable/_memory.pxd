# Large arrays on transparent huge pages.
#
# Invariant: every array of the table comes from ``big_alloc`` and goes back
# through ``big_free``; arrays of 2 MiB or more are 2 MiB-aligned and advised
# MADV_HUGEPAGE, smaller ones are plain malloc.
#
# Why: at a million connections the index and the slab span tens of MiB, so
# with 4 KiB pages nearly every ``touch`` misses the TLB as well as the cache
# and pays a page walk. With 2 MiB pages the walk disappears; measured on
# this project's machine it is the larger part of the cost of a touch at 1M
# entries. Where the kernel has THP off, madvise fails harmlessly and the
# arrays are ordinary memory.
#
# Trade-off: up to 2 MiB of slack per large array, and no realloc (growth
# copies, which the table does at doubling anyway).

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
        if (n < CT_HUGE) return malloc(n ? n : 1);
        if (posix_memalign(&p, CT_HUGE, n) != 0) return NULL;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        (void)madvise(p, n, MADV_HUGEPAGE);
    #endif
        return p;
    }

    /* Resize keeping the first ``keep`` bytes; NULL (and ``p`` untouched) when out of memory. */
    static void *ct_big_resize(void *p, size_t keep, size_t n) {
        void *q = ct_big_alloc(n);
        if (q == NULL) return NULL;
        if (p != NULL) memcpy(q, p, keep < n ? keep : n);
        free(p);
        return q;
    }
    """
    void *big_alloc "ct_big_alloc"(size_t n) noexcept nogil
    void *big_resize "ct_big_resize"(void *p, size_t keep, size_t n) noexcept nogil
    void big_free "free"(void *p) noexcept nogil
