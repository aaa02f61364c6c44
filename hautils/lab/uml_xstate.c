/*
 * uml_xstate.so -- lets Debian bookworm's User-Mode Linux (6.1) run on hosts with AMX.
 *
 * UML saves and restores its guests' FPU state with ptrace(PTRACE_{GET,SET}REGSET,
 * NT_X86_XSTATE) through a buffer of a size fixed at build time (2696 bytes: x87, SSE,
 * AVX, MPX, AVX-512, PKRU).  The host kernel returns a shorter copy on GET, but accepts a
 * SET only if the buffer is exactly its own XSAVE size, which AMX (8 KiB of tile data)
 * makes larger: every SET fails with EFAULT and the guest's init dies at once
 * ("userspace - ptrace set fp regs failed, errno = 14", then "Attempted to kill init!").
 * Linux 6.13 fixed this in UML itself ("um: switch to regset API and depend on XSTATE").
 *
 * Preloaded into the UML process (LD_PRELOAD), this wrapper passes every ptrace call
 * through, except a SET of XSTATE with a short buffer: it copies the caller's bytes into
 * a buffer of the host's size, zeroes the rest and clears, in the XSAVE header, the bits
 * of every component that did not fit (the guests never asked for AMX, so that state is
 * empty anyway).  Everything UML's buffer holds, AVX-512 included, is restored exactly.
 * On a host whose XSAVE area fits UML's buffer nothing changes.
 *
 * Part of HA Lab Book (hautils); GPL-3.0-or-later.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(int, pid_t, void *, void *);
static ptrace_fn real_ptrace;
static size_t host_size;              /* the host's XSAVE size for ptrace (standard format) */
static unsigned char full[1 << 16];   /* UML calls ptrace from one thread at a time */
static size_t keep_len;               /* the caller's buffer size keep_bits was computed for */
static uint64_t keep_bits;

/* XSTATE_BV bits of the components that lie wholly inside the first len bytes. */
static uint64_t fitting_components(size_t len)
{
    uint64_t keep = 0x3;  /* x87 and SSE: the legacy area, always there */
    for (unsigned i = 2; i < 64; i++) {
        unsigned eax, ebx, ecx, edx;
        __cpuid_count(0xd, i, eax, ebx, ecx, edx);
        /* eax: size, ebx: offset in the standard format (0 for supervisor components) */
        if (eax && ebx && (size_t)ebx + eax <= len)
            keep |= 1ULL << i;
    }
    return keep;
}

long ptrace(enum __ptrace_request req, ...)
{
    va_list ap;
    va_start(ap, req);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if (!real_ptrace)
        real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    if (req != PTRACE_SETREGSET || (uintptr_t)addr != NT_X86_XSTATE || data == NULL)
        return real_ptrace(req, pid, addr, data);

    struct iovec *iov = data;
    if (!host_size) {
        struct iovec probe = { full, sizeof full };
        if (real_ptrace(PTRACE_GETREGSET, pid, addr, &probe) < 0)
            return -1;
        host_size = probe.iov_len;
    }
    if (iov->iov_len >= host_size || iov->iov_len < 576)
        return real_ptrace(req, pid, addr, data);
    memcpy(full, iov->iov_base, iov->iov_len);
    memset(full + iov->iov_len, 0, host_size - iov->iov_len);
    uint64_t bv;
    memcpy(&bv, full + 512, sizeof bv);      /* XSAVE header: XSTATE_BV */
    if (keep_len != iov->iov_len) {
        keep_bits = fitting_components(iov->iov_len);
        keep_len = iov->iov_len;
    }
    bv &= keep_bits;
    memcpy(full + 512, &bv, sizeof bv);
    memset(full + 520, 0, 8);                /* XCOMP_BV: 0 = standard format */
    struct iovec whole = { full, host_size };
    return real_ptrace(req, pid, addr, &whole);
}
